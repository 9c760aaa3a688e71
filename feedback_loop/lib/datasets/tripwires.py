"""An independent scan of published files for personal data and secrets the scrubber missed.

The scrubber decides what to replace with presidio, detect-secrets and its own patterns; scanning
its output with the same detectors could never find what they miss. These tripwires share no code
or pattern with it: broad shapes (an @ between words, ten digits in a row, a long token mixing
upper case, lower case and digits, a key block, a JWT, credentials in a URL, an IBAN's or an SSN's
shape) over every string value of every published file, Parquet included. They are broad on
purpose, so a hit is either a leak or a false alarm to look at; ids (`id`, `*_id`, `*Id`, `*_hash`
fields) are not scanned. Person names and street addresses have no shape to trip on: the canary test covers them.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedback_loop.lib.datasets.store import DatasetStore
from feedback_loop.lib.lines import line_blocks, lines_of

TRIPWIRES: dict[str, re.Pattern] = {
    "e-mail shape": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}"),
    "ten digits in a row": re.compile(r"(?<!\w)(?<!\d[.:])(?:\d[ -]?){9,}\d(?!\w)(?![.:]\d)"),  # a token of its own: not inside a date and time or a code like JJD0003900123
    "mixed-case token": re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Z])(?=[\w-]*[a-z])[\w-]{24,}"),
    "key block": re.compile(r"-----BEGIN [A-Z ]+-----"),
    "JWT shape": re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}"),
    "URL credentials": re.compile(r"://[^\s/:@<>\"']+:[^\s/@<>\"']+@"),
    "IBAN shape": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b"),
    "SSN shape": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}
# The tripwires without their look-arounds, in RE2 (Arrow's regex engine): rows without a match of
# this are passed over without a Python object per row; the rest are parsed and checked exactly.
PREFILTER = "|".join(
    (
        r"@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}",
        r"(?:\d[ -]?){9,}\d",
        r"[\w-]{24,}",
        r"-----BEGIN [A-Z ]+-----",
        r"eyJ[\w-]{10,}\.",
        r"://[^\s/:@]+:[^\s/@]+@",
        r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}",
        r"\d{3}-\d{2}-\d{4}",
    )
)


@dataclass
class TripwireScan:
    files: int = 0
    rows: int = 0  # JSONL lines and Parquet values
    characters: int = 0
    hits: Counter = field(default_factory=Counter)  # kind -> count
    files_with_hits: Counter = field(default_factory=Counter)  # file -> count
    examples: dict[str, str] = field(default_factory=dict)  # kind -> a masked example

    def metadata(self) -> dict:
        return {
            "files_scanned": self.files,
            "rows_scanned": self.rows,
            "characters_scanned": self.characters,
            "hits": dict(self.hits),
            "files_with_hits": dict(self.files_with_hits),
            "examples": self.examples,
        }


def scan_latest(store: DatasetStore, dataset: str) -> TripwireScan:
    """The tripwires over every JSONL and Parquet file of the dataset's latest version, a file per
    thread (Arrow's regex runs without the GIL)."""
    latest = store.latest(dataset)
    if latest is None:
        return TripwireScan()
    names = [name for name in sorted(store.manifest(dataset, latest)["files"]) if name.endswith((".jsonl", ".parquet"))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        scans = list(pool.map(lambda name: _scan_file(store, dataset, latest, name), names))
    total = TripwireScan()
    for scan in scans:
        total.files += scan.files
        total.rows += scan.rows
        total.characters += scan.characters
        total.hits.update(scan.hits)
        total.files_with_hits.update(scan.files_with_hits)
        total.examples = {**scan.examples, **total.examples}
    return total


def _scan_file(store: DatasetStore, dataset: str, version: str, name: str) -> TripwireScan:
    scan = TripwireScan(files=1)
    with store.path(dataset, version, name).open("rb") as fh:
        for rows, keys in _jsonl_rows(fh) if name.endswith(".jsonl") else _parquet_rows(fh):
            scan.rows += len(rows)
            scan.characters += pc.sum(pc.utf8_length(rows)).as_py() or 0
            for value in pc.filter(rows, pc.fill_null(pc.match_substring_regex(rows, PREFILTER), False)).to_pylist():
                for text in _strings(json.loads(value), "") if keys is None else [value]:
                    _trip(scan, name, text)
    return scan


def _trip(scan: TripwireScan, name: str, text: str) -> None:
    for kind, pattern in TRIPWIRES.items():
        for match in pattern.finditer(text):
            scan.hits[kind] += 1
            scan.files_with_hits[name] += 1
            scan.examples.setdefault(kind, _masked(match.group()))


def _masked(found: str) -> str:
    return found[:3] + "…" + f" ({len(found)} characters)"


def _jsonl_rows(fh) -> Iterator[tuple[pa.Array, None]]:
    """The file's lines, a block at a time (each flagged line is parsed, its id fields skipped)."""
    for block in line_blocks(fh):
        yield lines_of(block), None


def _parquet_rows(fh) -> Iterator[tuple[pa.Array, str]]:
    """The values of the file's text columns (not ids), a row group and a column at a time; a
    nested column (chat messages) as the strings inside it."""
    parquet = pq.ParquetFile(fh)
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        for column in table.column_names:
            values = table.column(column).combine_chunks()
            if _is_id(column):
                continue
            for leaf in _string_leaves(values):
                yield leaf.cast(pa.large_string()), column


def _string_leaves(values: pa.Array) -> list[pa.Array]:
    """The string arrays inside an array (itself, or the fields and items of nested values)."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return [values]
    if pa.types.is_struct(values.type):
        return [leaf for i in range(values.type.num_fields) if not _is_id(values.type.field(i).name) for leaf in _string_leaves(values.field(i))]
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return _string_leaves(values.flatten())
    return []


def _strings(value, key: str) -> Iterator[str]:
    """The string values in a JSON value, except under id fields."""
    if isinstance(value, str):
        if not _is_id(key):
            yield value
    elif isinstance(value, dict):
        for child_key, child in value.items():
            yield from _strings(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child, key)


def _is_id(key: str) -> bool:
    """An id or hash field: `id`, `*_id`, `sourceTraceId`, `user_hash`, …"""
    return key.lower().endswith(("id", "ids", "hash"))
