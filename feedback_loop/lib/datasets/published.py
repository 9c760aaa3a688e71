"""What the checks and the next build read of a published version: the suite's prompts, the PII
left in a dataset's files, and the prompts of a release's Parquet files."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow.parquet as pq

from feedback_loop.lib.datasets.store import DatasetStore

REGRESSION_SUITE = "regression_suite"
PREFERENCE_DATASET = "preference_dataset"
CASES_FILE = "cases.jsonl"


def suite_cases(store: DatasetStore) -> list[dict]:
    """The cases of the latest regression suite (none before the first)."""
    latest = store.latest(REGRESSION_SUITE)
    if latest is None:
        return []
    return [json.loads(line) for line in store.read_bytes(REGRESSION_SUITE, latest, CASES_FILE).decode().splitlines()]


def suite_prompts(store: DatasetStore) -> list[str]:
    """The prompts of the latest regression suite's cases."""
    return [case["prompt"] for case in suite_cases(store)]


def release_prompts(store: DatasetStore, version: str) -> Iterator[pd.Series]:
    """The prompts of a preference release's Parquet files, a row group at a time (a held-back KTO
    set has no file)."""
    listed = store.manifest(PREFERENCE_DATASET, version).get("files", {})
    for name in ("dpo.parquet", "kto.parquet"):
        if name not in listed:
            continue
        with store.path(PREFERENCE_DATASET, version, name).open("rb") as fh:
            parquet = pq.ParquetFile(fh)
            for group in range(parquet.num_row_groups):
                yield pd.Series(parquet.read_row_group(group, columns=["prompt"]).column("prompt"), dtype="string")
