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

import dagster as dg
import httpx
import pandas as pd
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from feedback_loop.lib.landing import read_landing_day
from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.datasets import DatasetStoreResource
from feedback_loop.resources.sources import LandingFolder, PhoenixSource
from feedback_loop.resources.warehouse import WarehouseIOManager
from feedback_loop.sample.generator import GeneratorConfig, generate
from feedback_loop_tests.conftest import END, defs_with

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PHOENIX = Path(os.environ.get("FEEDBACK_LOOP_PHOENIX", ROOT / ".venv-phoenix" / "bin" / "phoenix"))
PROJECT = "support-bot"
DAYS = [(END - pd.Timedelta(days=n)).isoformat() for n in (1, 0)]
EXPLICIT = {"thumbs_up", "thumbs_down", "rating", "comment", "correction"}


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


def _load(url: str, work: Path, landing: Path, implicit_root: Path) -> tuple[pd.DataFrame, int]:
    """Send the landed traces to Phoenix and their explicit feedback as annotations; write the
    implicit events, with the ids Phoenix knows, to `implicit_root`. The clean landed traces back."""
    traces = pd.concat([normalize_traces(read_landing_day(str(landing), "traces", d), d).clean for d in DAYS], ignore_index=True)
    events = pd.concat([normalize_feedback(read_landing_day(str(landing), "feedback", d), d).clean for d in DAYS], ignore_index=True)
    response = httpx.post(f"{url}/v1/traces", content=_spans(traces).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=60)
    assert response.status_code == 200, response.text
    for _ in range(120):  # spans are inserted asynchronously
        listing = httpx.get(f"{url}/v1/projects/{PROJECT}/spans", params={"limit": 1000, "span_kind": "LLM"}, timeout=30)
        if listing.status_code == 200 and len(listing.json()["data"]) == len(traces):
            break
        time.sleep(0.5)
    span_of = {row.trace_id: _hex(row.span_id, 8) for row in traces.itertuples()}
    explicit = events[events["type"].isin(EXPLICIT) & events["trace_id"].isin(span_of)]
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
    implicit = events[~events["event_id"].isin(explicit["event_id"])].copy()
    implicit["trace_id"] = implicit["trace_id"].map(lambda t: _hex(t, 16) if isinstance(t, str) else None)
    implicit["span_id"] = implicit["span_id"].map(lambda s: _hex(s, 8) if isinstance(s, str) else None)
    (implicit_root / "feedback").mkdir(parents=True)
    implicit.assign(timestamp=implicit["timestamp"].map(pd.Timestamp.isoformat)).drop(columns=["partition_date", "value_num"]).to_json(
        implicit_root / "feedback" / "implicit.jsonl", orient="records", lines=True
    )
    return traces, len(explicit)


def _labels(warehouse: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(warehouse / "trace_labels" / f"{d}.parquet") for d in DAYS], ignore_index=True)


def test_nightly_pipeline_on_phoenix(phoenix, tmp_path, resources):
    url, work = phoenix
    landing = tmp_path / "landing"
    generate(landing, GeneratorConfig(days=2, traces_per_day=120, seed=11, end_date=END))
    traces, explicit = _load(url, work, landing, tmp_path / "implicit")

    on_phoenix = {
        **resources,
        "io_manager": WarehouseIOManager(root=str(tmp_path / "warehouse-phoenix")),
        "dataset_store": DatasetStoreResource(root=str(tmp_path / "datasets-phoenix")),
        "phoenix": PhoenixSource(url=url, project=PROJECT, kinds=["traces", "feedback"]),
        "landing": LandingFolder(root=str(tmp_path / "implicit"), kinds=["feedback"]),
    }
    on_files = {
        **resources,
        "io_manager": WarehouseIOManager(root=str(tmp_path / "warehouse-files")),
        "dataset_store": DatasetStoreResource(root=str(tmp_path / "datasets")),
        "landing": LandingFolder(root=str(landing)),
    }
    assert explicit > 40
    with dg.instance_for_test() as instance:
        for day in DAYS:
            assert run_nightly(day, instance, defs_with(on_phoenix)).success
        ingest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_feedback_events"), asset_partitions=[DAYS[-1]]), limit=1).records[0]
        sources = ingest.asset_materialization.metadata["sources"].value
    with dg.instance_for_test() as instance:
        for day in DAYS:
            assert run_nightly(day, instance, defs_with(on_files)).success

    got = pd.concat([pd.read_parquet(tmp_path / "warehouse-phoenix" / "raw_traces" / f"{d}.parquet") for d in DAYS], ignore_index=True)
    assert len(got) == len(traces)
    mine = traces.assign(trace_id=traces["trace_id"].map(lambda t: _hex(t, 16))).set_index("trace_id").sort_index()
    got = got.set_index("trace_id").sort_index()
    for column in ("session_id", "user_id", "model", "prompt_version", "prompt", "output", "input_tokens", "output_tokens", "timestamp"):
        pd.testing.assert_series_equal(got[column], mine[column], check_dtype=False, check_names=False)
    assert sources["phoenix"]["judgements_not_feedback"] == {"correctness": 1}
    feedback = pd.concat([pd.read_parquet(tmp_path / "warehouse-phoenix" / "raw_feedback_events" / f"{d}.parquet") for d in DAYS])
    assert feedback["event_id"].str.startswith("phoenix:").sum() == explicit

    phoenix_labels = _labels(tmp_path / "warehouse-phoenix")
    file_labels = _labels(tmp_path / "warehouse-files")
    file_labels["trace_id"] = file_labels["trace_id"].map(lambda t: _hex(t, 16))
    joined = phoenix_labels.merge(file_labels, on="trace_id", suffixes=("_phoenix", "_files"))
    assert len(joined) == len(file_labels) == len(phoenix_labels)
    assert (joined["label_phoenix"] == joined["label_files"]).all(), joined.loc[joined["label_phoenix"] != joined["label_files"], ["trace_id", "label_phoenix", "label_files"]]
    assert set(joined["label_phoenix"]) >= {"positive", "negative"}
    for dataset in ("regression_suite", "preference_dataset"):  # published from Phoenix as from the files, version for version
        versions = {store: sorted(p.parent.name for p in (tmp_path / store / dataset).glob("*/manifest.json")) for store in ("datasets-phoenix", "datasets")}
        assert versions["datasets-phoenix"] == versions["datasets"] == [f"{d}.1" for d in DAYS]
    cases = {store: (tmp_path / store / "regression_suite" / f"{DAYS[-1]}.1" / "cases.jsonl").read_text().count("\n") for store in ("datasets-phoenix", "datasets")}
    assert cases["datasets-phoenix"] == cases["datasets"] > 0
