"""JSON-lines bytes as Arrow arrays of lines, and files read in blocks of whole lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa


def lines_of(data: bytes) -> pa.Array:
    """The lines of UTF-8 text as an Arrow string array, each with its line break, built from the
    buffer without a Python object per line."""
    breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")) + 1
    offsets = np.concatenate([[0], breaks, [len(data)] if not len(breaks) or breaks[-1] != len(data) else []]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    lines.validate(full=True)
    return lines


def line_blocks(fh: BinaryIO, size: int = 64 << 20) -> Iterator[bytes]:
    """A file's bytes in blocks of whole lines, about `size` bytes each (a large file is never held at once)."""
    rest = b""
    while block := fh.read(size):
        block = rest + block
        cut = block.rfind(b"\n") + 1
        if cut:
            yield block[:cut]
        rest = block[cut:]
    if rest:
        yield rest
