"""Langfuse's blob-storage export as a source: only files a manifest lists, windows that overlap,
JSONL, gzip and Parquet, a local folder and an fsspec URL."""

import datetime as dt
import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.lib.sources.window import PullWindow, day_start
from feedback_loop.resources.sources import LangfuseExport

FIXTURES = Path(__file__).parent / "fixtures" / "langfuse_export"
DAY = "2026-11-20"
WINDOW = PullWindow(DAY, day_start(DAY), day_start("2026-11-21"))
WRITTEN = dt.datetime(2026, 11, 20, 12, 5, tzinfo=dt.UTC).timestamp()


def _export(tmp_path: Path) -> Path:
    root = tmp_path / "exports"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("README.md"))
    for path in root.rglob("*"):
        os.utime(path, (WRITTEN, WRITTEN))
    return root


def _pull(root: str, kind: str, window: PullWindow = WINDOW):
    pulled = LangfuseExport(root=root, project_id="cm3proj0001", kinds=[kind]).pull(kind, window, "2026-01-01", 7)
    return (normalize_traces if kind == "traces" else normalize_feedback)(pulled.records, window.day), pulled.metadata


def test_enriched_observations_map_field_by_field(tmp_path):
    traces, metadata = _pull(str(_export(tmp_path)), "traces")
    assert sorted(traces.clean["span_id"]) == ["obs-1", "obs-3"] and traces.duplicates == 1  # the SPAN is no generation; obs-3 is in two windows
    assert traces.quarantine["reason"].tolist() == ["malformed JSON"]
    a1 = traces.clean.set_index("span_id").loc["obs-1"]
    assert (a1["trace_id"], a1["session_id"], a1["user_id"], a1["model"], a1["prompt_version"]) == ("trace-a1", "sess-17", "user-42", "gpt-4o-mini", "qa-answer@3")
    assert pd.isna(a1["parent_span_id"])  # exported as an empty string at the root
    assert a1["timestamp"] == pd.Timestamp("2026-11-20T10:00:01.25Z") and a1["latency_ms"] == 1250.0  # from the times, whatever unit `latency` has
    assert a1["prompt"] == "Capital of Australia?" and a1["output"] == "The capital of Australia is Sydney." and (a1["input_tokens"], a1["output_tokens"]) == (21, 9)
    b1 = traces.clean.set_index("span_id").loc["obs-3"]
    assert (b1["prompt"], b1["output"], b1["latency_ms"]) == ("Write a haiku about rain.", "Soft rain on the roof", 900.0)
    assert metadata == {"export_runs_read": 2, "files_read": 2}


def test_scores_map_and_only_listed_files_are_read(tmp_path):
    feedback, metadata = _pull(str(_export(tmp_path)), "feedback")
    events = feedback.clean.set_index("event_id")
    assert "langfuse:score-9" not in events.index  # in a file no manifest lists yet
    down = events.loc["langfuse:score-1"]
    assert (down["type"], down["trace_id"], down["comment"], down["timestamp"]) == ("thumbs_down", "trace-a1", "Wrong, it is Canberra.", pd.Timestamp("2026-11-20T10:00:09Z"))
    assert (events.loc["langfuse:score-2", "type"], events.loc["langfuse:score-2", "span_id"]) == ("thumbs_up", "obs-1")
    assert (events.loc["langfuse:score-3", "type"], events.loc["langfuse:score-3", "reason"]) == ("comment", "too_short")
    assert events.loc["langfuse:score-4", "comment"] == "Nice, but too short."
    assert metadata["judgements_not_feedback"] == {"hallucination": 1, "user-feedback": 1}  # a judge; an experiment run
    later = PullWindow("2026-11-22", day_start("2026-11-22"), day_start("2026-11-23"))
    assert _pull(str(_export(tmp_path / "again")), "feedback", later)[1]["export_runs_read"] == 0  # runs written before the window


def test_gzip_and_parquet_exports_on_an_fsspec_url(tmp_path):
    source = _export(tmp_path) / "cm3proj0001"
    target = UPath("memory://bucket/exports/cm3proj0001")
    rows = [json.loads(line) for name in sorted((source / "observations_v2").iterdir()) for line in name.read_text().splitlines() if line.startswith("{") and line.endswith("}")]
    buffer = pa.BufferOutputStream()
    flat = [{**r, "metadata": json.dumps(r["metadata"]), "cost_details": json.dumps(r["cost_details"]), "tool_definitions": "{}", "latency": float(r["latency"]), "usage_details": None} for r in rows]
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "usage_details"} for r in flat])
    table = table.append_column("usage_details", pa.array([list(r["usage_details"].items()) for r in rows], pa.map_(pa.string(), pa.int64())))
    pq.write_table(table, buffer)  # typed columns as Parquet has them: usage as a map
    (target / "observations_v2").mkdir(parents=True, exist_ok=True)
    (target / "observations_v2" / "2026-11-20T11-00-00Z.parquet").write_bytes(buffer.getvalue().to_pybytes())
    (target / "scores").mkdir(parents=True, exist_ok=True)
    (target / "scores" / "2026-11-20T12-00-00Z.jsonl.gz").write_bytes(gzip.compress((source / "scores" / "2026-11-20T12-00-00Z.jsonl").read_bytes()))
    (target / "manifests").mkdir(parents=True, exist_ok=True)  # a store without modification times: the name's time counts
    (target / "manifests" / "2026-11-20T12-00-00Z.json").write_text(json.dumps({"files": ["observations_v2/2026-11-20T11-00-00Z.parquet", "scores/2026-11-20T12-00-00Z.jsonl.gz"]}))
    traces, _ = _pull("memory://bucket/exports", "traces")
    assert sorted(traces.clean["span_id"]) == ["obs-1", "obs-3"] and traces.clean.set_index("span_id").loc["obs-1", "input_tokens"] == 21
    feedback, _ = _pull("memory://bucket/exports", "feedback")
    assert len(feedback.clean) == 4


def test_an_export_in_an_s3_bucket(tmp_path, s3):
    s3.create_bucket(Bucket="exports")
    local = _export(tmp_path)
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "exports", f"langfuse/{path.relative_to(local)}")
    traces, metadata = _pull("s3://exports/langfuse", "traces")
    assert sorted(traces.clean["span_id"]) == ["obs-1", "obs-3"] and metadata == {"export_runs_read": 2, "files_read": 2}
    feedback, _ = _pull("s3://exports/langfuse", "feedback")
    assert sorted(feedback.clean["event_id"]) == ["langfuse:score-1", "langfuse:score-2", "langfuse:score-3", "langfuse:score-4"]
