"""Feedback: link events to traces, derive implicit signals, label every trace.

`linked_feedback` is partitioned by the day the user acted; `implicit_signals` and `trace_labels`
by the day of the trace they judge, reading the linked feedback of the following
`LATE_FEEDBACK_DAYS` days too, so late feedback lands on its trace's own partition.
"""

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator

import dagster as dg
import numpy as np
import pandas as pd

from feedback_loop.defs.partitions import LATE_FEEDBACK_DAYS, TOO_LATE_LOOKBACK_DAYS, daily_partitions
from feedback_loop.lib.labels import LABEL_EVENT_COLUMNS, agreement, labels_by_day
from feedback_loop.lib.linking import TRACE_KEYS, Linked, link_feedback, too_late
from feedback_loop.lib.preview import markdown_table
from feedback_loop.lib.signals import RESPONSE_COLUMNS, SIGNAL_EVENT_COLUMNS, knowledge_horizon, signals_by_day
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.warehouse import PartitionedTable, PartitionFrames


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
            # The linking window (the day and LATE_FEEDBACK_DAYS before it), and before it the days
            # looked up to tell an event about an older trace from one about an unknown trace.
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-TOO_LATE_LOOKBACK_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True),
            metadata={"columns": TRACE_KEYS, "lazy": True},
        ),
    },
    partitions_def=daily_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            "orphan_share",
            asset="linked_feedback",
            description="Fails when the share of the day's events that could not be linked passes the configured maximum.",
        ),
        dg.AssetCheckSpec(
            "none_too_late",
            asset="linked_feedback",
            description="Warns when events came after the late-feedback window of their trace: that trace's published label does not reflect them.",
        ),
    ],
)
def linked_feedback(context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, raw_feedback_events: pd.DataFrame, raw_traces: PartitionedTable) -> Iterator:
    """Links the day's events to the traces of the day and the LATE_FEEDBACK_DAYS days before it.
    An event about a trace older than that (looked up over TOO_LATE_LOOKBACK_DAYS) is an orphan
    with its own reason, counted, and warned about by a check."""
    params = settings.linking
    first = (dt.date.fromisoformat(context.partition_key) - dt.timedelta(days=LATE_FEEDBACK_DAYS)).isoformat()
    window = [day for day in raw_traces.partitions if day >= first]
    older = [day for day in raw_traces.partitions if day < first]
    result = link_feedback(raw_feedback_events, raw_traces.read(partitions=window), pd.Timedelta(minutes=params.session_max_gap_minutes))
    if len(result.orphans) and older:
        ids = pd.concat([result.orphans["trace_id"], result.orphans["span_id"]]).dropna()
        columns = ["trace_id", "span_id", "partition_date"]
        known = pd.concat([raw_traces.read(partitions=older, columns=columns, rows_where=(column, ids)) for column in ("trace_id", "span_id")], ignore_index=True)
        result = Linked(linked=result.linked, orphans=too_late(result.orphans, known))
    late_events = result.orphans[result.orphans["orphan_reason"].str.startswith("too late").fillna(False)]
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
            "events_too_late": len(late_events),
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
        check_name="orphan_share",
        asset_key="linked_feedback",
        passed=share <= params.max_orphan_share,
        metadata={"orphans": len(result.orphans), "orphan_share": round(share, 4), "max_share": params.max_orphan_share},
    )
    stale_days = late_events["orphan_reason"].str.extract(r"of (\d{4}-\d{2}-\d{2})")[0].value_counts().sort_index()
    yield dg.AssetCheckResult(
        check_name="none_too_late",
        asset_key="linked_feedback",
        passed=late_events.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if late_events.empty else f"{len(late_events)} events came after the late-feedback window ({LATE_FEEDBACK_DAYS} days) of their trace; those labels are stale",
        metadata={"events_too_late": len(late_events), "trace_days": dg.MetadataValue.json({str(k): int(v) for k, v in stale_days.items()})},
    )


@dg.asset(
    group_name="feedback",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "raw_traces": dg.AssetIn(
            # The day before and after are session context; the days up to a window ahead say what has been ingested.
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=LATE_FEEDBACK_DAYS, allow_nonexistent_upstream_partitions=True),
            metadata={"columns": RESPONSE_COLUMNS, "lazy": True},
        ),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"columns": SIGNAL_EVENT_COLUMNS, "lazy": True}),
    },
)
def implicit_signals(context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, raw_traces: PartitionedTable, linked_feedback: PartitionedTable) -> dg.MaterializeResult:
    """Per trace: edit distance and class, copies, regenerate chain, rephrase, dwell time, abandonment.

    Works a trace day at a time, with the day before's and after's traces of the same sessions
    (a session may cross midnight) and the linked feedback on them: one day's texts and about two
    days' events in memory, not the window's. Each day's partition is written as it is made.
    """
    last_day = max(raw_traces.partitions, default=context.partition_key_range.end)  # the last trace day ingested (up to a window ahead)
    tally = SignalTally()
    days = signals_by_day(context.partition_keys, raw_traces, linked_feedback, settings.signals, lambda day: knowledge_horizon(day, last_day, LATE_FEEDBACK_DAYS))
    return dg.MaterializeResult(value=PartitionFrames(frames=tallied(days, tally.add), metadata=tally.metadata))


