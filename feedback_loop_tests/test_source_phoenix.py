"""Arize Phoenix as a source, against a real `phoenix serve`: spans sent over OTLP/HTTP, user
feedback added as annotations through its REST API, implicit events from the landing folder; the
nightly pipeline on Phoenix gives the labels it gives on the same data landed as files."""

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from feedback_loop.resources.sources import LandingFolder, PhoenixSource
from feedback_loop_tests.stores import Landed, assert_same_as_files, run_nights, table, write_events

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PHOENIX = Path(os.environ.get("FEEDBACK_LOOP_PHOENIX", ROOT / ".venv-phoenix" / "bin" / "phoenix"))
PROJECT = "support-bot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """A Phoenix server on 127.0.0.1 with a temporary SQLite working dir and telemetry off."""
    if not PHOENIX.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Phoenix server at {PHOENIX}: .ci/run installs it")
        pytest.skip(f"no Phoenix server at {PHOENIX} (python3.11 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix==20.26.1)")
    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = (work / "server.log").open("wb")
    server = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/v1/projects", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                pytest.fail(f"phoenix serve exited: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail(f"phoenix serve did not answer: {(work / 'server.log').read_text()[-2000:]}")
        yield url, work
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _hex(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[: 2 * size]


def _kv(key: str, value: object) -> KeyValue:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def _spans(traces: pd.DataFrame) -> ExportTraceServiceRequest:
    """Each trace as a CHAIN root span and an OpenInference LLM span under it."""
    spans = []
    for row in traces.itertuples():
        trace_id, root, llm = bytes.fromhex(_hex(row.trace_id, 16)), bytes.fromhex(_hex(row.trace_id + "/root", 8)), bytes.fromhex(_hex(row.span_id, 8))
        end = int(row.timestamp.value)  # ns
        start = end - int(row.latency_ms * 1e6)
        messages = json.loads(row.input) if row.input and row.input.startswith("[") else [{"role": "user", "content": row.prompt}]
        attributes = [_kv("openinference.span.kind", "LLM"), _kv("llm.model_name", row.model), _kv("session.id", row.session_id), _kv("user.id", row.user_id)]
        attributes += [_kv("llm.prompt_template.version", row.prompt_version), _kv("llm.token_count.prompt", int(row.input_tokens)), _kv("llm.token_count.completion", int(row.output_tokens))]
        for i, message in enumerate(messages):
            attributes += [_kv(f"llm.input_messages.{i}.message.role", message["role"]), _kv(f"llm.input_messages.{i}.message.content", message["content"])]
        attributes += [_kv("llm.output_messages.0.message.role", "assistant"), _kv("llm.output_messages.0.message.content", row.output), _kv("metadata", row.metadata or "{}")]
        spans.append(Span(trace_id=trace_id, span_id=root, name="turn", start_time_unix_nano=start, end_time_unix_nano=end, attributes=[_kv("openinference.span.kind", "CHAIN")]))
        spans.append(Span(trace_id=trace_id, span_id=llm, parent_span_id=root, name="ChatCompletion", start_time_unix_nano=start, end_time_unix_nano=end, attributes=attributes))
    resource = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource.resource.attributes.append(_kv("openinference.project.name", PROJECT))
    return ExportTraceServiceRequest(resource_spans=[resource])


def _annotation(event: pd.Series, span_id: str) -> dict:
    kind = event["type"]
    text = {k: event[k] if isinstance(event[k], str) else None for k in ("value", "comment")}
    result = {
        "thumbs_up": {"label": "thumbs_up", "score": 1, "explanation": text["comment"]},
        "thumbs_down": {"label": "thumbs_down", "score": 0, "explanation": text["comment"]},
        "rating": {"score": event["value_num"], "explanation": text["comment"]},
        "comment": {"explanation": text["value"] or text["comment"]},
        "correction": {"explanation": text["value"]},
    }[kind]
    name = {"thumbs_up": "user_feedback", "thumbs_down": "user_feedback"}.get(kind, kind)
    metadata = {"reason": event["reason"]} if isinstance(event["reason"], str) else {}
    return {
        "span_id": span_id,
        "name": name,
        "annotator_kind": "HUMAN",
        "identifier": event["event_id"],
        "metadata": metadata,
        "result": {k: v for k, v in result.items() if v is not None and not pd.isna(v)},
    }


def _load(url: str, work: Path, data: Landed) -> None:
    """Send the landed traces to Phoenix and their explicit feedback as annotations."""
    traces, explicit = data.traces, data.explicit
    response = httpx.post(f"{url}/v1/traces", content=_spans(traces).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=60)
    assert response.status_code == 200, response.text
    for _ in range(120):  # spans are inserted asynchronously
        listing = httpx.get(f"{url}/v1/projects/{PROJECT}/spans", params={"limit": 1000, "span_kind": "LLM"}, timeout=30)
        if listing.status_code == 200 and len(listing.json()["data"]) == len(traces):
            break
        time.sleep(0.5)
    span_of = {row.trace_id: _hex(row.span_id, 8) for row in traces.itertuples()}
    annotations = [_annotation(e, span_of[e["trace_id"]]) for _, e in explicit.iterrows()]
    annotations.append({"span_id": next(iter(span_of.values())), "name": "correctness", "annotator_kind": "LLM", "identifier": "judge", "result": {"label": "correct", "score": 1}})
    for at in range(0, len(annotations), 200):
        posted = httpx.post(f"{url}/v1/span_annotations", params={"sync": "true"}, json={"data": annotations[at : at + 200]}, timeout=60)
        assert posted.status_code == 200, posted.text
    # Phoenix stamps an annotation when it is inserted; these were made when the users clicked.
    with sqlite3.connect(work / "phoenix.db") as db:
        db.executemany(
            "UPDATE span_annotations SET created_at = ?, updated_at = ? WHERE identifier = ?", [(e["timestamp"].isoformat(), e["timestamp"].isoformat(), e["event_id"]) for _, e in explicit.iterrows()]
        )


def test_nightly_pipeline_on_phoenix(files_reference, phoenix, tmp_path, resources):
    url, work = phoenix
    data = files_reference.data
    assert len(data.explicit) > 40
    _load(url, work, data)
    sources = {
        "phoenix": PhoenixSource(url=url, project=PROJECT, kinds=["traces", "feedback"]),
        "landing": LandingFolder(root=str(write_events(data.implicit, tmp_path / "app", _hex)), kinds=["feedback"]),
    }
    nights = run_nights(tmp_path, resources, "phoenix", sources)
    warehouse = nights.warehouse
    assert nights.feedback_sources["phoenix"]["judgements_not_feedback"] == {"correctness": 1}  # an LLM judge's annotation

    got = table(warehouse, "raw_traces").set_index("trace_id").sort_index()
    mine = data.traces.assign(trace_id=data.traces["trace_id"].map(lambda t: _hex(t, 16))).set_index("trace_id").sort_index()
    assert len(got) == len(mine)
    for column in ("session_id", "user_id", "model", "prompt_version", "prompt", "output", "input_tokens", "output_tokens", "timestamp"):
        pd.testing.assert_series_equal(got[column], mine[column], check_dtype=False, check_names=False)
    assert table(warehouse, "raw_feedback_events")["event_id"].str.startswith("phoenix:").sum() == len(data.explicit)
    assert_same_as_files(tmp_path, files_reference, "phoenix", trace_id=lambda t: _hex(t, 16))
