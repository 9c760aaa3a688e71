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
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from feedback_loop.lib.datasets.store import DatasetStore
from feedback_loop.lib.lines import line_blocks, lines_of

TRIPWIRES: dict[str, re.Pattern] = {
    "e-mail shape": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}"),
    "ten digits in a row": re.compile(r"(?<![\d.:])(?:\d[ -]?){9,}\d(?![\d.:])"),  # not a date and time
    "mixed-case token": re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Z])(?=[\w-]*[a-z])[\w-]{24,}"),
    "key block": re.compile(r"-----BEGIN [A-Z ]+-----"),
    "JWT shape": re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}"),
    "URL credentials": re.compile(r"://[^\s/:@<>\"']+:[^\s/@<>\"']+@"),
    "IBAN shape": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b"),
    "SSN shape": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}
_ANY = re.compile("|".join(f"(?:{p.pattern})" for p in TRIPWIRES.values()))


@dataclass
class TripwireScan:
    files: int = 0
    strings: int = 0
    characters: int = 0
    hits: Counter = field(default_factory=Counter)  # kind -> count
    files_with_hits: Counter = field(default_factory=Counter)  # file -> count
    examples: dict[str, str] = field(default_factory=dict)  # kind -> a masked example

    def metadata(self) -> dict:
        return {
            "files_scanned": self.files,
            "strings_scanned": self.strings,
            "characters_scanned": self.characters,
            "hits": dict(self.hits),
            "files_with_hits": dict(self.files_with_hits),
            "examples": self.examples,
        }


def scan_latest(store: DatasetStore, dataset: str) -> TripwireScan:
    """The tripwires over every JSONL and Parquet file of the dataset's latest version."""
    scan = TripwireScan()
    latest = store.latest(dataset)
    if latest is None:
        return scan
    for name in sorted(store.manifest(dataset, latest)["files"]):
        if not name.endswith((".jsonl", ".parquet")):
            continue
        scan.files += 1
        with store.path(dataset, latest, name).open("rb") as fh:
            texts = _jsonl_texts(fh) if name.endswith(".jsonl") else _parquet_texts(fh)
            for text in texts:
                _trip(scan, name, text)
    return scan


def _trip(scan: TripwireScan, name: str, text: str) -> None:
    scan.strings += 1
    scan.characters += len(text)
    if not _ANY.search(text):
        return
    for kind, pattern in TRIPWIRES.items():
        for match in pattern.finditer(text):
            scan.hits[kind] += 1
            scan.files_with_hits[name] += 1
            scan.examples.setdefault(kind, _masked(match.group()))


def _masked(found: str) -> str:
    return found[:3] + "…" + f" ({len(found)} characters)"


def _jsonl_texts(fh) -> Iterator[str]:
    for block in line_blocks(fh):
        for line in lines_of(block).to_pylist():
            if line.strip():
                yield from _strings(json.loads(line), "")


def _parquet_texts(fh) -> Iterator[str]:
    parquet = pq.ParquetFile(fh)
    text_columns = [f.name for f in parquet.schema_arrow if not _is_id(f.name) and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_nested(f.type))]
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=text_columns)
        for column in table.column_names:
            for value in table.column(column).to_pylist():
                yield from _strings(value, column)


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
