"""Error modes: bucket negative traces by a versioned taxonomy, and cluster them into candidate new modes."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import LATE_FEEDBACK_DAYS, daily_partitions
from feedback_loop.lib.error_modes.assign import assign_error_modes_by_day, negative_traces_by_day
from feedback_loop.lib.error_modes.clusters import cluster_negatives_by_day
from feedback_loop.lib.error_modes.judge import apply_judge
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1
from feedback_loop.lib.preview import markdown_table
from feedback_loop.resources.judge import Judge
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import PartitionedTable

TRACE_TEXT_COLUMNS = ["trace_id", "input", "prompt", "output"]
window = dict(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="error_modes")


def week_before() -> dg.TimeWindowPartitionMapping:
    """The run's days and the `LATE_FEEDBACK_DAYS` before: each day's figures come from the days ending on it."""
    return dg.TimeWindowPartitionMapping(start_offset=-LATE_FEEDBACK_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True)


@dg.asset(
    **window,
    ins={
        "trace_labels": dg.AssetIn(metadata={"lazy": True}),
        "raw_traces": dg.AssetIn(partition_mapping=week_before(), metadata={"lazy": True}),
    },
)
def negative_traces(context: dg.AssetExecutionContext, trace_labels: PartitionedTable, raw_traces: PartitionedTable) -> dg.MaterializeResult:
    """Traces labelled negative, with their evidence, prompt, output and length relative to their peers.

    A trace's peers are the traces of its model and prompt version on the `LATE_FEEDBACK_DAYS` + 1
    trace days ending on its own day. Reads the negatives' labels and texts only, and the output
    length of every trace.
    """
    labels = trace_labels.read(rows_where=("label", pd.Series(["negative"], dtype="string")))
    lengths = raw_traces.read(columns=["trace_id", "model", "prompt_version", "partition_date"], lengths=["output"])
    texts = raw_traces.read(partitions=context.partition_keys, columns=TRACE_TEXT_COLUMNS, rows_where=("trace_id", labels["trace_id"]))
    negatives = negative_traces_by_day(labels, texts, lengths, context.partition_keys, LATE_FEEDBACK_DAYS)
    labelled = trace_labels.row_count()
    share = len(negatives) / labelled if labelled else 0.0
    return dg.MaterializeResult(
        value=negatives,
        metadata={
            "dagster/row_count": len(negatives),
            "negative_share": round(share, 4),
            "preview": dg.MetadataValue.md(markdown_table(negatives[["trace_id", "model", "score", "evidence", "prompt"]].head(8))),
        },
    )


@dg.asset(
    **window,
    ins={"negative_traces": dg.AssetIn(partition_mapping=week_before(), metadata={"lazy": True})},
    check_specs=[
        dg.AssetCheckSpec("one_per_negative", asset="error_modes", description="Every negative trace has exactly one mode from the taxonomy."),
    ],
)
def error_modes(context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, judge: Judge, negative_traces: PartitionedTable):
    """One row per negative trace: mode and stable mode_id (taxonomy v1), confidence and the evidence that decided it.

    Each piece of evidence votes: reason tag, comment, edit, and checks of the response against
    the system prompt and the prompt; the negatives nothing explains are labelled by a classifier
    trained on the rule-labelled negatives of the `LATE_FEEDBACK_DAYS` + 1 trace days ending on
    their day (when it passes its own hold-out), so a day's modes are the same whichever run
    (nightly, rerun, backfill) computes them. With the optional judge configured, the rows the
    offline path is unsure of go to it within a budget per run; its decisions say so.
    """
    days = context.partition_keys
    negatives = negative_traces.read()
    modes, validations = assign_error_modes_by_day(negatives, days, LATE_FEEDBACK_DAYS, seed=settings.error_modes.seed)
    validation = validations[days[-1]]
    in_days = negatives[negatives["partition_date"].isin(days)]
    judged = {}
    if judge.enabled:
        modes, tally = apply_judge(modes, in_days, judge.ask, judge.cache_get, judge.cache_put, judge.model, TAXONOMY_V1, judge.max_calls_per_night, judge.max_confidence)
        judged = tally.metadata()
        if tally.unavailable:
            context.log.warning(f"error_modes: the judge stopped: {tally.unavailable}; the rest keep their offline modes")
    yield dg.Output(
        modes,
        metadata={
            "dagster/row_count": len(modes),
            "taxonomy_version": TAXONOMY_V1.version,
            **{f"mode_{name}": int((modes["mode"] == name).sum()) for name in TAXONOMY_V1.names()},
            "classifier_trained": validation.trained,
            "classifier_train_rows": validation.train_rows,
            "classifier_holdout_macro_f1": validation.macro_f1 if validation.macro_f1 is not None else "n/a",
            "classifier_holdout_accuracy": validation.accuracy if validation.accuracy is not None else "n/a",
            "classifier_by_day": dg.MetadataValue.md(markdown_table(validation_table(validations))),
            "report": dg.MetadataValue.md(error_mode_report(modes, in_days)),
            "judge": judge.model if judge.enabled else "off",
            **judged,
        },
    )
    known = modes["mode"].isin(TAXONOMY_V1.names()) & modes["mode_id"].notna()
    yield dg.AssetCheckResult(
        check_name="one_per_negative",
        passed=bool(known.all() and not modes.duplicated(["partition_date", "trace_id"]).any() and len(modes) == len(in_days)),
        metadata={"negatives": len(in_days), "assigned": int(known.sum())},
    )


@dg.asset(
    **window,
    ins={
        "error_modes": dg.AssetIn(partition_mapping=week_before(), metadata={"lazy": True, "columns": ["trace_id", "mode", "partition_date"]}),
        "negative_traces": dg.AssetIn(partition_mapping=week_before(), metadata={"lazy": True, "columns": ["trace_id", "comments", "output", "partition_date"]}),
    },
)
def error_mode_clusters(
    context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, cluster_registry: ClusterRegistry, error_modes: PartitionedTable, negative_traces: PartitionedTable
) -> Iterator[dg.Output]:
    """Each negative trace's cluster within its mode; `other` clusters are candidate new modes.

    A day's negatives are clustered with those of the `LATE_FEEDBACK_DAYS` trace days before it, and
    its clusters keep their id when they are the same cluster as the day before's (matched to its
    centroids, a snapshot per day in the cluster registry). A day's clusters are the same whichever
    run computes them.
    """
    days = context.partition_keys
    frame = error_modes.read().merge(negative_traces.read(), on=["trace_id", "partition_date"], how="left")
    assignments, snapshots = cluster_negatives_by_day(frame, days, LATE_FEEDBACK_DAYS, cluster_registry.load(days[0]), seed=settings.error_modes.seed)
    latest = snapshots[days[-1]]
    summary = latest.clusters.assign(exemplars=latest.clusters["exemplars"].map(lambda e: " / ".join(e)))
    yield dg.Output(
        assignments,
        metadata={
            "dagster/row_count": len(assignments),
            "clusters": len(latest.clusters),
            "new_clusters": int((latest.clusters["status"] == "new").sum()),
            "other_clusters": dg.MetadataValue.md(markdown_table(summary[summary["mode"] == "other"], max_rows=20)),
            "all_clusters": dg.MetadataValue.md(markdown_table(summary.drop(columns="exemplars"), max_rows=60)),
        },
    )
    # Only once the output is written (Dagster stores an output as it is yielded): a failed write
    # leaves the registry as the last stored assignments knew it.
    for day, result in snapshots.items():
        cluster_registry.save(day, result.registry)


def validation_table(validations: dict) -> pd.DataFrame:
    """The hold-out figures of each day's classifier."""
    return pd.DataFrame(
        [{"day": day, "trained": v.trained, "train_rows": v.train_rows, "macro_f1": v.macro_f1, "accuracy": v.accuracy} for day, v in validations.items()],
        columns=["day", "trained", "train_rows", "macro_f1", "accuracy"],
    )


def error_mode_report(modes: pd.DataFrame, negatives: pd.DataFrame) -> str:
    """Counts per mode, per model and prompt version, and an exemplar per mode."""
    if modes.empty:
        return "_no negative traces_"
    by_mode = modes.groupby(["mode", "mode_id"]).agg(traces=("trace_id", "size"), mean_confidence=("confidence", "mean")).round(3).reset_index()
    by_model = pd.crosstab([modes["model"].fillna("?"), modes["prompt_version"].fillna("?")], modes["mode"]).reset_index()
    exemplars = modes.sort_values("confidence", ascending=False).drop_duplicates("mode").merge(negatives[["trace_id", "prompt", "output"]], on="trace_id")
    return "\n\n".join(
        [
            "**Per mode**",
            markdown_table(by_mode),
            "**Per model / prompt version**",
            markdown_table(by_model, max_rows=30),
            "**Exemplars**",
            markdown_table(exemplars[["mode", "trace_id", "evidence", "prompt", "output"]]),
        ]
    )
