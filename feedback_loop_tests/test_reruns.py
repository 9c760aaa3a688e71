"""Reruns through Dagster: a date rerun any number of times, or an older date rerun after newer
ones, leaves every warehouse, dataset and state file as it was; a release that would shrink a
dataset sharply is held back."""

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from feedback_loop.defs.jobs import relabel_window
from feedback_loop.pipeline import run_nightly
from feedback_loop_tests.conftest import defs_with

DAYS = ("2026-11-18", "2026-11-19", "2026-11-20")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (the manifests' creation times aside) by its SHA-256."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        data = path.read_bytes()
        if path.name == "manifest.json":
            data = b"\n".join(line for line in data.splitlines() if b'"created_at"' not in line)
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
def test_rerunning_a_date_leaves_every_file_byte_identical_and_an_older_date_never_moves_a_dataset(resources, tmp_path):
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        assert run_nightly(day, instance, defs).success
    before = {name: snapshot(tmp_path / name) for name in ("warehouse", "datasets", "state")}
    for _ in range(2):
        report = run_nightly(DAYS[-1], instance, defs)
        assert report.success, report.summary_line()
    assert {name: snapshot(tmp_path / name) for name in ("warehouse", "datasets", "state")} == before
    for day in (DAYS[0], DAYS[1], DAYS[0]):  # older nights after newer ones: their windows are recomputed to what they were, no dataset moves back
        report = run_nightly(day, instance, defs)
        assert report.success, report.summary_line()
    assert {name: snapshot(tmp_path / name) for name in ("warehouse", "datasets", "state")} == before


@pytest.mark.slow
def test_a_release_that_would_shrink_a_dataset_sharply_is_held_back(resources, generated, tmp_path):
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        assert run_nightly(day, instance, defs).success
    store = resources["dataset_store"].store()
    latest = {dataset: store.latest(dataset) for dataset in ("regression_suite", "preference_dataset")}
    users = pd.concat([pd.read_json(path, lines=True)["user_id"] for path in (generated / "traces").glob("*.jsonl")]).dropna().unique()
    (tmp_path / "opt_out.txt").write_text("\n".join(users[: len(users) * 9 // 10]) + "\n")  # nine users in ten opt out
    report = run_nightly("2026-11-20", instance, defs)
    assert not report.success
    assert "regression_suite:not_shrunk" in report.summary_line() and "blocking" in report.summary_line()
    assert {dataset: store.latest(dataset) for dataset in latest} == latest  # nothing moved


@pytest.mark.slow
def test_one_relabel_run_over_all_the_days_derives_what_the_nightly_runs_derived(resources, tmp_path):
    """A backfill in one run (one window over every day) gives each trace day what its nightly runs
    gave: every day's figures come from the days ending on it, not from the run's window."""
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        assert run_nightly(day, instance, defs).success
    nightly = {name: snapshot(tmp_path / name) for name in ("warehouse", "state")}
    derived = [folder for folder in (tmp_path / "warehouse").iterdir() if not folder.name.startswith(("raw_", "linked_feedback"))]  # the ingest runs' outputs stay
    assert {"negative_traces", "error_modes", "error_mode_clusters", "trace_labels"} <= {folder.name for folder in derived}
    for folder in [*derived, tmp_path / "state"]:
        shutil.rmtree(folder)
    start, end = relabel_window(DAYS[0])[0], DAYS[-1]
    result = defs.resolve_job_def("relabel_job").execute_in_process(
        instance=instance, tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}, raise_on_error=False
    )
    assert result.success
    assert {name: snapshot(tmp_path / name) for name in ("warehouse", "state")} == nightly
