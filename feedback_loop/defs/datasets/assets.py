"""Datasets: the versioned regression suite and preference dataset, published to the dataset store."""

import functools
from collections.abc import Callable

import dagster as dg
import pandas as pd

from feedback_loop.defs.feedback.assets import later_feedback
from feedback_loop.defs.partitions import daily_partitions
from feedback_loop.lib.datasets.build import Release, preference_release, regression_release
from feedback_loop.lib.datasets.opt_out import OptOut
from feedback_loop.lib.datasets.preference import PREFERENCE_LABEL_COLUMNS, PREFERENCE_SIGNAL_COLUMNS, PREFERENCE_TRACE_COLUMNS, suite_overlap
from feedback_loop.lib.datasets.published import PREFERENCE_DATASET, REGRESSION_SUITE, release_prompts, suite_cases, suite_prompts
from feedback_loop.lib.datasets.regression import CASE_SOURCE_COLUMNS, read_case_texts, regenerated_trace_ids, suite_candidates
from feedback_loop.lib.datasets.store import DatasetStore, Draft, Published
from feedback_loop.lib.datasets.tripwires import scan_latest
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.preview import markdown_table
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.warehouse import PartitionedTable

window = dict(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="datasets", pool="dataset_publish")


def not_shrunk(dataset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "not_shrunk",
        asset=dataset,
        blocking=True,
        description="Holds back a new version that would empty the dataset or shrink it past the configured share; downstream steps do not run.",
    )


def publish(store: DatasetStore, draft: Draft, release: Release, rows: Callable[[dict], int], params: DatasetParams) -> dg.MaterializeResult:
    """Commit the release's draft as a new version, unless LATEST has this content, was built from a
    newer window, or the release would empty or sharply shrink the dataset (held back, with a failing
    blocking check)."""
    latest = store.latest(draft.dataset)
    before = rows(store.manifest(draft.dataset, latest)) if latest else 0
    after = rows(release.manifest)
    shrunk = before >= params.shrink_check_min_rows and after < before * (1 - params.max_shrink_share)
    if shrunk:
        published = Published(
            version=latest, created=False, manifest=store.manifest(draft.dataset, latest), held_back=f"{draft.dataset}: the new version has {after} rows against {before} in {latest}"
        )
    else:
        published = store.commit(draft, release.content_hash, release.manifest)
    manifest = published.manifest
    check = dg.AssetCheckResult(
        check_name="not_shrunk",
        passed=not shrunk,
        description=(published.held_back + f"; held back (more than {params.max_shrink_share:.0%} fewer). If that is right, raise settings.datasets.max_shrink_share and rerun.") if shrunk else None,
        metadata={"rows": after, "rows_in_latest": before, "max_shrink_share": params.max_shrink_share},
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(release.content_hash),
        metadata={
            "version": published.version or "none",
            "published_new_version": published.created,
            "held_back": published.held_back or "no",
            "parent_version": manifest.get("parent_version") or "none",
            "row_counts": dg.MetadataValue.json(release.manifest.get("row_counts", {})),
            "pii_replaced": dg.MetadataValue.json(dict(release.pii_found)),
            "path": dg.MetadataValue.path(str(store.path(draft.dataset, published.version, "manifest.json"))) if published.version else "none",
            "preview": dg.MetadataValue.md(markdown_table(release.preview)),
        },
        check_results=[check],
    )


def superseded(store: DatasetStore, dataset: str, day: str) -> dg.MaterializeResult | None:
    """The result of a run whose window ends before LATEST's (a rerun of an older date): nothing is built."""
    newer = store.newer_than(dataset, day)
    if newer is None:
        return None
    return dg.MaterializeResult(
        metadata={"version": newer, "published_new_version": False, "held_back": f"LATEST {newer} was built from a newer window than {day}: not rebuilt"},
        check_results=[dg.AssetCheckResult(check_name="not_shrunk", passed=True, metadata={"skipped": "not rebuilt"})],
    )


def suite_rows(manifest: dict) -> int:
    return manifest.get("row_counts", {}).get("total", 0)


def preference_rows(manifest: dict) -> int:
    counts = manifest.get("row_counts", {})
    return counts.get("dpo_pairs", 0) + counts.get("kto_examples", 0)


