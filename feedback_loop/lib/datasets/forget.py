"""Erase users from every published version (the right to be forgotten).

A user is found in a version by their pseudonym (`user_hash` in the suite's lineage, `user_id` in
the preference Parquet files) and by the traces that carry their data (`opted_out_traces` over the
whole warehouse: their own traces and the traces their feedback is about). Each version that holds
any of it is rewritten without those rows, every format from the same rows, as a new version of its
day (`DatasetStore.replace`): the old version's files are deleted, the new manifest records what was
removed (counts, never ids). Versions without the user are not touched.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedback_loop.lib.columns import is_in
from feedback_loop.lib.datasets import exports
from feedback_loop.lib.datasets.opt_out import OptOut, user_key
from feedback_loop.lib.datasets.privacy import pseudonymize
from feedback_loop.lib.datasets.published import CASES_FILE, PREFERENCE_DATASET, REGRESSION_SUITE
from feedback_loop.lib.datasets.store import DatasetStore
from feedback_loop.lib.tables import Table

SUITE_EXPORTS: dict[str, Callable[[list[dict]], list[dict]]] = {
    "tests.jsonl": exports.promptfoo_tests,
    "langfuse_items.jsonl": exports.langfuse_items,
    "openai_evals.jsonl": exports.openai_evals,
}


@dataclass(frozen=True)
class Rewrite:
    dataset: str
    replaced: str
    version: str
    rows_removed: dict[str, int]


def forget(store: DatasetStore, user_hashes: set[str], trace_ids: set[str]) -> list[Rewrite]:
    """Rewrite every version of both datasets that holds a row of these pseudonyms or traces."""
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    done = []
    for dataset, rewrite in ((REGRESSION_SUITE, _suite_without), (PREFERENCE_DATASET, _preference_without)):
        for version in store.versions(dataset):
            files, removed, counts = rewrite(store, dataset, version, user_hashes, trace_ids)
            if not any(removed.values()):
                continue
            audit = {"at": at, "reason": "users erased on request", "users": len(user_hashes), "rows_removed": removed}
            row_counts = _merged(store.manifest(dataset, version).get("row_counts", {}), counts)
            done.append(Rewrite(dataset, version, store.replace(dataset, version, files, {"row_counts": row_counts}, audit), removed))
    return done


def _suite_without(store: DatasetStore, dataset: str, version: str, hashes: set[str], traces: set[str]) -> tuple[dict[str, bytes], dict[str, int], dict]:
    """The suite's files rebuilt from the cases that hold none of the users' data."""
    cases = [json.loads(line) for line in store.read_bytes(dataset, version, CASES_FILE).decode().splitlines() if line.strip()]
    kept = [c for c in cases if c["lineage"].get("user_hash") not in hashes and c["lineage"].get("source_trace_id") not in traces]
    files = {name: store.read_bytes(dataset, version, name) for name in store.manifest(dataset, version)["files"]}
    files[CASES_FILE] = exports.jsonl(kept)
    for name, export in SUITE_EXPORTS.items():
        if name in files:
            files[name] = exports.jsonl(export(kept))
    return files, {"cases": len(cases) - len(kept)}, {"total": len(kept), "per_error_mode": dict(Counter(c["error_mode"] for c in kept))}


def _preference_without(store: DatasetStore, dataset: str, version: str, hashes: set[str], traces: set[str]) -> tuple[dict[str, bytes], dict[str, int], dict]:
    """The preference files without the users' pairs and examples. A split's JSONL files hold the
    rows of the Parquet file's split in the same order (they are written together), so the rows
    the Parquet lineage marks are removed from each format by position."""
    names = list(store.manifest(dataset, version)["files"])
    files = {name: store.read_bytes(dataset, version, name) for name in names}
    hash_series, trace_series = pd.Series(sorted(hashes), dtype="string"), pd.Series(sorted(traces), dtype="string")
    removed, counts = {}, {}
    for parquet_name, prefixes, trace_columns in (
        ("dpo.parquet", ("dpo_standard", "dpo_conversational", "openai_preference"), ("chosen_trace_id", "rejected_trace_id")),
        ("kto.parquet", ("kto",), ("trace_id",)),
    ):
        if parquet_name not in files:
            continue
        table = pq.read_table(io.BytesIO(files[parquet_name]))
        frame = table.select(["user_id", "split", *trace_columns]).to_pandas()
        drop = is_in(frame["user_id"].astype("string"), hash_series)
        for column in trace_columns:
            drop |= is_in(frame[column].astype("string"), trace_series)
        removed[parquet_name.removesuffix(".parquet")] = int(drop.sum())
        if not drop.any():
            continue
        kept = table.filter(pa.array(~drop))
        files[parquet_name] = _parquet_bytes(kept)
        counts = _merged(counts, _preference_counts(parquet_name, kept.to_pandas()))
        for split in frame["split"].unique():
            in_split = drop[(frame["split"] == split).to_numpy()]
            for prefix in prefixes:
                name = f"{prefix}_{split}.jsonl"
                lines = files[name].decode().splitlines(keepends=True)
                if len(lines) != len(in_split):
                    raise ValueError(f"{dataset} {version}: {name} has {len(lines)} rows, {parquet_name} {len(in_split)} of split {split}: not rewritten")
                files[name] = "".join(line for line, gone in zip(lines, in_split, strict=True) if not gone).encode()
    files = {name: data for name, data in files.items() if data or not name.endswith(".jsonl")}  # no zero-byte split files
    return files, removed, counts


def _preference_counts(parquet_name: str, rows: pd.DataFrame) -> dict:
    """The manifest's row counts of the rows left (as `preference_release` counts them)."""
    splits = {str(k): int(v) for k, v in rows["split"].value_counts().sort_index().items()}
    if parquet_name == "dpo.parquet":
        return {"dpo_pairs": len(rows), "per_pair_source": {str(k): int(v) for k, v in rows["source"].value_counts().items()}, "per_split": {"dpo": splits}}
    return {"kto_examples": len(rows), "kto_desirable": int(rows["label"].sum()), "per_split": {"kto": splits}}


def _merged(base: dict, new: dict) -> dict:
    """Row counts: `base` with `new`'s, the splits of `per_split` merged dataset by dataset."""
    return {**base, **new, "per_split": {**base.get("per_split", {}), **new.get("per_split", {})}} if "per_split" in new else {**base, **new}


def _parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def erase_users(store: DatasetStore, traces: Table, events: Table, users: set[str], hash_key: str) -> list[Rewrite]:
    """`forget` the users (raw ids, as on the opt-out list): their pseudonyms under `hash_key`, and
    the traces of theirs and with their feedback among `traces` and `events` (the whole warehouse)."""
    opt_out = OptOut.of({user_key(user) for user in users}, traces, events)
    hashes = set(pseudonymize(pd.Series(sorted(opt_out.users), dtype="string"), hash_key).dropna())
    return forget(store, hashes, set(opt_out.traces))
