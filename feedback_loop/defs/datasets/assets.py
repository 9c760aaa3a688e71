"""Datasets: the versioned regression suite and preference dataset, published to the dataset store."""

import json
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from feedback_loop.defs.partitions import daily_partitions
from feedback_loop.lib.datasets.build import (
    CASES_FILE,
    Release,
    preference_release,
    regression_release,
)
from feedback_loop.lib.datasets.preference import LABEL_COLUMNS, SIGNAL_COLUMNS, TRACE_TEXT_COLUMNS, suite_overlap
from feedback_loop.lib.datasets.privacy import find_pii, jsonl_strings, might_contain_pii
from feedback_loop.lib.datasets.regression import (
    CASE_SOURCE_COLUMNS,
    TRACE_CASE_TEXT_COLUMNS,
    case_texts,
    regenerated_trace_ids,
    suite_candidates,
)
from feedback_loop.lib.datasets.store import DatasetStore, Draft
from feedback_loop.lib.preview import markdown_table
from feedback_loop.lib.text import is_in, line_blocks, lines_of
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.warehouse import PartitionedTable

REGRESSION_SUITE = "regression_suite"
PREFERENCE_DATASET = "preference_dataset"
window = dict(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="datasets")


def publish(store: DatasetStore, draft: Draft, release: Release) -> dg.MaterializeResult:
    """Commit the release's draft as a new version (or keep LATEST, when it has this content)."""
    published = store.commit(draft, release.content_hash, release.manifest)
    manifest = published.manifest
    return dg.MaterializeResult(
        data_version=dg.DataVersion(release.content_hash),
        metadata={
            "version": published.version,
            "published_new_version": published.created,
            "parent_version": manifest.get("parent_version") or "none",
            "row_counts": dg.MetadataValue.json(manifest.get("row_counts", {})),
            "pii_replaced": dg.MetadataValue.json(dict(release.pii_found)),
            "path": dg.MetadataValue.path(str(store.path(draft.dataset, published.version, "manifest.json"))),
            "preview": dg.MetadataValue.md(markdown_table(release.preview)),
        },
    )


@dg.asset(
    **window,
    ins={
        "error_modes": dg.AssetIn(),
        "negative_traces": dg.AssetIn(metadata={"lazy": True}),
        "implicit_signals": dg.AssetIn(metadata={"columns": ["trace_id", "regenerated_by"], "lazy": True}),
        "raw_traces": dg.AssetIn(metadata={"lazy": True}),
    },
)
def regression_suite(
    context: dg.AssetExecutionContext,
    settings: FeedbackLoopSettings,
    dataset_store: DatasetStoreResource,
    privacy: Privacy,
    error_modes: pd.DataFrame,
    negative_traces: PartitionedTable,
    implicit_signals: PartitionedTable,
    raw_traces: PartitionedTable,
) -> dg.MaterializeResult:
    """Hard cases (negative and regenerated-away responses) by error mode, cumulative and versioned.

    Near-duplicate prompts collapse to one case; each mode is capped with oldest-first eviction;
    each case has assertions derived from its mode and lineage back to its trace. Exports:
    promptfoo tests, Langfuse dataset items, OpenAI evals. Publishes a new version only when the
    content changes. Reads the texts of the shortlisted candidates only.
    """
    store = dataset_store.store()
    params = settings.datasets
    latest = store.latest(REGRESSION_SUITE)
    previous = [json.loads(line) for line in store.read_bytes(REGRESSION_SUITE, latest, CASES_FILE).decode().splitlines()] if latest else []
    if len(error_modes.columns):
        negatives = negative_traces.read(columns=CASE_SOURCE_COLUMNS, lengths=["edit_text"])
        regenerated = raw_traces.read(columns=CASE_SOURCE_COLUMNS, rows_where=("trace_id", regenerated_trace_ids(implicit_signals)))
        candidates = suite_candidates(error_modes, negatives, regenerated)
    else:
        candidates = pd.DataFrame(columns=[*CASE_SOURCE_COLUMNS, "mode", "mode_id", "confidence", "evidence", "has_reference"])

    def texts(shortlisted: pd.DataFrame) -> pd.DataFrame:
        ids = shortlisted["trace_id"]
        negative_texts = negative_traces.read(columns=[*TRACE_CASE_TEXT_COLUMNS, "edit_text"], rows_where=("trace_id", ids))
        trace_texts = raw_traces.read(columns=TRACE_CASE_TEXT_COLUMNS, rows_where=("trace_id", ids[~is_in(ids, negative_texts["trace_id"])]))
        return case_texts(shortlisted, negative_texts, trace_texts)

    draft = store.draft(REGRESSION_SUITE, context.partition_key_range.end)
    release = regression_release(
        candidates,
        texts,
        previous,
        params,
        privacy.user_hash_key,
        privacy.opted_out(),
        context.partition_keys,
        draft,
    )
    return publish(store, draft, release)


