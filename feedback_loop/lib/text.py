"""Text columns in Arrow: lower-casing, words, lengths, RE2 pattern matches and hashes."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.columns import large_text, one_array
from feedback_loop.lib.parallel import in_chunks


def lowered(values: pd.Series) -> pa.Array:
    """The column as lower-cased Arrow text (missing values as empty strings)."""
    return pc.utf8_lower(large_text(values.astype("string").fillna("")))


def lowered_words(texts: pd.Series, punctuation: str) -> tuple[np.ndarray, pa.Array]:
    """The words of each text: lower-cased, split on white space, trimmed of `punctuation`, with
    the row of each. Empty words are kept (an empty or missing text gives one). A row's words are
    contiguous and in order; plain ASCII rows come first.

    Rows of plain ASCII text (no byte that the ASCII kernels treat differently from the Unicode
    ones: non-ASCII, and the separators 0x1C-0x1F, white space to Unicode and `str.split` only) are
    tokenized by Arrow's ASCII kernels, ~2x faster, the others by the Unicode kernels."""
    values = one_array(large_text(texts.astype("string").fillna("")))
    plain = ~pc.match_substring_regex(values, NOT_PLAIN_ASCII).to_numpy(zero_copy_only=False).astype(bool)
    ascii_punctuation = "".join(c for c in punctuation if ord(c) < 128)
    owners, words = [np.zeros(0, dtype=np.int64)], [pa.array([], type=pa.large_string())]
    for rows, is_plain in ((np.flatnonzero(plain), True), (np.flatnonzero(~plain), False)):
        if not len(rows):
            continue
        part = values if len(rows) == len(values) else values.take(pa.array(rows))
        tokens = pc.ascii_split_whitespace(pc.ascii_lower(part)) if is_plain else pc.utf8_split_whitespace(pc.utf8_lower(part))
        owners.append(rows[pc.list_parent_indices(tokens).to_numpy()])
        flat = pc.list_flatten(tokens)
        words.append(pc.ascii_trim(flat, characters=ascii_punctuation) if is_plain else pc.utf8_trim(flat, characters=punctuation))
    return np.concatenate(owners), pa.concat_arrays(words)


NOT_PLAIN_ASCII = r"[^\x00-\x1b\x20-\x7f]"


def text_length(values: pd.Series) -> pd.Series:
    """Characters per text (missing stays missing), counted by Arrow."""
    return pd.Series(pc.utf8_length(large_text(values)), index=values.index, dtype="Int64")


def matches(text: pa.Array, pattern: str, ignore_case: bool = False) -> np.ndarray:
    """Whether each text contains a match of the RE2 `pattern`, scanned `in_chunks` of at most
    SLICE_ROWS, and in a slice per core at least from PARALLEL_MIN_ROWS (a block of 46,000 JSON
    lines of 1.4 KB is 64 MB to scan)."""

    def scan(part: pa.Array) -> np.ndarray:
        return pc.match_substring_regex(part, pattern, ignore_case=ignore_case).to_numpy(zero_copy_only=False).astype(bool)

    cores = os.cpu_count() or 1
    rows = SLICE_ROWS if len(text) < PARALLEL_MIN_ROWS else min(SLICE_ROWS, -(-len(text) // cores))
    return in_chunks(text, scan, rows=rows)


SLICE_ROWS = 100_000


PARALLEL_MIN_ROWS = 2_000


def hash64(texts: pd.Series) -> np.ndarray:
    """A 64-bit hash of each text (missing: of the empty text), computed by DuckDB."""
    return _per_text(texts, "hash(t)").to_numpy()


def sha256_hex(texts: pd.Series, digits: int = 64) -> pd.Series:
    """The first `digits` hex digits of each text's SHA-256 (UTF-8), computed by DuckDB."""
    return pd.Series(_per_text(texts, f"left(sha256(t), {int(digits)})"), index=texts.index, dtype="string")


def _per_text(texts: pd.Series, expression: str) -> pa.ChunkedArray:
    """DuckDB's `expression` of each text `t` (missing: the empty text), in order."""
    with duckdb.connect() as con:
        con.register("texts", pa.table({"t": large_text(texts.astype("string").fillna(""))}))
        return con.sql(f"SELECT {expression} AS h FROM texts").to_arrow_table()["h"]


def last_question(text: str) -> str | None:
    """The last sentence of a text that ends in "?" (from the end of the sentence before it), or None."""
    end = text.rfind("?")
    if end < 0:
        return None
    start = max(text.rfind(mark, 0, end) for mark in ".!?\n") + 1
    return text[start : end + 1]
