"""Text helpers on Arrow: each agrees with the plain Python definition."""

import os
import re
import string

import pandas as pd
import pyarrow as pa

from feedback_loop.lib import text
from feedback_loop.lib.text import lowered_words, matches, text_length


def test_matches_scans_in_slices_on_threads_with_the_same_answer(monkeypatch):
    values = [f"row {i} " + ("call 555-0100" if i % 7 == 0 else "nothing") for i in range(1_000)]
    expected = [bool(re.search(r"\d{3}-\d{4}", v)) for v in values]
    monkeypatch.setattr(text, "SLICE_ROWS", 64)
    assert matches(pa.array(values), r"\d{3}-\d{4}").tolist() == expected
    assert matches(pa.chunked_array([values[:500], values[500:]]), r"\d{3}-\d{4}").tolist() == expected
    # Fewer rows than a slice, but enough to scan a slice per core (odd: the last slice is short).
    monkeypatch.setattr(text, "SLICE_ROWS", 100_000)
    monkeypatch.setattr(text, "PARALLEL_MIN_ROWS", 10)
    slices = []
    real = text.in_chunks
    monkeypatch.setattr(text, "in_chunks", lambda values, compute, rows: slices.append(rows) or real(values, compute, rows=rows))
    assert matches(pa.array(values[:999]), r"\d{3}-\d{4}").tolist() == expected[:999]
    assert slices == [-(-999 // (os.cpu_count() or 1))]


def test_text_length_counts_characters_and_keeps_missing():
    assert text_length(pd.Series(["héllo", "", None], dtype="string")).tolist() == [5, 0, pd.NA]


def test_lowered_words_are_str_split_words_whichever_kernels_tokenize_the_row():
    """Plain ASCII rows go through Arrow's ASCII kernels, the others (non-ASCII, or the separators
    0x1C-0x1F that only Unicode and `str.split` take for white space) through the Unicode ones: the
    words are `str.lower().split()`'s, trimmed, each row's contiguous and in order."""
    punctuation = string.punctuation + "\u2019\u00bf"
    texts = pd.Series(["Hello, World!", "¿Qué TAL? l’été", None, "a\x1cb  c.", "", "It's   (fine)", "don’t’"], dtype="string")
    owner, words = lowered_words(texts, punctuation)
    expected = {row: [w.strip(punctuation) for w in (text if isinstance(text, str) else "").lower().split()] for row, text in enumerate(texts.tolist())}
    got: dict[int, list[str]] = {}
    for row, word in zip(owner.tolist(), words.to_pylist(), strict=True):
        if word:  # empty words are kept (an empty text is one): callers drop them
            got.setdefault(row, []).append(word)
    assert got == {row: [w for w in ws if w] for row, ws in expected.items() if any(ws)}
    assert list(dict.fromkeys(owner.tolist())) == [0, 2, 4, 5, 1, 3, 6]  # plain rows first, each row's words together
