"""Near-duplicate prompts over word 3-gram shingles (see `words_of`).

`PromptIndex` (MinHash LSH, datasketch) finds near-duplicates among a growing set of prompts;
`near_duplicate_of` checks many prompts against a few reference prompts with the exact Jaccard.
"""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash, MinHashLSH
from scipy import sparse

from feedback_loop.lib.text import lowered

NUM_PERM = 128
PUNCTUATION = "".join(sorted(set(string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026")))


def words_of(text: str) -> list[str]:
    """Lower-cased words split on white space, punctuation trimmed from their ends."""
    return [w for w in (t.strip(PUNCTUATION) for t in text.lower().split()) if w]


def minhash(text: str) -> MinHash:
    words = words_of(text)
    shingles = {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))} if words else {""}
    m = MinHash(num_perm=NUM_PERM, seed=1)
    m.update_batch([s.encode() for s in shingles])
    return m


class PromptIndex:
    """An LSH index of prompts: `add` keys, `near` returns the keys whose prompt is a near-duplicate."""

    def __init__(self, threshold: float) -> None:
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.threshold = threshold
        self.hashes: dict[str, MinHash] = {}

    def add(self, key: str, text: str) -> None:
        if key in self.hashes:
            return
        m = minhash(text)
        self.hashes[key] = m
        self.lsh.insert(key, m)

    def near(self, text: str) -> list[str]:
        """Keys of near-duplicates: LSH candidates whose estimated Jaccard similarity passes the threshold."""
        m = minhash(text)
        return sorted(k for k in self.lsh.query(m) if self.hashes[k].jaccard(m) >= self.threshold)


CHUNK = 50_000


def near_duplicate_of(texts: pd.Series, references: list[str], threshold: float) -> np.ndarray:
    """Whether each text's word 3-gram set has Jaccard similarity >= threshold with any reference's.

    Exact (no MinHash estimate) and vectorized: with A (texts x shingles) and B (references x
    shingles) as sparse 0/1 matrices, A Bᵀ counts the shingles each pair shares; texts are taken in
    chunks so memory stays bounded.
    """
    n = len(texts)
    if not n or not references:
        return np.zeros(n, dtype=bool)
    doc, key = _shingle_keys(pd.concat([texts.astype("string"), pd.Series(references, dtype="string")], ignore_index=True))
    column, _ = pd.factorize(key)
    sizes = np.bincount(doc, minlength=n + len(references)).astype(np.float64)
    width = int(column.max()) + 1 if len(column) else 1
    is_ref = doc >= n
    b = sparse.csr_matrix((np.ones(is_ref.sum(), dtype=np.float32), (doc[is_ref] - n, column[is_ref])), shape=(len(references), width))
    text_doc, text_column = doc[~is_ref], column[~is_ref]
    out = np.zeros(n, dtype=bool)
    for start in range(0, n, CHUNK):
        rows = (text_doc >= start) & (text_doc < start + CHUNK)
        a = sparse.csr_matrix((np.ones(rows.sum(), dtype=np.float32), (text_doc[rows] - start, text_column[rows])), shape=(min(CHUNK, n - start), width))
        shared = (a @ b.T).tocoo()
        union = sizes[shared.row + start] + sizes[n + shared.col] - shared.data
        out[start + shared.row[shared.data >= threshold * union]] = True
    return out


def _shingle_keys(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(document, shingle hash) pairs, unique per document, for the word 3-grams of `words`."""
    tokens = pc.utf8_split_whitespace(lowered(texts))
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    doc = pc.list_parent_indices(tokens).to_numpy().astype(np.int64)
    flat = pc.utf8_trim(pc.list_flatten(tokens), characters=PUNCTUATION)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    doc = doc[keep]
    encoded = pc.dictionary_encode(flat.filter(pa.array(keep)))
    word = encoded.indices.to_numpy().astype(np.uint64) + np.uint64(1)
    n = len(word)
    with np.errstate(over="ignore"):
        mixed = word * np.uint64(0x9E3779B97F4A7C15)
        key = mixed.copy()
        key[:-1] ^= mixed[1:] * np.uint64(31)
        key[:-2] ^= mixed[2:] * np.uint64(961)
    full = np.zeros(n, dtype=bool)
    full[: max(n - 2, 0)] = doc[: max(n - 2, 0)] == doc[2:]
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]]) if n else np.zeros(0, dtype=int)
    lengths = np.diff(np.r_[starts, n]).astype(int)
    short = lengths < 3  # fewer than three words: the whole text is one shingle
    with np.errstate(over="ignore"):
        short_keys = np.array(
            [np.bitwise_xor.reduce(mixed[s : s + k] * (np.uint64(31) ** np.arange(k, dtype=np.uint64))) for s, k in zip(starts[short], lengths[short], strict=True)],
            dtype=np.uint64,
        )
    docs = np.concatenate([doc[full], doc[starts[short]]])
    keys = np.concatenate([key[full], short_keys]).view(np.int64)
    with np.errstate(over="ignore"):
        composite = keys.view(np.uint64) ^ (docs.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    first = ~pd.Series(composite).duplicated().to_numpy()
    return docs[first], keys[first]