@dg.asset(
    **window,
    check_specs=[not_shrunk(REGRESSION_SUITE)],
    ins={
        "error_modes": dg.AssetIn(),
        "negative_traces": dg.AssetIn(metadata={"lazy": True}),
        "implicit_signals": dg.AssetIn(metadata={"columns": ["trace_id", "regenerated_by"], "lazy": True}),
        "raw_traces": dg.AssetIn(metadata={"lazy": True}),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"lazy": True}),
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
    linked_feedback: PartitionedTable,
) -> dg.MaterializeResult:
    """Hard cases (negative and regenerated-away responses) by error mode, cumulative and versioned.

    Near-duplicate prompts collapse to one case; each mode is capped with oldest-first eviction;
    each case has assertions derived from its mode and lineage back to its trace. Exports:
    promptfoo tests, Langfuse dataset items, OpenAI evals. Publishes a new version only when the
    content changes. Reads the texts of the shortlisted candidates only.
    """
    store = dataset_store.store()
    params = settings.datasets
    day = context.partition_key_range.end
    if skipped := superseded(store, REGRESSION_SUITE, day):
        return skipped
    previous = suite_cases(store)
    latest = store.latest(REGRESSION_SUITE)
    previous_key_id = store.manifest(REGRESSION_SUITE, latest).get("privacy", {}).get("user_hash_key_id") if latest else None
    opt_out = OptOut.of(privacy.opted_out(), raw_traces, linked_feedback)
    if len(error_modes.columns):
        negatives = negative_traces.read(columns=CASE_SOURCE_COLUMNS, lengths=["edit_text"])
        regenerated = raw_traces.read(columns=CASE_SOURCE_COLUMNS, rows_where=("trace_id", regenerated_trace_ids(implicit_signals)))
        candidates = suite_candidates(error_modes, negatives, regenerated)
    else:
        candidates = pd.DataFrame(columns=[*CASE_SOURCE_COLUMNS, "mode", "mode_id", "confidence", "evidence", "has_reference"])

    with store.draft(REGRESSION_SUITE, day) as draft:
        release = regression_release(
            candidates,
            functools.partial(read_case_texts, negatives=negative_traces, traces=raw_traces),
            previous,
            params,
            privacy.user_hash_key,
            opt_out,
            context.partition_keys,
            draft,
            previous_key_id,
        )
        return publish(store, draft, release, suite_rows, params)


@dg.asset(
    **window,
    check_specs=[not_shrunk(PREFERENCE_DATASET)],
    deps=[REGRESSION_SUITE],
    ins={
        "raw_traces": dg.AssetIn(metadata={"columns": PREFERENCE_TRACE_COLUMNS, "lazy": True}),
        "implicit_signals": dg.AssetIn(metadata={"columns": PREFERENCE_SIGNAL_COLUMNS, "lazy": True}),
        "trace_labels": dg.AssetIn(metadata={"columns": PREFERENCE_LABEL_COLUMNS, "lazy": True}),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"lazy": True}),
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
    linked_feedback: PartitionedTable,
) -> dg.MaterializeResult:
    """DPO pairs (edits, regenerations, thumbs siblings) and KTO examples, versioned.

    Formats: TRL standard and conversational, OpenAI preference fine-tuning, TRL KTO (JSONL, per
    split) and Parquet. Split by prompt hash; no prompt is a near-duplicate of a regression-suite case.
    The KTO set is built and written a trace day at a time; files stream into the new version's folder.
    """
    store = dataset_store.store()
    params = settings.datasets
    day = context.partition_key_range.end
    if skipped := superseded(store, PREFERENCE_DATASET, day):
        return skipped
    opt_out = OptOut.of(privacy.opted_out(), raw_traces, linked_feedback)
    with store.draft(PREFERENCE_DATASET, day) as draft:
        release = preference_release(
            raw_traces,
            implicit_signals,
            trace_labels,
            suite_prompts(store),
            params,
            privacy.user_hash_key,
            opt_out,
            context.partition_keys,
            draft,
        )
        return publish(store, draft, release, preference_rows, params)


PII_FREE = (
    "Tripwires independent of the scrubber (no shared detector) find no e-mail, long digit run, key-like token, key block, JWT, URL credentials, IBAN or SSN shape in any file of the latest version."
)


@dg.asset_check(asset=REGRESSION_SUITE, name="pii_free", description=PII_FREE)
def regression_suite_pii_free(dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    return pii_free(dataset_store.store(), REGRESSION_SUITE)


@dg.asset_check(asset=PREFERENCE_DATASET, name="pii_free", description=PII_FREE)
def preference_dataset_pii_free(dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    return pii_free(dataset_store.store(), PREFERENCE_DATASET)


def pii_free(store: DatasetStore, dataset: str) -> dg.AssetCheckResult:
    scan = scan_latest(store, dataset)
    found = sum(scan.hits.values())
    return dg.AssetCheckResult(
        passed=found == 0,
        description=f"{found} tripwire hits in {len(scan.files_with_hits)} files: a leak, or a false alarm to look at" if found else None,
        metadata={name: dg.MetadataValue.json(value) if isinstance(value, dict) else value for name, value in scan.metadata().items()},
    )


@dg.asset_check(asset=PREFERENCE_DATASET, name="no_suite_overlap", description="No preference prompt is the same as, or a near-duplicate of, a regression-suite case.")
def preference_dataset_no_suite_overlap(settings: FeedbackLoopSettings, dataset_store: DatasetStoreResource) -> dg.AssetCheckResult:
    store = dataset_store.store()
    latest = store.latest(PREFERENCE_DATASET)
    if latest is None:
        return dg.AssetCheckResult(passed=True, metadata={"overlap": 0, "note": "nothing published yet"})
    overlap, checked = suite_overlap(release_prompts(store, latest), suite_prompts(store), settings.datasets.near_duplicate_threshold)
    return dg.AssetCheckResult(passed=overlap == 0, metadata={"overlapping_prompts": overlap, "distinct_prompts_checked": checked, "preference_version": latest})
