"""Ingest: pull a day of records from the configured sources, normalize, dedupe, validate,
quarantine the rest."""

import datetime as dt
import math
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import FIRST_DAY, LATE_FEEDBACK_DAYS, daily_partitions
from feedback_loop.lib.days import days_ending
from feedback_loop.lib.landing import Kind
from feedback_loop.lib.normalize import Normalized, normalize_feedback, normalize_traces, without_held, without_quarantined
from feedback_loop.lib.preview import markdown_table
from feedback_loop.lib.sources.combined import combined
from feedback_loop.lib.sources.http import SourceRejected, SourceUnavailable
from feedback_loop.lib.sources.window import PullWindow, pull_window
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.sources import SOURCE_KEYS, Source
from feedback_loop.resources.warehouse import PartitionedTable

# A store that is down or rate-limits past the client's own retries gets a few more minutes.
TRANSIENT_RETRIES = dg.RetryPolicy(max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def build_ingest_asset(name: str, kind: Kind, normalize: Callable[[pd.DataFrame, str], Normalized], key: list[str], description: str) -> dg.AssetsDefinition:
    quarantine_name = f"{name}_quarantine"
    # The same days' keys, to drop a record landed again on a later day as a duplicate.
    earlier_days = dg.TimeWindowPartitionMapping(start_offset=-LATE_FEEDBACK_DAYS, end_offset=-1, allow_nonexistent_upstream_partitions=True)

    @dg.multi_asset(
        name=name,
        outs={
            name: dg.AssetOut(description=description, group_name="ingest"),
            quarantine_name: dg.AssetOut(
                description=f"Rows of `{name}` that break the input contract, one per rejected record, with a reason.",
                group_name="ingest",
            ),
        },
        partitions_def=daily_partitions,
        ins={"earlier": dg.AssetIn(key=name, partition_mapping=earlier_days, metadata={"lazy": True, "columns": key})},
        required_resource_keys={"settings", "io_manager", *SOURCE_KEYS},
        retry_policy=TRANSIENT_RETRIES,
        check_specs=[
            dg.AssetCheckSpec(
                "quarantine_share",
                asset=name,
                description="Fails when the quarantined share of the partition's records passes the configured maximum.",
            )
        ],
    )
    def ingest(context: dg.AssetExecutionContext, earlier: PartitionedTable) -> Iterator:
        day = context.partition_key
        settings: FeedbackLoopSettings = context.resources.settings
        sources: dict[str, Source] = {k: getattr(context.resources, k) for k in SOURCE_KEYS if getattr(context.resources, k).feeds(kind)}
        if not sources:
            raise dg.Failure(f"{name}: no source feeds {kind} (see docs/sources.md)", allow_retries=False)
        window = _window(context, name, day, settings.ingest.pull_overlap_hours)
        pulled = {}
        for source_key, source in sources.items():
            try:
                pulled[source_key] = source.pull(kind, window, FIRST_DAY, LATE_FEEDBACK_DAYS)
            except SourceRejected as err:
                raise dg.Failure(f"{name}: {err}", allow_retries=False) from None
            except SourceUnavailable as err:
                raise dg.Failure(f"{name}: {err}", allow_retries=True) from None
        records = combined(kind, {k: p.records for k, p in pulled.items()})
        if kind == "traces" and not len(records) and not settings.ingest.allow_empty_day:
            raise dg.Failure(
                f"{name}: no trace records for {day} from {', '.join(sources)}; the warehouse day is left as it was (set settings.ingest.allow_empty_day for a day without traffic)",
                allow_retries=False,
            )
        # A later night may have taken some of this day's records as late: a rerun leaves them there.
        later_days = _days_after(day, settings.ingest.pull_overlap_hours)
        warehouse = context.resources.io_manager
        later = warehouse.partitions_of(dg.AssetKey(name), later_days, key)
        held = pd.concat([t.read(rows_where=(key[0], records[key[0]])) for t in (earlier, later)], ignore_index=True)
        result = without_held(normalize(records, day), held, key)
        if len(result.quarantine):  # a pull window that reaches into other days reads their bad records again
            # Read from the warehouse, not as an input: the quarantine is this step's own output, and
            # an input from it would make the two outputs depend on each other.
            other_days = [d for d in days_ending(day, LATE_FEEDBACK_DAYS) if d != day] + later_days
            held_bad = warehouse.partitions_of(dg.AssetKey(quarantine_name), other_days, ["reason", "raw"]).read(rows_where=("raw", result.quarantine["raw"]))
            result = without_quarantined(result, held_bad)
        total = len(records)
        own = total - result.duplicates_of_other_days - result.quarantined_by_other_days  # the records this partition took or rejected
        share = len(result.quarantine) / own if own else 0.0
        reasons = result.quarantine["reason"].str.replace(r"'.*'|:.*", "", regex=True).value_counts()
        newest = result.clean["timestamp"].max() if len(result.clean) else None
        yield dg.Output(
            result.clean,
            output_name=name,
            metadata={
                "dagster/row_count": len(result.clean),
                "records_read": total,
                "quarantined": len(result.quarantine),
                "quarantine_share": round(share, 4),
                "duplicates_dropped": result.duplicates,
                "duplicates_of_other_days": result.duplicates_of_other_days,
                "quarantined_by_other_days": result.quarantined_by_other_days,
                "sources": dg.MetadataValue.json({k: {"records": len(p.records), **p.metadata} for k, p in pulled.items()}),
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "high_water_mark": newest.isoformat() if newest is not None and not pd.isna(newest) else "",
                "preview": dg.MetadataValue.md(markdown_table(result.clean.head(5))),
            },
        )
        yield dg.Output(
            result.quarantine,
            output_name=quarantine_name,
            metadata={
                "dagster/row_count": len(result.quarantine),
                "reasons": dg.MetadataValue.md(markdown_table(reasons.rename("rows").reset_index())),
            },
        )
        limit = settings.ingest.max_quarantine_share
        yield dg.AssetCheckResult(
            check_name="quarantine_share",
            asset_key=name,
            passed=share <= limit,
            metadata={"quarantined": len(result.quarantine), "quarantine_share": round(share, 4), "max_share": limit},
        )

    return ingest


def _window(context: dg.AssetExecutionContext, name: str, day: str, overlap_hours: float) -> PullWindow:
    """The partition's pull window, from what the instance recorded of earlier pulls."""
    if not 0 <= overlap_hours <= LATE_FEEDBACK_DAYS * 24:  # records pulled again further back would not be recognised as duplicates
        raise dg.Failure(f"{name}: ingest.pull_overlap_hours is {overlap_hours}; it must be between 0 and the late-feedback window, {LATE_FEEDBACK_DAYS * 24} hours", allow_retries=False)
    key = dg.AssetKey(name)
    own = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    recent = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=LATE_FEEDBACK_DAYS + 1).records
    first_pull = _stamp(own[0], "window_start") if own else None
    ends = [e for r in recent if (e := _stamp(r, "window_end")) is not None]
    return pull_window(day, dt.timedelta(hours=overlap_hours), first_pull, max(ends, default=None), backfill="dagster/backfill" in context.run.tags)


def _days_after(day: str, overlap_hours: float) -> list[str]:
    """The later days whose nightly pull window reaches back into `day`."""
    first = dt.date.fromisoformat(day)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range(1, math.ceil(overlap_hours / 24) + 1)]


def _stamp(record: dg.EventLogRecord, field: str) -> dt.datetime | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get(field) if materialization else None
    return dt.datetime.fromisoformat(value.value) if value is not None and value.value else None


raw_traces = build_ingest_asset(
    "raw_traces",
    "traces",
    normalize_traces,
    ["trace_id", "span_id"],
    "Canonical traces of the day (UTC), deduplicated by (trace_id, span_id), also against the days before it in the late-feedback window; chat inputs flattened to `prompt`.",
)
raw_feedback_events = build_ingest_asset(
    "raw_feedback_events",
    "feedback",
    normalize_feedback,
    ["event_id"],
    "Canonical feedback events whose timestamp falls on the day (UTC), deduplicated by event_id, also against the days before it in the late-feedback window.",
)
