"""Column helpers on Arrow, no Python loop per row: text (RE2 regular expressions, lengths, hashes),
key lookups, sorts and duplicate checks; column work in slices on a thread per core, and
pure-Python work on a process per core."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import BinaryIO

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def in_chunks(values: pd.Series | pa.Array | pa.ChunkedArray, compute: Callable, rows: int = 20_000) -> np.ndarray:
    """`compute` over slices of `rows` values (a Series or an Arrow array), on a thread per core,
    concatenated. For column-wise work in Arrow and NumPy (they release the GIL; one Arrow call uses
    one core): small slices also keep the working arrays in cache."""
    if len(values) <= rows:
        return compute(values)
    cut = (lambda start: values.iloc[start : start + rows]) if isinstance(values, pd.Series) else (lambda start: values.slice(start, rows))
    slices = [cut(start) for start in range(0, len(values), rows)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return np.concatenate(list(pool.map(compute, slices)))


def in_processes(function: Callable, items: list, min_items: int = 2) -> list:
    """`[function(item) for item in items]` on forked worker processes, one per core, for pure-Python
    work (threads would not run it in parallel). `function` must be picklable: a module-level
    function or a bound method. Below `min_items`, starting workers costs more than it saves."""
    cores = os.cpu_count() or 1
    if len(items) < min_items or cores < 2:
        return [function(item) for item in items]
    with ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(function, items, chunksize=max(1, len(items) // (cores * 8))))


ONE_BATCH = 1 << 40  # rows per Arrow batch when DuckDB hands a result over: all of them, one chunk per column


def one_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every Arrow-backed column in one chunk (a take on a chunked column
    concatenates its chunks first, every time). Dtypes and a default index are kept."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if all(column.num_chunks <= 1 for column in table.columns):
        return frame
    return table.combine_chunks().to_pandas()


def one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`values` as one array: a single chunk as it is (`combine_chunks` copies even one), several joined."""
    if not isinstance(values, pa.ChunkedArray):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


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


def per_distinct(values: pd.Series, transform: Callable[[pd.Series], pd.Series | pa.Array]) -> pd.Series:
    """`transform` computed once per distinct value (missing included) and spread back over the column."""
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=False)
    done = transform(pd.Series(uniques, dtype="string"))
    done = done if isinstance(done, pa.Array | pa.ChunkedArray) else large_text(done)
    return pd.Series(done.take(pa.array(codes)), index=values.index, dtype="string")


def replaced(values: pd.Series, rows: np.ndarray, new: list[str] | pd.Series) -> pd.Series:
    """The text column with the values at positions `rows` (ascending) replaced by `new`.

    Built as one concatenation of the unchanged stretches and the new values, which sizes the
    result once: `pc.replace_with_mask` grows it as it goes, 0.2-1.5 s against 0.1-0.4 s for a
    550 MB column of KTO completions here. Past RUNS_MAX stretches of consecutive rows, a Python
    step per stretch would cost more: then it is a take from the column and the new values."""
    column, replacement = one_array(large_text(values)), one_array(large_text(new))
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1] + 1]) if len(rows) else np.zeros(0, dtype=np.int64)
    if len(starts) > RUNS_MAX:
        at = np.arange(len(column))
        at[rows] = len(column) + np.arange(len(rows))
        out = pa.concat_arrays([column, replacement]).take(pa.array(at))
    else:
        lengths = np.diff(np.r_[starts, len(rows)])
        pieces, done = [], 0
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            row = int(rows[start])
            pieces += [column.slice(done, row - done), replacement.slice(start, length)]
            done = row + length
        pieces.append(column.slice(done))
        out = pa.concat_arrays(pieces)
    return pd.Series(out, index=values.index, dtype="string")


RUNS_MAX = 200_000


def rows_kept(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """`frame[keep]` for a boolean mask, filtered a column at a time (Arrow filters a text column
    ~3x faster than pandas' row take through `iloc`: 0.8 vs 2.9 s for 3M events); the index is kept."""
    return pd.DataFrame({name: frame[name].array[keep] for name in frame.columns}, index=frame.index[keep], columns=frame.columns)


def is_in(values: pd.Series, allowed: Iterable) -> np.ndarray:
    """`values.isin(allowed)` for text columns, hashed in Arrow (pandas loops in Python on Arrow strings)."""
    value_set = large_text(allowed if isinstance(allowed, pd.Series) else list(allowed))
    return pc.is_in(large_text(values), value_set=value_set).to_numpy(zero_copy_only=False).astype(bool)


def positions(keys: pd.Series | np.ndarray, index: pd.Series | np.ndarray) -> np.ndarray:
    """The position of each key among the (unique) values of `index`, -1 when absent or missing;
    hashed in Arrow (pandas' `Index.get_indexer` on Arrow strings is ~7x slower)."""
    if not len(keys) or not len(index):
        return np.full(len(keys), -1)
    found = pc.index_in(large_text(keys), value_set=large_text(index), skip_nulls=True)
    return found.fill_null(-1).to_numpy().astype(np.int64, copy=False)


def large_text(values: pd.Series | np.ndarray | list) -> pa.Array:
    """The values as one Arrow `large_string` array (missing values null)."""
    return pa.array(pd.Series(values, dtype="string") if not isinstance(values, pd.Series) else values.astype("string"), type=pa.large_string())


def repeats(frame: pd.DataFrame) -> np.ndarray:
    """Whether each row's values (all columns; missing equals missing) repeat an earlier row's:
    `frame.duplicated(keep="first")`, with text hashed in Arrow and the row codes in NumPy."""
    if not len(frame):
        return np.zeros(0, dtype=bool)
    code = None
    for column in frame.columns:
        values = one_array(pa.array(frame[column]))
        encoded = pc.dictionary_encode(values, null_encoding="encode")
        indices = encoded.indices.to_numpy().astype(np.int64)
        code = indices if code is None else pd.factorize(code * len(encoded.dictionary) + indices)[0]  # dense again: the next product stays small
    return pd.Series(code).duplicated(keep="first").to_numpy()


def sort_order(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Row positions that sort `frame` by `columns` ascending (nulls last, ties in row order);
    sorted by Arrow (~4x faster than pandas on text keys)."""
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return pc.sort_indices(table, sort_keys=[(c, "ascending", "at_end") for c in columns]).to_numpy()


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
