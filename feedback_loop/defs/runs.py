"""Runs whose process died (SIGKILL, OOM killer, a lost machine) stay STARTED in Dagster's run
storage: the default run launcher has no health check. Find them and mark them failed."""

from __future__ import annotations

import os
import socket

import dagster as dg

HOST_TAG = "feedback_loop/host"  # the machine whose process runs it, set by `feedback-loop run` and `demo`


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """STARTED runs of this machine whose run worker is no longer alive. A run is this machine's when
    its host tag says so, or, without a tag, when the instance's storage is a local SQLite file (the
    embedded default: every run worker is on this machine)."""
    local_storage = type(instance.run_storage).__name__.startswith("Sqlite")
    out = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        host = run.tags.get(HOST_TAG)
        if host != socket.gethostname() and not (host is None and local_storage):
            continue
        pid = _worker_pid(instance, run.run_id)
        if pid is not None and not _alive(pid):
            out.append(run)
    return out


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every `dead_runs` run FAILURE, with a message; the ids of those marked."""
    marked = []
    for run in dead_runs(instance):
        instance.report_run_failed(run, "the run's process is gone (killed or lost) while the run was STARTED; marked failed so it can be rerun")
        marked.append(run.run_id)
    return marked


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that reported the run's start (every event records its process id)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    event = records[0].event_log_entry.dagster_event
    return event.pid if event is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING, description="Marks runs whose process died while STARTED as failed (every 5 minutes).")
def dead_run_sweeper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    marked = fail_dead_runs(context.instance)
    return dg.SkipReason(f"marked {len(marked)} dead runs failed: {', '.join(marked)}" if marked else "no dead runs")
