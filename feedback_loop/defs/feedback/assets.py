"""Feedback: link events to traces, derive implicit signals, label every trace.

`linked_feedback` is partitioned by the day the user acted; `implicit_signals` and `trace_labels`
by the day of the trace they judge, reading the linked feedback of the following
`LATE_FEEDBACK_DAYS` days too, so late feedback lands on its trace's own partition.
"""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import LATE_FEEDBACK_DAYS, daily_partitions
from feedback_loop.lib.contract import empty_frame
from feedback_loop.lib.labels import agreement_rate, labels_of_days
from feedback_loop.lib.linking import LINK_COLUMNS, TRACE_KEYS, link_feedback
from feedback_loop.lib.preview import markdown_table
from feedback_loop.lib.signals import RESPONSE_COLUMNS, SIGNAL_EVENT_COLUMNS, data_horizon, signals_of_days
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.warehouse import PartitionedTable

EXPLICIT_COLUMNS = ["trace_id", "user_id", "timestamp", "type", "value_num", "reason", "comment"]


def loaded_or_empty(linked: pd.DataFrame) -> pd.DataFrame:
    """The linked feedback loaded, or an empty frame of its columns when no partition of it exists yet."""
    return linked if len(linked.columns) else empty_frame(LINK_COLUMNS)


def later_feedback() -> dg.TimeWindowPartitionMapping:
    """A trace day's feedback: that day's and the next LATE_FEEDBACK_DAYS days' events."""
    return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=LATE_FEEDBACK_DAYS, allow_nonexistent_upstream_partitions=True)


@dg.multi_asset(
    outs={
        "linked_feedback": dg.AssetOut(
            description="Every feedback event of the day with the trace/span it is about and how the link was made.",
            group_name="linking",
        ),
        "linked_feedback_orphans": dg.AssetOut(
            description="Feedback events of the day that could not be linked to a trace, with the reason.",
            group_name="linking",
        ),
    },
    ins={
        "raw_feedback_events": dg.AssetIn(),
        "raw_traces": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-LATE_FEEDBACK_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
            metadata={"columns": TRACE_KEYS},
        ),
    },
    partitions_def=daily_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            "linked_feedback_orphan_share",
            asset="linked_feedback",
            description="Fails when the share of the day's events that could not be linked passes the configured maximum.",
        )
    ],
)
def linked_feedback(
    context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, raw_feedback_events: pd.DataFrame, raw_traces: pd.DataFrame
) -> Iterator:
    """Links the day's events to the traces of the day and the LATE_FEEDBACK_DAYS days before it."""
    params = settings.linking
    result = link_feedback(raw_feedback_events, raw_traces, pd.Timedelta(minutes=params.session_max_gap_minutes))
    total = len(result.linked) + len(result.orphans)
    share = len(result.orphans) / total if total else 0.0
    methods = result.linked["link_method"].value_counts()
    late = (result.linked["trace_date"] != result.linked["partition_date"]).sum()
    yield dg.Output(
        result.linked,
        output_name="linked_feedback",
        metadata={
            "dagster/row_count": len(result.linked),
            "orphans": len(result.orphans),
            "orphan_share": round(share, 4),
            "events_on_earlier_traces": int(late),
            **{f"linked_{method}": int(count) for method, count in methods.items()},
        },
    )
    reasons = result.orphans["orphan_reason"].value_counts().rename("events").reset_index()
    yield dg.Output(
        result.orphans,
        output_name="linked_feedback_orphans",
        metadata={"dagster/row_count": len(result.orphans), "reasons": dg.MetadataValue.md(markdown_table(reasons))},
    )
    yield dg.AssetCheckResult(
        check_name="linked_feedback_orphan_share",
        asset_key="linked_feedback",
        passed=share <= params.max_orphan_share,
        metadata={"orphans": len(result.orphans), "orphan_share": round(share, 4), "max_share": params.max_orphan_share},
    )


@dg.asset(
    group_name="feedback",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "raw_traces": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=1, allow_nonexistent_upstream_partitions=True),
            metadata={"columns": RESPONSE_COLUMNS, "lazy": True},
        ),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"columns": SIGNAL_EVENT_COLUMNS + ["trace_date"]}),
    },
)
def implicit_signals(
    context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, raw_traces: PartitionedTable, linked_feedback: pd.DataFrame
) -> dg.MaterializeResult:
    """Per trace: edit distance and class, copies, regenerate chain, rephrase, dwell time, abandonment.

    Works a trace day at a time, with the day before's and after's traces of the same sessions
    (a session may cross midnight) and the linked feedback of the late-feedback window on them:
    two days' texts in memory (the day's and the next's), not the whole window's.
    """
    linked_feedback = loaded_or_empty(linked_feedback)
    # As over the whole range at once: the range's traces (the day before is only context) and the events about them.
    in_range = [day for day in raw_traces.partitions if day >= context.partition_keys[0]]
    horizon = data_horizon(raw_traces.read(partitions=in_range, columns=["trace_id", "timestamp", "latency_ms"]), linked_feedback)
    signals = signals_of_days(context.partition_keys, raw_traces, linked_feedback, settings.signals, horizon)
    n = max(len(signals), 1)
    edit_classes = signals["edit_class"].value_counts().rename("traces").reset_index()
    return dg.MaterializeResult(
        value=signals,
        metadata={
            "dagster/row_count": len(signals),
            "edited": int(signals["edit_class"].notna().sum()),
            "copied": int((signals["copy_count"] > 0).sum()),
            "regenerated": int(signals["regenerated_by"].notna().sum()),
            "rephrased": int(signals["rephrased"].sum()),
            "abandoned": int(signals["abandoned"].sum()),
            "abandoned_share": round(float(signals["abandoned"].sum()) / n, 4),
            "median_dwell_s": float(signals["dwell_s"].median()) if signals["dwell_s"].notna().any() else 0.0,
            "edit_classes": dg.MetadataValue.md(markdown_table(edit_classes)),
        },
    )


@dg.asset(
    group_name="feedback",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "implicit_signals": dg.AssetIn(metadata={"lazy": True}),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"columns": EXPLICIT_COLUMNS}),
    },
)
def trace_labels(
    context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, implicit_signals: PartitionedTable, linked_feedback: pd.DataFrame
) -> dg.MaterializeResult:
    """One label per trace (positive / negative / neutral / unlabeled) with score, confidence and evidence.

    Explicit feedback outweighs implicit signals (weights: `settings.labels`); rows where they disagree
    say so, and the agreement rate between explicit thumbs and implicit signals is metadata.
    Labels a trace day at a time: one day's signals in memory, not the window's.
    """
    labels = labels_of_days(context.partition_keys, implicit_signals, loaded_or_empty(linked_feedback), settings.labels)
    rate, compared = agreement_rate(labels)
    counts = labels["label"].value_counts()
    examples = labels[labels["label"] != "unlabeled"][["trace_id", "label", "score", "confidence", "evidence"]].head(8)
    return dg.MaterializeResult(
        value=labels,
        metadata={
            "dagster/row_count": len(labels),
            **{f"label_{name}": int(counts.get(name, 0)) for name in ("positive", "negative", "neutral", "unlabeled")},
            "explicit_implicit_agreement": round(rate, 4) if rate is not None else "n/a",
            "agreement_compared_traces": compared,
            "disagreements": int(labels["disagreement"].sum()),
            "preview": dg.MetadataValue.md(markdown_table(examples)),
        },
    )
