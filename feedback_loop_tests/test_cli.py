"""The `feedback-loop` CLI end to end on a tiny dataset, in a fresh folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from feedback_loop.cli import main


def test_generate_writes_landing_format_and_ground_truth(tmp_path):
    out = tmp_path / "landing"
    assert main(["generate", "--days", "2", "--traces-per-day", "40", "--end-date", "2026-11-20", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "traces").iterdir()) == ["traces-2026-11-19.jsonl", "traces-2026-11-20.jsonl"]
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    assert summary["traces"] == 80
    truth = (out / "ground_truth" / "traces.jsonl").read_text().splitlines()
    assert len(truth) == 80


@pytest.mark.slow
def test_demo_runs_every_day_on_the_embedded_default(tmp_path):
    """The console script in a fresh process and folder, as a user runs it; then again, replacing its own folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_LOOP_", "DAGSTER_HOME"))}
    demo = [str(Path(sys.executable).parent / "feedback-loop"), "demo", "--days", "2", "--traces-per-day", "60", "--end-date", "2026-11-20"]
    out = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert "2026-11-19: ok" in out and "2026-11-20: ok" in out
    traces = pd.read_parquet(tmp_path / "data" / "warehouse" / "raw_traces" / "2026-11-20.parquet")
    assert len(traces) == 60
    assert (tmp_path / "data" / "dagster_home" / "history" / "runs.db").exists()
    assert (tmp_path / "data" / "dagster_home" / ".nux" / "nux.yaml").exists()  # no community dialog over the first page
    assert (tmp_path / "data" / "demo-landing" / "traces").is_dir() and not (tmp_path / "data" / "landing").exists()
    ui = next(line for line in out.splitlines() if line.startswith("open the UI:"))
    assert f"DAGSTER_HOME={tmp_path / 'data' / 'dagster_home'} " in ui
    assert f"FEEDBACK_LOOP_LANDING={tmp_path / 'data' / 'demo-landing'} " in ui
    assert f'FEEDBACK_LOOP_USER_HASH_KEY="$(cat {tmp_path / "data" / "state" / "user_hash_key"})"' in ui
    assert ui.endswith(f"{Path(sys.executable).parent / 'dg'} dev")
    again = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert again.splitlines()[1:3] == out.splitlines()[1:3]


def test_demo_never_replaces_a_folder_it_did_not_make(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "data" / "demo-landing" / "traces" / "mine.jsonl"
    mine.parent.mkdir(parents=True)
    mine.write_text("{}\n")
    assert main(["demo", "--days", "1", "--traces-per-day", "20"]) == 2
    assert mine.read_text() == "{}\n" and "was not made by the demo" in capsys.readouterr().err


def test_parquet_landing_keeps_every_field(tmp_path):
    out = tmp_path / "landing"
    assert main(["generate", "--days", "1", "--traces-per-day", "200", "--end-date", "2026-11-20", "--format", "parquet", "--out", str(out)]) == 0
    feedback = pd.read_parquet(out / "feedback" / "feedback-2026-11-20.parquet")
    assert {"event_id", "trace_id", "type", "value", "reason", "comment"} <= set(feedback.columns)
    assert feedback["reason"].notna().any() and feedback["value"].notna().any()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--date", "2999-01-01"], "is not over yet"),
        (["run", "--date", "1999-01-01"], "is before the first partition"),
        (["generate", "--days", "0"], "must be at least 1"),
    ],
)
def test_dates_and_sizes_that_cannot_run_give_one_clear_line(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)


@pytest.mark.slow
def test_a_run_killed_mid_night_is_marked_failed_by_the_next_run(tmp_path):
    """SIGKILL the CLI while its run is STARTED: the run would stay STARTED forever; the next
    `feedback-loop run` marks it failed and runs the night."""
    import signal
    import sqlite3
    import time

    import dagster as dg

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_LOOP_", "DAGSTER_HOME"))}
    cli = str(Path(sys.executable).parent / "feedback-loop")
    subprocess.run([cli, "generate", "--days", "1", "--traces-per-day", "3000", "--end-date", "2026-11-20", "--out", "data/landing"], cwd=tmp_path, env=env, check=True, capture_output=True)
    home = tmp_path / "data" / "dagster_home"
    night = subprocess.Popen([cli, "run", "--date", "2026-11-20"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    started = None
    deadline = time.monotonic() + 120
    while started is None and time.monotonic() < deadline:
        time.sleep(0.2)
        # Read the run storage without opening an instance: an instance made while the CLI is still
        # creating the storage would run the same migrations at once.
        try:
            with sqlite3.connect(f"file:{home / 'history' / 'runs.db'}?mode=ro", uri=True) as db:
                row = db.execute("SELECT run_id FROM runs WHERE status = 'STARTED'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            row = None
        started = row[0] if row else None
    assert started is not None
    os.killpg(night.pid, signal.SIGKILL)
    night.wait()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(started).status == dg.DagsterRunStatus.STARTED  # as Dagster leaves it
    out = subprocess.run([cli, "run", "--date", "2026-11-20"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert f"marked 1 runs whose process had died as failed: {started}" in out and "2026-11-20: ok" in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(started).status == dg.DagsterRunStatus.FAILURE
