"""Ingest: read a day of landing files, normalize, dedupe, validate, quarantine the rest."""

from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import FIRST_DAY, LATE_FEEDBACK_DAYS, daily_partitions
from feedback_loop.lib.landing import Kind
from feedback_loop.lib.normalize import Normalized, normalize_feedback, normalize_traces, without_earlier
from feedback_loop.lib.preview import markdown_table
from feedback_loop.resources.landing import LandingFolder
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.warehouse import PartitionedTable


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
        check_specs=[
            dg.AssetCheckSpec(
                "quarantine_share",
                asset=name,
                description="Fails when the quarantined share of the partition's records passes the configured maximum.",
            )
        ],
    )
    def ingest(context: dg.AssetExecutionContext, landing: LandingFolder, settings: FeedbackLoopSettings, earlier: PartitionedTable) -> Iterator:
        day = context.partition_key
        if not landing.has(kind):
            raise dg.Failure(f"{name}: the landing folder has no {kind}/ folder: {landing.root}/{kind} (set FEEDBACK_LOOP_LANDING)")
        records = landing.read_day(kind, day, first_day=FIRST_DAY)
        if kind == "traces" and not len(records) and not settings.ingest.allow_empty_day:
            raise dg.Failure(f"{name}: no trace records for {day} in {landing.root}/{kind}; the warehouse day is left as it was (set settings.ingest.allow_empty_day for a day without traffic)")
        result = without_earlier(normalize(records, day), earlier.read(rows_where=(key[0], records[key[0]])), key)
        total = len(records)
        share = len(result.quarantine) / total if total else 0.0
        reasons = result.quarantine["reason"].str.replace(r"'.*'|:.*", "", regex=True).value_counts()
        yield dg.Output(
            result.clean,
            output_name=name,
            metadata={
                "dagster/row_count": len(result.clean),
                "records_read": total,
                "quarantined": len(result.quarantine),
                "quarantine_share": round(share, 4),
                "duplicates_dropped": result.duplicates,
                "duplicates_of_earlier_days": result.duplicates_of_earlier_days,
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
