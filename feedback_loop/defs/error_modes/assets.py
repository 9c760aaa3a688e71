"""Error modes: bucket negative traces by a versioned taxonomy, and cluster them into candidate new modes."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import daily_partitions
from feedback_loop.lib.error_modes.assign import assign_error_modes
from feedback_loop.lib.error_modes.assign import negative_traces as select_negatives
from feedback_loop.lib.error_modes.clusters import cluster_negatives
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1
from feedback_loop.lib.preview import markdown_table
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import PartitionedTable

TRACE_TEXT_COLUMNS = ["trace_id", "input", "prompt", "output"]
window = dict(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="error_modes")


@dg.asset(**window, ins={"trace_labels": dg.AssetIn(metadata={"lazy": True}), "raw_traces": dg.AssetIn(metadata={"lazy": True})})
def negative_traces(trace_labels: PartitionedTable, raw_traces: PartitionedTable) -> dg.MaterializeResult:
    """Traces labelled negative, with their evidence, prompt, output and length relative to their peers.

    Reads the negatives' labels and texts only, and the output length of every trace (the peers).
    """
    labels = trace_labels.read(rows_where=("label", pd.Series(["negative"], dtype="string")))
    lengths = raw_traces.read(columns=["trace_id", "model", "prompt_version"], lengths=["output"])
    texts = raw_traces.read(columns=TRACE_TEXT_COLUMNS, rows_where=("trace_id", labels["trace_id"]))
    negatives = select_negatives(labels, texts, lengths)
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
    check_specs=[
        dg.AssetCheckSpec("one_per_negative", asset="error_modes", description="Every negative trace has exactly one mode from the taxonomy."),
    ],
)
def error_modes(settings: FeedbackLoopSettings, negative_traces: pd.DataFrame):
    """One row per negative trace: mode and stable mode_id (taxonomy v1), confidence and the evidence that decided it.

    Evidence strongest first: reason tag, comment, edit, the response against the prompt; the
    negatives no rule explains are labelled by a classifier refit on the others every run.
    """
    modes, validation = assign_error_modes(negative_traces, seed=settings.error_modes.seed)
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
            "report": dg.MetadataValue.md(error_mode_report(modes, negative_traces)),
        },
    )
    known = modes["mode"].isin(TAXONOMY_V1.names()) & modes["mode_id"].notna()
    yield dg.AssetCheckResult(
        check_name="one_per_negative",
        passed=bool(known.all() and modes["trace_id"].is_unique and len(modes) == len(negative_traces)),
        metadata={"negatives": len(negative_traces), "assigned": int(known.sum())},
    )


@dg.asset(**window, ins={"error_modes": dg.AssetIn(), "negative_traces": dg.AssetIn(metadata={"columns": ["trace_id", "comments", "output"]})})
def error_mode_clusters(
    context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, cluster_registry: ClusterRegistry, error_modes: pd.DataFrame, negative_traces: pd.DataFrame
) -> Iterator[dg.Output]:
    """Each negative trace's cluster within its mode; `other` clusters are candidate new modes.

    Clusters keep their id across nightly runs when they are the same cluster (matched to the previous
    run's centroids, kept in the cluster registry).
    """
    frame = error_modes[["trace_id", "mode", "partition_date"]].merge(negative_traces, on="trace_id", how="left")
    result = cluster_negatives(frame, cluster_registry.load(context.partition_key_range.end), seed=settings.error_modes.seed, today=context.partition_key_range.end)
    assignments = result.assignments.merge(frame[["trace_id", "partition_date"]], on="trace_id")
    summary = result.clusters.assign(exemplars=result.clusters["exemplars"].map(lambda e: " / ".join(e)))
    yield dg.Output(
        assignments,
        metadata={
            "dagster/row_count": len(assignments),
            "clusters": len(result.clusters),
            "new_clusters": int((result.clusters["status"] == "new").sum()),
            "other_clusters": dg.MetadataValue.md(markdown_table(summary[summary["mode"] == "other"], max_rows=20)),
            "all_clusters": dg.MetadataValue.md(markdown_table(summary.drop(columns="exemplars"), max_rows=60)),
        },
    )
    # Only once the output is written (Dagster stores an output as it is yielded): a failed write
    # leaves the registry as the last stored assignments knew it.
    cluster_registry.save(context.partition_key_range.end, result.registry)


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
