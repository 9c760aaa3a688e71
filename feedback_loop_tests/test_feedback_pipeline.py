"""Linking, signals and labels through Dagster: late feedback, reruns, ground truth."""

import json

import dagster as dg
import pandas as pd
import pytest

from feedback_loop.lib.landing import read_landing_day
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.settings import FeedbackLoopSettings, IngestConfig
from feedback_loop.resources.sources import LandingFolder
from feedback_loop_tests.conftest import defs_with, write_jsonl

pytestmark = pytest.mark.slow  # the whole pipeline, or the benchmark

DAY = "2026-11-20"


def table(resources, asset: str, day: str) -> pd.DataFrame:
    return pd.read_parquet(resources["io_manager"].path_for(dg.AssetKey(asset), day).path)


def test_late_thumbs_down_relabels_the_trace_in_its_own_partition(tmp_path, resources):
    landing = tmp_path / "landing"
    write_jsonl(
        landing / "traces" / "t.jsonl",
        [
            {"trace_id": "x", "session_id": "s1", "timestamp": f"{DAY}T10:00:00Z", "input": "Capital of Australia?", "output": "Sydney."},
            {"trace_id": "y", "session_id": "s2", "timestamp": f"{DAY}T11:00:00Z", "input": "2+2?", "output": "4"},
        ],
    )
    write_jsonl(
        landing / "feedback" / "f1.jsonl",
        [{"event_id": "copy-x", "trace_id": "x", "timestamp": f"{DAY}T10:00:30Z", "type": "copy", "value": "Sydney."}],
    )
    quiet_days = FeedbackLoopSettings(ingest=IngestConfig(allow_empty_day=True))  # no traces after the first day
    resources = {**resources, "landing": LandingFolder(root=str(landing)), "settings": quiet_days}
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    assert run_nightly(DAY, instance, defs).success
    before = table(resources, "trace_labels", DAY).set_index("trace_id")
    assert before.loc["x", "label"] == "positive"

    late_day = "2026-11-23"
    write_jsonl(
        landing / "feedback" / "f2.jsonl",
        [{"event_id": "late-down", "trace_id": "x", "timestamp": f"{late_day}T09:00:00Z", "type": "thumbs_down", "reason": "not_factual"}],
    )
    for day in ("2026-11-21", "2026-11-22", late_day):
        assert run_nightly(day, instance, defs).success
    assert run_nightly(late_day, instance, defs).success  # a rerun changes nothing
    after = table(resources, "trace_labels", DAY)
    assert after["trace_id"].tolist() == ["x", "y"]  # no duplicate rows
    x = after.set_index("trace_id").loc["x"]
    assert x["label"] == "negative"
    assert "thumbs_down(not_factual)" in x["evidence"] and "copy:full" in x["evidence"]  # earlier evidence kept
    assert x["disagreement"]
    linked_late = table(resources, "linked_feedback", late_day)
    assert linked_late.set_index("event_id").loc["late-down", "trace_date"] == DAY


def test_labels_follow_the_generators_ground_truth(resources, generated):
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-18", "2026-11-19", "2026-11-20"):
        report = run_nightly(day, instance, defs)
        assert report.success
    labels = pd.concat(table(resources, "trace_labels", d) for d in ("2026-11-18", "2026-11-19", "2026-11-20"))
    truth = pd.DataFrame([json.loads(line) for line in (generated / "ground_truth" / "traces.jsonl").read_text().splitlines()])
    merged = labels.merge(truth, on="trace_id", validate="one_to_one")
    assert len(merged) == len(truth) == 900
    negative = merged[merged["label"] == "negative"]
    precision = (negative["mode"] != "none").mean()
    thumbed_down_bad = merged[(merged["mode"] != "none") & merged["signals"].map(lambda s: "thumbs_down" in s)]
    recall = (thumbed_down_bad["label"] == "negative").mean()
    assert precision >= 0.85, precision
    assert recall >= 0.95, recall
    positive = merged[merged["label"] == "positive"]
    assert (positive["mode"] == "none").mean() >= 0.97
    orphans = table(resources, "linked_feedback_orphans", "2026-11-20")
    injected = [json.loads(line) for line in (generated / "ground_truth" / "bad_rows.jsonl").read_text().splitlines()]
    expected = {r["event_id"] for r in injected if r["kind"] == "orphan" and r["date"] == "2026-11-20"}
    assert expected <= set(orphans["event_id"])
    events = len(read_landing_day(str(generated), "feedback", "2026-11-20"))
    linked = table(resources, "linked_feedback", "2026-11-20")
    quarantined = table(resources, "raw_feedback_events_quarantine", "2026-11-20")
    assert len(linked) + len(orphans) + len(quarantined) == events  # nothing silently dropped


def test_signals_and_labels_of_traces_without_any_linked_feedback_yet(resources):
    """Ad hoc, before any feedback day is linked: every trace gets signals and a label, none from feedback."""
    defs = defs_with(resources)
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(instance=instance, partition_key=DAY, asset_selection=[dg.AssetKey("raw_traces"), dg.AssetKey("raw_traces_quarantine")]).success
    selection = [dg.AssetKey("implicit_signals"), dg.AssetKey("trace_labels")]
    assert job.execute_in_process(instance=instance, partition_key=DAY, asset_selection=selection).success
    traces, signals, labels = (table(resources, asset, DAY) for asset in ("raw_traces", "implicit_signals", "trace_labels"))
    assert sorted(signals["trace_id"]) == sorted(traces["trace_id"].unique()) == sorted(labels["trace_id"])
    assert (signals["thumbs_up"] + signals["thumbs_down"] + signals["copy_count"]).eq(0).all() and signals["edit_class"].isna().all()


def test_feedback_after_the_late_window_is_an_orphan_of_its_own_kind_with_a_warning(tmp_path, resources):
    landing = tmp_path / "landing"
    write_jsonl(landing / "traces" / "t.jsonl", [{"trace_id": "x", "timestamp": f"{DAY}T10:00:00Z", "input": "q", "output": "a"}])
    too_late_day = "2026-11-29"  # nine days on: outside the 7-day window
    write_jsonl(
        landing / "feedback" / "f.jsonl",
        [
            {"event_id": "too-late", "trace_id": "x", "timestamp": f"{too_late_day}T09:00:00Z", "type": "thumbs_down"},
            {"event_id": "unknown", "trace_id": "nobody", "timestamp": f"{too_late_day}T09:00:00Z", "type": "thumbs_down"},
        ],
    )
    quiet_days = FeedbackLoopSettings(ingest=IngestConfig(allow_empty_day=True))
    resources = {**resources, "landing": LandingFolder(root=str(landing)), "settings": quiet_days}
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    assert run_nightly(DAY, instance, defs).success
    report = run_nightly(too_late_day, instance, defs)
    assert report.success and "linked_feedback:none_too_late" in report.summary_line()  # a warning: the night goes on
    reasons = table(resources, "linked_feedback_orphans", too_late_day).set_index("event_id")["orphan_reason"]
    assert reasons["too-late"].startswith(f"too late: its trace is of {DAY}")
    assert reasons["unknown"] == "trace_id not found among traces of the linking window"
