"""The nightly pipeline: one ingest run per day, then a relabel run over the late-feedback window.

Feedback is partitioned by the day it happened, labels by the day of the trace they judge.
A thumbs-down arriving 3 days late lands in that later day's `raw_feedback_events` and
`linked_feedback` partitions; the relabel run that follows every nightly ingest re-materializes
the trace-day assets of the trailing window in a single run, so the late event changes the label
of the trace's own partition in place (no duplicate rows, earlier evidence kept).
"""

import datetime as dt

import dagster as dg

from feedback_loop.defs.partitions import LATE_FEEDBACK_DAYS, daily_partitions

INGEST_GROUPS = ("ingest", "linking")

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(*INGEST_GROUPS),
    executor_def=dg.in_process_executor,
    description="Nightly: read the day's landing files, quarantine bad rows, link the day's feedback to traces.",
)

relabel_job = dg.define_asset_job(
    "relabel_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*INGEST_GROUPS),
    executor_def=dg.in_process_executor,
    description=f"After each ingest: recompute signals, labels, error modes and datasets for the last {LATE_FEEDBACK_DAYS + 1} trace days.",
)

nightly_schedule = dg.build_schedule_from_partitioned_job(ingest_job, hour_of_day=2, minute_of_hour=0)


def relabel_window(day: str) -> tuple[str, str]:
    """First and last trace day that a nightly run for `day` re-evaluates."""
    end = dt.date.fromisoformat(day)
    start = max(end - dt.timedelta(days=LATE_FEEDBACK_DAYS), dt.date.fromisoformat(daily_partitions.start.strftime("%Y-%m-%d")))
    return start.isoformat(), end.isoformat()


def relabel_tags(day: str) -> dict[str, str]:
    start, end = relabel_window(day)
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=relabel_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the relabel run for the trailing window as soon as a nightly ingest succeeds.",
)
def relabel_after_ingest(context: dg.RunStatusSensorContext) -> dg.RunRequest | None:
    day = context.dagster_run.tags.get("dagster/partition")
    if not day:
        return None
    return dg.RunRequest(run_key=f"relabel-{day}-{context.dagster_run.run_id}", tags=relabel_tags(day))
