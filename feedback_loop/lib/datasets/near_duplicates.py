"""Near-duplicate prompts over word 3-gram shingles (see `words_of`).

`PromptIndex` (MinHash LSH, datasketch) finds near-duplicates among a growing set of prompts;
`near_duplicate_of` checks many prompts against a few reference prompts with the exact Jaccard.
"""

from __future__ import annotations

import math
import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash, MinHashLSH
from scipy import sparse

from feedback_loop.lib.parallel import in_chunks
from feedback_loop.lib.text import lowered_words

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


def near_duplicate_of(texts: pd.Series, references: list[str], threshold: float) -> np.ndarray:
    """Whether each text's word 3-gram set has Jaccard similarity >= threshold with any reference's.

    Exact (no MinHash estimate) and vectorized, with the prefix filter of set-similarity joins:
    J(A, B) >= t needs |A ∩ B| >= ceil(t |B|), so A holds at least one of any
    |B| - ceil(t |B|) + 1 shingles of B; B's rarest ones in the texts are taken. Only texts that
    hold one are candidates, and for those, with A (texts x shingles) and B (references x
    shingles) as sparse 0/1 matrices, A Bᵀ counts the shingles each pair shares.
    """
    n = len(texts)
    if not n or not references:
        return np.zeros(n, dtype=bool)
    ref_doc, ref_key = _distinct(*_shingles(pd.Series(references, dtype="string")))
    # Chunks of texts, on a thread per core: Arrow, NumPy and SciPy release the GIL, and small
    # chunks keep the working arrays in cache (450k prompts: 18.6 s in one chunk, 4.7 s in 20k chunks).
    return in_chunks(
        texts.astype("string").reset_index(drop=True),
        lambda chunk: _near_duplicates_in(chunk.reset_index(drop=True), len(references), ref_doc, ref_key, threshold),
        rows=CHUNK_TEXTS,
    )


CHUNK_TEXTS = 20_000


def _near_duplicates_in(texts: pd.Series, references: int, ref_doc: np.ndarray, ref_key: np.ndarray, threshold: float) -> np.ndarray:
    """`near_duplicate_of` for one chunk of texts, given the references' distinct shingles."""
    n = len(texts)
    doc, key = _shingles(texts)
    vocab = np.unique(ref_key)  # every shingle of a reference
    at = pd.Index(vocab).get_indexer(key)  # hashed: ~4x faster than a binary search here
    known = at >= 0
    word, word_doc = at[known], doc[known]  # the texts' shingles that some reference has, as vocab ids
    frequency = np.bincount(word, minlength=len(vocab))
    ref_word = np.searchsorted(vocab, ref_key)
    order = np.lexsort((ref_word, frequency[ref_word], ref_doc))  # per reference, rarest first
    ref_size = np.bincount(ref_doc, minlength=references)
    rank = np.arange(len(order)) - np.searchsorted(ref_doc[order], ref_doc[order])
    prefix = ref_size - np.ceil(threshold * ref_size - 1e-9).astype(int) + 1
    probe = np.zeros(len(vocab), dtype=bool)
    probe[ref_word[order][rank < prefix[ref_doc[order]]]] = True
    candidate = np.zeros(n, dtype=bool)
    candidate[word_doc[probe[word]]] = True
    out = np.zeros(n, dtype=bool)
    if not candidate.any():
        return out
    if not candidate.all():
        rows = candidate[doc]
        doc, key, at, known = doc[rows], key[rows], at[rows], known[rows]
    # A: each candidate's distinct shingles among the references' (0/1); |A| adds its other distinct shingles.
    a = sparse.csr_matrix((np.ones(known.sum(), dtype=np.float32), (doc[known], at[known])), shape=(n, len(vocab)))
    a.sum_duplicates()
    a.data[:] = 1
    sizes = np.diff(a.indptr) + np.bincount(_distinct(doc[~known], key[~known])[0], minlength=n)
    b = sparse.csr_matrix((np.ones(len(ref_doc), dtype=np.float32), (ref_doc, ref_word)), shape=(references, len(vocab)))
    # B as a dense matrix when it is small: a sparse A times a dense B is ~3x faster than the sparse
    # product when texts share shingles with most references (templated prompts).
    b_dense = b.T.toarray() if len(vocab) * references <= DENSE_CELLS else None
    # Size filter: J >= t needs t |B| <= |A| <= |B| / t, so texts meet only references of a similar
    # size, in bands of reference sizes over texts sorted by size.
    by_size = np.argsort(sizes, kind="stable")
    a, sorted_sizes = a[by_size], sizes[by_size]
    low = max(int(ref_size.min()), 1)
    while low <= ref_size.max():
        high = max(low + 1, math.ceil(low * BAND))
        refs = np.flatnonzero((ref_size >= low) & (ref_size < high))
        start = np.searchsorted(sorted_sizes, threshold * low - 1e-9, side="left")
        end = np.searchsorted(sorted_sizes, (high - 1) / threshold + 1e-9, side="right")
        if len(refs) and end > start and b_dense is not None:
            shared = a[start:end] @ b_dense[:, refs]
            union = sorted_sizes[start:end, None] + ref_size[refs][None, :] - shared
            out[by_size[start:end][(shared >= threshold * union).any(axis=1)]] = True
        elif len(refs) and end > start:
            shared = (a[start:end] @ b[refs].T).tocoo()
            union = sorted_sizes[start + shared.row] + ref_size[refs[shared.col]] - shared.data
            out[by_size[start + shared.row[shared.data >= threshold * union]]] = True
        low = high
    return out


BAND = 1.25  # reference sizes per band: [low, BAND x low)
DENSE_CELLS = 4_000_000  # references x their distinct shingles up to which B is dense (16 MB)


def _shingles(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(document, shingle hash) for the word 3-grams of each text (see `words_of`); a text of one or
    two words is one shingle, a text without words has none. Repeats within a text are kept."""
    doc, flat = lowered_words(texts, PUNCTUATION)
    doc = doc.astype(np.int32)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    if not keep.all():
        doc, flat = doc[keep], flat.filter(pa.array(keep))
    encoded = pc.dictionary_encode(flat)
    # A hash of each distinct word's text, so keys agree between calls.
    word_hash = pd.util.hash_array(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
    mixed = word_hash[encoded.indices.to_numpy()]
    n = len(mixed)
    with np.errstate(over="ignore"):
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
    return docs, keys


def _distinct(doc: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (document, shingle) pairs with repeats within a document dropped."""
    with np.errstate(over="ignore"):
        composite = key.view(np.uint64) ^ (doc.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    first = ~pd.Series(composite).duplicated().to_numpy()
    return doc[first], key[first]
