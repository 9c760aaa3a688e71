"""Near-duplicate prompts with MinHash LSH (datasketch) over word 3-gram shingles."""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
WORD = re.compile(r"\w+")


def minhash(text: str) -> MinHash:
    words = WORD.findall(text.lower())
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