class SignalTally:
    """What `implicit_signals` reports, gathered from each day's signals as they are written."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.edit_classes: Counter = Counter()
        self.dwell: list[np.ndarray] = []

    def add(self, signals: pd.DataFrame) -> None:
        self.counts.update(
            rows=len(signals),
            edited=int(signals["edit_class"].notna().sum()),
            copied=int((signals["copy_count"] > 0).sum()),
            regenerated=int(signals["regenerated_by"].notna().sum()),
            rephrased=int(signals["rephrased"].sum()),
            abandoned=int(signals["abandoned"].sum()),
        )
        self.edit_classes.update(signals["edit_class"].value_counts().to_dict())
        self.dwell.append(signals["dwell_s"].dropna().to_numpy(dtype=float))

    def metadata(self) -> dict:
        dwell = np.concatenate(self.dwell) if self.dwell else np.array([])
        edit_classes = pd.DataFrame(self.edit_classes.most_common(), columns=["edit_class", "traces"])
        return {
            "dagster/row_count": self.counts["rows"],
            **{name: self.counts[name] for name in ("edited", "copied", "regenerated", "rephrased", "abandoned")},
            "abandoned_share": round(self.counts["abandoned"] / max(self.counts["rows"], 1), 4),
            "median_dwell_s": float(np.median(dwell)) if len(dwell) else 0.0,
            "edit_classes": dg.MetadataValue.md(markdown_table(edit_classes)),
        }


@dg.asset(
    group_name="feedback",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "implicit_signals": dg.AssetIn(metadata={"lazy": True}),
        "linked_feedback": dg.AssetIn(partition_mapping=later_feedback(), metadata={"columns": LABEL_EVENT_COLUMNS, "lazy": True}),
    },
)
def trace_labels(context: dg.AssetExecutionContext, settings: FeedbackLoopSettings, implicit_signals: PartitionedTable, linked_feedback: PartitionedTable) -> dg.MaterializeResult:
    """One label per trace (positive / negative / neutral / unlabeled) with score, confidence and evidence.

    Explicit feedback outweighs implicit signals (weights: `settings.labels`); rows where they disagree
    say so, and the agreement rate between explicit thumbs and implicit signals is metadata.
    Labels a trace day at a time (one day's signals and events in memory, not the window's), and
    writes each day's partition as it is made.
    """
    tally = LabelTally()
    days = labels_by_day(context.partition_keys, implicit_signals, linked_feedback, settings.labels)
    return dg.MaterializeResult(value=PartitionFrames(frames=tallied(days, tally.add), metadata=tally.metadata))


class LabelTally:
    """What `trace_labels` reports, gathered from each day's labels as they are written."""

    PREVIEW_ROWS = 8

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: list[pd.DataFrame] = []

    def add(self, labels: pd.DataFrame) -> None:
        agreed, compared = agreement(labels)
        self.counts.update(labels["label"].value_counts().to_dict())
        self.counts.update(
            rows=len(labels),
            compared=compared,
            agreed=agreed,
            disagreements=int(labels["disagreement"].sum()),
        )
        if sum(map(len, self.examples)) < self.PREVIEW_ROWS:
            self.examples.append(labels[labels["label"] != "unlabeled"][["trace_id", "label", "score", "confidence", "evidence"]].head(self.PREVIEW_ROWS))

    def metadata(self) -> dict:
        compared = self.counts["compared"]
        examples = pd.concat(self.examples, ignore_index=True).head(self.PREVIEW_ROWS) if self.examples else pd.DataFrame()
        return {
            "dagster/row_count": self.counts["rows"],
            **{f"label_{name}": self.counts[name] for name in ("positive", "negative", "neutral", "unlabeled")},
            "explicit_implicit_agreement": round(self.counts["agreed"] / compared, 4) if compared else "n/a",
            "agreement_compared_traces": compared,
            "disagreements": self.counts["disagreements"],
            "preview": dg.MetadataValue.md(markdown_table(examples)),
        }


def tallied(frames: Iterator[tuple[str, pd.DataFrame]], add: Callable[[pd.DataFrame], None]) -> Iterator[tuple[str, pd.DataFrame]]:
    """The (partition, frame) pairs of `frames`, each passed to `add` on its way to the warehouse."""
    for day, frame in frames:
        add(frame)
        yield day, frame
