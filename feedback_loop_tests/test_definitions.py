"""The code location loads, with partitions, jobs, the schedule and the relabel sensor; the sensor's request."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from feedback_loop.definitions import defs
from feedback_loop.defs.jobs import relabel_window

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_partitions_and_automation():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_traces", "raw_feedback_events", "raw_traces_quarantine"} <= keys
    assert graph.get(dg.AssetKey("raw_traces")).partitions_def is not None
    assert defs.resolve_job_def("ingest_job") and defs.resolve_job_def("relabel_job")
    assert defs.resolve_schedule_def("ingest_job_schedule").cron_schedule == "0 2 * * *"
    assert defs.resolve_sensor_def("relabel_after_ingest")
    dg.Definitions.validate_loadable(defs)


def test_relabel_window_covers_the_late_feedback_days():
    assert relabel_window("2026-11-20") == ("2026-11-13", "2026-11-20")


@pytest.mark.slow
def test_dg_check_defs_passes():
    dg_bin = Path(sys.executable).with_name("dg")
    result = subprocess.run([str(dg_bin), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_relabel_sensor_requests_the_window_of_a_successful_nightly_ingest(resources):
    """The sensor, called as the daemon calls it on the RUN_SUCCESS of a real ingest run, requests
    the relabel job over the trailing window with a key unique to that run; a run that names no
    partition requests nothing. The requested run then relabels every day of the window."""
    from feedback_loop.defs.jobs import relabel_after_ingest
    from feedback_loop_tests.conftest import END, defs_with

    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    day = END.isoformat()

    def sensor_on(result: dg.ExecuteInProcessResult):
        run = instance.get_run_by_id(result.run_id)
        success = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
        context = dg.build_run_status_sensor_context(sensor_name="relabel_after_ingest", dagster_event=success, dagster_instance=instance, dagster_run=run)
        return relabel_after_ingest(context)

    ingest = defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, tags={"dagster/partition": day})
    request = sensor_on(ingest)
    start, end = relabel_window(day)
    assert defs.resolve_sensor_def("relabel_after_ingest").job_name == "relabel_job"
    assert request.run_key == f"relabel-{day}-{ingest.run_id}"
    assert request.tags == {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}

    relabel = defs.resolve_job_def("relabel_job").execute_in_process(instance=instance, tags=request.tags)
    assert relabel.success
    labelled = {m.partition for m in (e.materialization for e in relabel.get_asset_materialization_events()) if m.asset_key == dg.AssetKey("trace_labels")}
    assert labelled == set(defs.resolve_job_def("relabel_job").partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))

    assert sensor_on(dg.materialize([unpartitioned], instance=instance)) is None


@dg.asset
def unpartitioned() -> None:
    """A run of another job, with no partition."""


def test_the_asset_graph_has_no_cycle():
    """Self-dependencies on earlier partitions are fine; a cycle between two assets keeps the UI
    from drawing the lineage."""
    import graphlib

    from feedback_loop.definitions import defs

    graph = defs.resolve_asset_graph()
    parents = {key: {p for p in graph.get(key).parent_keys if p != key} for key in graph.get_all_asset_keys()}
    graphlib.TopologicalSorter(parents).prepare()  # raises CycleError on a cycle
