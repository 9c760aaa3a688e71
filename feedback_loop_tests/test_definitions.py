"""The code location loads, with partitions, jobs, the schedule and the relabel sensor."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

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


def test_dg_check_defs_passes():
    dg_bin = Path(sys.executable).with_name("dg")
    result = subprocess.run([str(dg_bin), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