@dg.asset(
    **window,
    deps=[REGRESSION_SUITE],
    ins={
        "raw_traces": dg.AssetIn(metadata={"columns": TRACE_TEXT_COLUMNS, "lazy": True}),
        "implicit_signals": dg.AssetIn(metadata={"columns": SIGNAL_COLUMNS, "lazy": True}),
        "trace_labels": dg.AssetIn(metadata={"columns": LABEL_COLUMNS, "lazy": True}),
    },
)
def preference_dataset(
    context: dg.AssetExecutionContext,
    settings: FeedbackLoopSettings,
    dataset_store: DatasetStoreResource,
    privacy: Privacy,
    raw_traces: PartitionedTable,
    implicit_signals: PartitionedTable,
    trace_labels: PartitionedTable,
) -> dg.MaterializeResult:
    """DPO pairs (edits, regenerations, thumbs siblings) and KTO examples, versioned.

    Formats: TRL standard and conversational, OpenAI preference fine-tuning, TRL KTO (JSONL, per
    split) and Parquet. Split by prompt hash; no prompt is a near-duplicate of a regression-suite case.
    The KTO set is built and written a trace day at a time; files stream into the new version's folder.
    """
    store = dataset_store.store()
    params = settings.datasets
    draft = store.draft(PREFERENCE_DATASET, context.partition_key_range.end)
    release = preference_release(
        raw_traces,
        implicit_signals,
        trace_labels,
        suite_prompts(store),
        params,
        privacy.user_hash_key,
        privacy.opted_out(),
        context.partition_keys,
        draft,
    )
    return publish(store, draft, release)


def suite_prompts(store: DatasetStore) -> list[str]:
    latest = store.latest(REGRESSION_SUITE)
    if latest is None:
        return []
    return [json.loads(line)["prompt"] for line in store.read_bytes(REGRESSION_SUITE, latest, CASES_FILE).decode().splitlines()]


def pii_hits(store: DatasetStore, dataset: str) -> dict[str, int]:
    """Findings of the PII scanners in every JSONL file of the dataset's latest version (each file
    read in blocks of lines: the KTO files of a busy window are gigabytes)."""
    latest = store.latest(dataset)
    if latest is None:
        return {}
    hits = {}
    for name in store.manifest(dataset, latest)["files"]:
        if not name.endswith(".jsonl"):
            continue
        found = 0
        with store.path(dataset, latest, name).open("rb") as fh:
            for block in line_blocks(fh):
                lines = lines_of(block)
                flagged = lines.filter(pa.array(might_contain_pii(pd.Series(lines, dtype="string")))).to_pylist()
                texts = jsonl_strings(flagged)
                found += sum(len(find_pii(text)) for text in texts[might_contain_pii(texts)])
        if found:
            hits[name] = found
    return hits


@dg.asset_check(asset=REGRESSION_SUITE, description="The published suite has no PII or secret left in any file.")
def regression_suite_pii_free(dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    hits = pii_hits(dataset_store.store(), REGRESSION_SUITE)
    return dg.AssetCheckResult(passed=not hits, metadata={"files_with_hits": dg.MetadataValue.json(hits)})


@dg.asset_check(asset=PREFERENCE_DATASET, description="The published preference dataset has no PII or secret left in any file.")
def preference_dataset_pii_free(dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    hits = pii_hits(dataset_store.store(), PREFERENCE_DATASET)
    return dg.AssetCheckResult(passed=not hits, metadata={"files_with_hits": dg.MetadataValue.json(hits)})


@dg.asset_check(asset=PREFERENCE_DATASET, description="No preference prompt is the same as, or a near-duplicate of, a regression-suite case.")
def preference_dataset_no_suite_overlap(settings: FeedbackLoopSettings, dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    store = dataset_store.store()
    latest = store.latest(PREFERENCE_DATASET)
    if latest is None:
        return dg.AssetCheckResult(passed=True, metadata={"overlap": 0, "note": "nothing published yet"})
    paths = [store.path(PREFERENCE_DATASET, latest, name) for name in ("dpo.parquet", "kto.parquet")]
    overlap, checked = suite_overlap(row_groups(paths, "prompt"), suite_prompts(store), settings.datasets.near_duplicate_threshold)
    return dg.AssetCheckResult(passed=overlap == 0, metadata={"overlapping_prompts": overlap, "distinct_prompts_checked": checked, "preference_version": latest})


def row_groups(paths: list[UPath], column: str) -> Iterator[pd.Series]:
    """`column` of Parquet files, a row group at a time."""
    for path in paths:
        with path.open("rb") as fh:
            parquet = pq.ParquetFile(fh)
            for group in range(parquet.num_row_groups):
                yield pd.Series(parquet.read_row_group(group, columns=[column]).column(column), dtype="string")
