"""OTLP trace exports (OpenInference and GenAI conventions) mapped onto the contract, field by field."""

import datetime as dt
import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import zstandard
from google.protobuf.json_format import Parse
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.lib.sources.window import PullWindow, day_start
from feedback_loop.resources.sources import OtlpFiles

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
DAY = "2026-11-20"
WINDOW = PullWindow(DAY, day_start(DAY), day_start(DAY) + dt.timedelta(days=1))
WRITTEN = dt.datetime(2026, 11, 21, 0, 30, tzinfo=dt.UTC).timestamp()  # the night after the day, like a rotated export


def _folder(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "otlp"
    root.mkdir()
    for name in names:
        shutil.copy(FIXTURES / name, root / name)
        os.utime(root / name, (WRITTEN, WRITTEN))
    return root


def _pull(root: Path, kind: str, window: PullWindow = WINDOW):
    pulled = OtlpFiles(root=str(root), kinds=[kind]).pull(kind, window, "2026-01-01", 7)
    normalize = normalize_traces if kind == "traces" else normalize_feedback
    return normalize(pulled.records, window.day), pulled.metadata


def test_openinference_spans_map_field_by_field(tmp_path):
    root = _folder(tmp_path, "openinference.jsonl")
    traces, metadata = _pull(root, "traces")
    assert len(traces.clean) == 1 and traces.quarantine.empty  # the CHAIN and TOOL spans are not LLM calls
    row = traces.clean.iloc[0]
    assert row["trace_id"] == "5b8aa5a2d2c872e8321cf37308d69df2" and row["span_id"] == "5fb397be34d26b51"
    assert row["parent_span_id"] == "051581bf3cb55c13"
    assert row["session_id"] == "sess-17" and row["user_id"] == "user-42"
    assert row["timestamp"] == pd.Timestamp("2026-11-20T10:00:01.250Z")
    assert row["latency_ms"] == 1250.0
    assert row["model"] == "gpt-4o-mini-2024-07-18" and row["prompt_version"] == "v3"
    assert json.loads(row["input"]) == [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Capital of Australia?"}]
    assert row["prompt"] == "Capital of Australia?"
    assert row["output"] == "The capital of Australia is Sydney."
    assert (row["input_tokens"], row["output_tokens"]) == (21, 9)
    meta = json.loads(row["metadata"])
    assert meta["tenant"] == "acme" and meta["service"] == "support-bot" and meta["environment"] == "production" and meta["provider"] == "openai"
    assert metadata["spans_not_llm"] == 3 and metadata["files_read"] == 1


def test_openinference_annotations_and_carrier_spans_become_feedback(tmp_path):
    root = _folder(tmp_path, "openinference.jsonl")
    feedback, metadata = _pull(root, "feedback")
    assert feedback.quarantine.empty
    events = feedback.clean.set_index("type")
    down = events.loc["thumbs_down"]
    assert down["event_id"] == "otel:5b8aa5a2d2c872e8321cf37308d69df2:5fb397be34d26b51:annotation.0"
    assert (down["trace_id"], down["span_id"]) == ("5b8aa5a2d2c872e8321cf37308d69df2", "5fb397be34d26b51")
    assert down["reason"] == "not_factual" and down["comment"] == "Wrong, it is Canberra."
    rating = events.loc["rating"]  # on a carrier span of another trace, linked to the LLM span
    assert (rating["trace_id"], rating["span_id"]) == ("5b8aa5a2d2c872e8321cf37308d69df2", "5fb397be34d26b51")
    assert rating["value_num"] == 2.0 and rating["timestamp"] == pd.Timestamp("2026-11-20T10:05:00Z")
    assert metadata["judgements_not_feedback"] == {"correctness": 1}  # an LLM judge's annotation is not user feedback


def test_genai_conventions_with_base64_ids(tmp_path):
    root = _folder(tmp_path, "genai.json")
    traces, _ = _pull(root, "traces")
    row = traces.clean.iloc[0]
    assert len(traces.clean) == 1
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and row["span_id"] == "00f067aa0ba902b7"
    assert row["model"] == "gpt-4.1-2025-04-14" and row["session_id"] == "conv-9" and row["user_id"] == "traveller-3"
    assert json.loads(row["input"]) == [{"role": "system", "content": "You plan trips."}, {"role": "user", "content": "Weather in Paris tomorrow?"}]
    assert row["output"] == "Sunny, 21 °C." and (row["input_tokens"], row["output_tokens"]) == (40, 12)
    assert row["timestamp"] == pd.Timestamp("2026-11-20T23:59:59.800Z")
    feedback, _ = _pull(root, "feedback")
    event = feedback.clean.iloc[0]
    assert event["type"] == "thumbs_up" and event["span_id"] == "00f067aa0ba902b7"
    assert event["timestamp"] == pd.Timestamp("2026-11-20T23:59:59.900Z")


def test_protobuf_gzip_and_zstd_exports_read_as_json_does(tmp_path):
    expected = _pull(_folder(tmp_path, "openinference.jsonl", "genai.json"), "traces")[0].clean
    root = tmp_path / "encoded"
    root.mkdir()
    messages = [Parse(line, TracesData()).SerializeToString() for line in (FIXTURES / "openinference.jsonl").read_text().splitlines()]
    messages.append(Parse((FIXTURES / "genai.json").read_text(), TracesData()).SerializeToString())
    framed = b"".join(len(m).to_bytes(4, "big") + m for m in messages)  # the file exporter's `format: proto`
    (root / "traces.pb.zst").write_bytes(zstandard.ZstdCompressor().compress(framed))
    (root / "single.binpb.gz").write_bytes(gzip.compress(messages[0]))  # one message, no size prefix
    for path in root.iterdir():
        os.utime(path, (WRITTEN, WRITTEN))
    got = _pull(root, "traces")[0]
    assert got.duplicates == 1  # the single message repeats a span of the framed file
    deduped = got.clean
    columns = ["trace_id", "span_id", "parent_span_id", "session_id", "user_id", "timestamp", "model", "input", "output", "latency_ms", "input_tokens", "output_tokens"]
    pd.testing.assert_frame_equal(deduped.sort_values("span_id")[columns].reset_index(drop=True), expected.sort_values("span_id")[columns].reset_index(drop=True))


def test_malformed_exports_are_quarantined_with_a_reason(tmp_path):
    root = _folder(tmp_path, "malformed.jsonl", "openinference.jsonl")
    (root / "broken.pb").write_bytes(b"\x00\x00\x00\x05abc")  # says 5 bytes, holds 3
    (root / "notgzip.json.gz").write_bytes(b"\x1f\x8bnot really")
    for path in root.iterdir():
        os.utime(path, (WRITTEN, WRITTEN))
    late = PullWindow("2026-11-21", day_start("2026-11-21"), day_start("2026-11-22"))  # the files were written on the 21st: their problems belong there
    traces, _ = _pull(root, "traces", late)
    reasons = sorted(traces.quarantine["reason"])
    assert any(r.startswith("traceId is neither hex nor base64") for r in reasons)
    assert "spanId is all zeros" in reasons
    assert any(r.startswith("startTimeUnixNano is not a number") for r in reasons)
    assert "malformed JSON" in reasons and "not an OTLP TracesData object (no resourceSpans list)" in reasons
    assert any(r.startswith("not an OTLP protobuf TracesData message") for r in reasons)
    assert any(r.startswith("unreadable file") for r in reasons)
    assert traces.clean.empty  # the fixtures' good spans are of the 20th
    on_day, _ = _pull(root, "traces")
    assert "input_tokens is negative" in set(on_day.quarantine["reason"])  # a span of the day with a bad value
    assert len(on_day.clean) == 1 and not on_day.quarantine["reason"].str.contains("zeros").any()  # unreadable spans count once, on the file's day
    feedback, _ = _pull(root, "feedback")
    assert any(r.startswith("annotation 'user_feedback' is neither positive nor negative") for r in feedback.quarantine["reason"])


def test_files_written_before_the_window_are_not_read_again(tmp_path):
    root = _folder(tmp_path, "openinference.jsonl")
    next_week = PullWindow("2026-11-27", day_start("2026-11-27"), day_start("2026-11-28"))
    _, metadata = _pull(root, "traces", next_week)
    assert metadata["files_read"] == 0


def test_every_otlp_attribute_value_kind_is_read():
    from feedback_loop.lib.sources.spans import BadSpan, otlp_attributes

    pairs = [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},  # 64-bit, as a JSON string
        {"key": "d", "value": {"doubleValue": 0.5}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "p"}, {"intValue": 2}]}}},
        {"key": "k", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"stringValue": "v"}}]}}},
        {"key": "y", "value": {"bytesValue": "AAE="}},
        {"key": "empty", "value": {}},
    ]
    assert otlp_attributes(pairs) == {"s": "x", "i": 9007199254740993, "d": 0.5, "b": True, "a": ["p", 2], "k": {"inner": "v"}, "y": "AAE=", "empty": None}
    with pytest.raises(BadSpan, match="attribute 'n' is unreadable"):
        otlp_attributes([{"key": "n", "value": {"intValue": "twelve"}}])
    with pytest.raises(BadSpan, match="unknown type 'mapValue'"):
        otlp_attributes([{"key": "m", "value": {"mapValue": {}}}])


def test_genai_evaluation_results_as_log_records(tmp_path):
    root = _folder(tmp_path, "genai-evaluations.jsonl")
    feedback, _ = _pull(root, "feedback")
    assert len(feedback.clean) == 1
    event = feedback.clean.iloc[0]
    assert (event["type"], event["value_num"], event["comment"]) == ("rating", 4.0, "Good, but say where.")
    assert (event["trace_id"], event["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert event["timestamp"] == pd.Timestamp("2026-11-20T12:00:05Z")
    assert event["event_id"] == "otel:4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:log:2026-11-20T12:00:05+00:00:rating"
    late = PullWindow("2026-11-21", day_start("2026-11-21"), day_start("2026-11-22"))  # the file's day
    assert _pull(root, "feedback", late)[0].quarantine["reason"].tolist() == ["evaluation result names no span (traceId and spanId)"]
    traces, metadata = _pull(root, "traces")
    assert traces.clean.empty and traces.quarantine.empty and metadata["spans_not_llm"] == 0
