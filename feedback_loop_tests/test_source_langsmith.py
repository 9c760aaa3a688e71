"""LangSmith as a source, against a local server that implements the documented endpoints from
fixture answers over real HTTP: the API key header, project lookup, cursor and offset paging, a
429 with Retry-After, a 500 then success, malformed pages; and the nightly pipeline on it."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.lib.sources.http import SourceRejected
from feedback_loop.lib.sources.window import PullWindow, day_start
from feedback_loop.resources.sources import LandingFolder, LangsmithSource
from feedback_loop_tests.stores import assert_same_as_files, run_nights, table, write_events

FIXTURES = Path(__file__).parent / "fixtures" / "langsmith"
DAY = "2026-11-20"
WINDOW = PullWindow(DAY, day_start(DAY), day_start("2026-11-21"))
KEY = "lsv2_pt_test"
PROJECT, PROJECT_ID = "support-bot", "5f8c1d2e-7b3a-4c9d-8e1f-2a3b4c5d6e7f"


class FakeLangsmith:
    """`POST /api/v1/runs/query`, `GET /api/v1/feedback` and `GET /api/v1/sessions` over the given
    runs and feedback, as LangSmith answers them, with faults queued per path."""

    def __init__(self, runs: list[dict], feedback: list[dict], page_size: int = 2):
        self.runs, self.feedback, self.page_size = runs, feedback, page_size
        self.faults: dict[str, list[tuple[int, dict, bytes]]] = {"/api/v1/runs/query": [], "/api/v1/feedback": []}
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self, method: str) -> None:
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null") if method == "POST" else None
                query = parse_qs(url.query)
                fake.requests.append((method, url.path, query, body))
                status, headers, payload = fake.answer(method, url.path, query, body, self.headers.get("x-api-key"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                self.handle_one("GET")

            def do_POST(self):  # noqa: N802
                self.handle_one("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, query: dict, body: dict | None, key: str | None) -> tuple[int, dict, bytes]:
        if key != KEY:
            return 401, {}, b'{"detail": "Invalid token"}'
        if self.faults.get(path):
            return self.faults[path].pop(0)
        if (method, path) == ("GET", "/api/v1/sessions"):
            return 200, {}, json.dumps([{"id": PROJECT_ID, "name": PROJECT}] if query.get("name") == [PROJECT] else []).encode()
        if (method, path) == ("POST", "/api/v1/runs/query"):
            if body.get("session") != [PROJECT_ID] or body.get("run_type") != "llm":
                return 422, {}, b'{"detail": "session and run_type expected"}'
            runs = [r for r in self.runs if r.get("start_time", "") >= body["start_time"][:19]]
            at = int(body.get("cursor") or 0)
            size = min(int(body.get("limit", 100)), self.page_size)
            more = at + size < len(runs)
            return 200, {}, json.dumps({"runs": runs[at : at + size], "cursors": {"next": str(at + size) if more else None, "prev": None}, "parsed_query": None}).encode()
        if (method, path) == ("GET", "/api/v1/feedback"):
            low, high = query["min_created_at"][0], query["max_created_at"][0]
            items = [f for f in self.feedback if f["session_id"] in query["session"] and low <= f["created_at"] < high]
            offset, limit = int(query["offset"][0]), int(query["limit"][0])
            return 200, {}, json.dumps(items[offset : offset + min(limit, self.page_size)]).encode()
        return 404, {}, b'{"detail": "Not Found"}'

    def close(self):
        self.server.shutdown()


@pytest.fixture
def langsmith():
    fakes = []

    def start(runs=None, feedback=None, page_size=2):
        runs = [r for page in (1, 2) for r in json.loads((FIXTURES / f"runs_page{page}.json").read_text())["runs"]] if runs is None else runs
        feedback = json.loads((FIXTURES / "feedback.json").read_text()) if feedback is None else feedback
        fake = FakeLangsmith(runs, feedback, page_size)
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.close()


def _source(url: str, **settings) -> LangsmithSource:
    return LangsmithSource(endpoint=url, api_key=KEY, project=PROJECT, **settings)


def test_llm_runs_map_onto_the_contract_field_by_field(langsmith):
    fake = langsmith()
    fake.faults["/api/v1/runs/query"] += [(429, {"Retry-After": "0"}, b'{"detail": "Too many requests"}'), (502, {}, b"bad gateway")]
    result = normalize_traces(_source(fake.url, kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7).records, DAY)
    assert result.quarantine["reason"].tolist() == ["run has no trace_id"]
    runs = result.clean.set_index("span_id")
    assert len(runs) == 3
    r1 = runs.loc["00000000-0000-4000-8000-000000000001"]
    assert (r1["trace_id"], r1["session_id"], r1["user_id"], r1["model"], r1["prompt_version"]) == ("a1a1a1a1-0000-4000-8000-000000000001", "sess-17", "user-42", "gpt-4o-mini", "v3")
    assert json.loads(r1["input"]) == [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Capital of Australia?"}]
    assert r1["output"] == "The capital of Australia is Sydney." and r1["timestamp"] == pd.Timestamp("2026-11-20T10:00:01.25Z") and r1["latency_ms"] == 1250.0
    assert (r1["input_tokens"], r1["output_tokens"]) == (21, 9) and json.loads(r1["metadata"])["ls_provider"] == "openai"
    r2 = runs.loc["00000000-0000-4000-8000-000000000002"]
    assert (r2["prompt"], r2["output"], r2["model"], r2["session_id"]) == ("And of Canada?", "The capital of Canada is Ottawa.", "gpt-4o", "sess-17")
    r3 = runs.loc["00000000-0000-4000-8000-000000000003"]
    assert (r3["prompt"], r3["output"], r3["session_id"], r3["model"]) == ("Write a haiku about rain.", "Soft rain on the roof", "sess-20", "claude-3-5-haiku")
    posts = [body for method, path, _, body in fake.requests if path == "/api/v1/runs/query"]
    assert len(posts) == 4 and posts[2].get("cursor") is None and posts[3]["cursor"] == "2"  # the 429, the 502, then two pages
    assert posts[2]["session"] == [PROJECT_ID] and posts[2]["start_time"] == "2026-11-19T23:00:00+00:00"


def test_feedback_maps_by_key_score_value_and_correction(langsmith):
    fake = langsmith()
    pulled = _source(fake.url, kinds=["feedback"]).pull("feedback", WINDOW, "2026-01-01", 7)
    result = normalize_feedback(pulled.records, DAY)
    events = result.clean.set_index("event_id")
    down = events.loc["langsmith:f0000000-0000-4000-8000-000000000001"]
    assert (down["type"], down["span_id"], down["reason"], down["comment"]) == ("thumbs_down", "00000000-0000-4000-8000-000000000001", "not_factual", "Wrong, it is Canberra.")
    assert events.loc["langsmith:f0000000-0000-4000-8000-000000000002", "type"] == "thumbs_up"
    assert events.loc["langsmith:f0000000-0000-4000-8000-000000000003", "value_num"] == 4.0
    correction = events.loc["langsmith:f0000000-0000-4000-8000-000000000004"]
    assert (correction["type"], correction["value"]) == ("correction", "The capital of Australia is Canberra.")
    assert events.loc["langsmith:f0000000-0000-4000-8000-000000000005", "comment"] == "Nice, but too short."
    assert events.loc["langsmith:f0000000-0000-4000-8000-000000000007", "type"] == "thumbs_up"  # a value label, from the app
    assert events.loc["langsmith:f0000000-0000-4000-8000-000000000001", "timestamp"] == pd.Timestamp("2026-11-20T10:00:09Z")
    assert result.quarantine["reason"].tolist() == ["feedback names no run or trace"]
    assert pulled.metadata["judgements_not_feedback"] == {"correctness": 1}  # a model's feedback
    offsets = [q["offset"][0] for method, path, q, _ in fake.requests if path == "/api/v1/feedback"]
    assert offsets == ["0", "2", "4", "6", "8"]  # the server gives 2 a page: paging ends at the empty one


def test_bad_key_unknown_project_and_malformed_pages(langsmith):
    fake = langsmith()
    with pytest.raises(SourceRejected, match="langsmith: GET /api/v1/sessions answered 401 Unauthorized"):
        LangsmithSource(endpoint=fake.url, api_key="wrong", project=PROJECT, kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7)
    with pytest.raises(SourceRejected, match="no project named 'nope'"):
        LangsmithSource(endpoint=fake.url, api_key=KEY, project="nope", kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7)
    fake.faults["/api/v1/runs/query"].append((200, {}, b"<html>proxy error</html>"))
    fake.faults["/api/v1/feedback"].append((200, {}, b'{"detail": "not a list"}'))
    traces = normalize_traces(_source(fake.url, kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7).records, DAY)
    assert traces.quarantine["reason"].tolist() == ["runs page 1 has no runs list"]
    feedback = normalize_feedback(_source(fake.url, kinds=["feedback"]).pull("feedback", WINDOW, "2026-01-01", 7).records, DAY)
    assert feedback.quarantine["reason"].tolist() == ["feedback page at offset 0 is not a list"]


def _naive(stamp: pd.Timestamp) -> str:
    return stamp.tz_convert("UTC").tz_localize(None).isoformat(timespec="microseconds")


def _run(row) -> dict:
    messages = json.loads(row.input) if isinstance(row.input, str) and row.input.startswith("[") else [{"role": "user", "content": row.prompt}]
    return {
        "id": row.span_id,
        "trace_id": row.trace_id,
        "name": "ChatOpenAI",
        "run_type": "llm",
        "status": "success",
        "session_id": PROJECT_ID,
        "parent_run_id": None,
        "start_time": _naive(row.timestamp - pd.Timedelta(milliseconds=row.latency_ms)),
        "end_time": _naive(row.timestamp),
        "inputs": {
            "messages": [
                [
                    {
                        "lc": 1,
                        "type": "constructor",
                        "id": ["langchain", "schema", "messages", {"user": "HumanMessage", "system": "SystemMessage", "assistant": "AIMessage"}.get(m["role"], "HumanMessage")],
                        "kwargs": {"content": m["content"]},
                    }
                    for m in messages
                ]
            ]
        },
        "outputs": {"generations": [[{"text": row.output, "type": "ChatGeneration"}]]},
        "extra": {"metadata": {"ls_model_name": row.model, "thread_id": row.session_id, "user_id": row.user_id}},
        "prompt_tokens": int(row.input_tokens),
        "completion_tokens": int(row.output_tokens),
    }


def _feedback(event) -> dict:
    kind = event["type"]
    text = {k: event[k] if isinstance(event[k], str) else None for k in ("value", "comment", "reason")}
    key, score, comment, correction = {
        "thumbs_up": ("user_score", 1, text["comment"], None),
        "thumbs_down": ("user_score", 0, text["comment"], None),
        "rating": ("rating", event["value_num"], text["comment"], None),
        "comment": ("comment", None, text["value"] or text["comment"], None),
        "correction": ("correction", None, None, text["value"]),
    }[kind]
    return {
        "id": event["event_id"],
        "key": key,
        "score": score,
        "value": None,
        "comment": comment,
        "correction": correction,
        "run_id": event["span_id"] if isinstance(event["span_id"], str) else None,
        "trace_id": event["trace_id"],
        "session_id": PROJECT_ID,
        "created_at": event["timestamp"].isoformat(),
        "feedback_source": {"type": "api"},
        "extra": {"reason": text["reason"]} if text["reason"] else None,
    }


@pytest.mark.slow
def test_nightly_pipeline_on_langsmith(files_reference, langsmith, tmp_path, resources):
    data = files_reference.data
    assert len(data.explicit) > 40
    fake = langsmith([_run(r) for r in data.traces.sort_values("timestamp").itertuples()], [_feedback(e) for _, e in data.explicit.iterrows()], page_size=40)
    sources = {"langsmith": _source(fake.url, kinds=["traces", "feedback"]), "landing": LandingFolder(root=str(write_events(data.implicit, tmp_path / "app")), kinds=["feedback"])}
    warehouse = run_nights(tmp_path, resources, "langsmith", sources).warehouse
    assert len(table(warehouse, "raw_traces")) == len(data.traces)
    assert table(warehouse, "raw_feedback_events")["event_id"].str.startswith("langsmith:").sum() == len(data.explicit)
    assert_same_as_files(tmp_path, files_reference, "langsmith")


def test_bulk_export_parquet_maps_as_the_api_does(tmp_path, langsmith):
    import datetime as dt
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedback_loop.resources.sources import LangsmithExport

    runs = [r for page in (1, 2) for r in json.loads((FIXTURES / f"runs_page{page}.json").read_text())["runs"]]
    chain = dict(runs[0], id="00000000-0000-4000-8000-0000000000c1", run_type="chain", name="RunnableSequence")
    rows = [
        {
            **{k: r.get(k) for k in ("id", "trace_id", "parent_run_id", "name", "run_type", "status", "session_id", "prompt_tokens", "completion_tokens")},
            "start_time": dt.datetime.fromisoformat(r["start_time"]) if r.get("start_time") else None,
            "end_time": dt.datetime.fromisoformat(r["end_time"]) if r.get("end_time") else None,
            **{k: json.dumps(r[k]) if r.get(k) is not None else None for k in ("inputs", "outputs", "extra")},
        }
        for r in [*runs, chain]
    ]
    folder = tmp_path / "bucket" / "prefix" / f"export_id=e1/tenant_id=t1/session_id={PROJECT_ID}/runs/year=2026/month=11/day=20"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    (tmp_path / "bucket" / "prefix" / "broken.parquet").write_bytes(b"PAR1 not really")
    for path in (tmp_path / "bucket").rglob("*.parquet"):
        os.utime(path, (dt.datetime(2026, 11, 21, 1, tzinfo=dt.UTC).timestamp(),) * 2)
    pulled = LangsmithExport(root=str(tmp_path / "bucket" / "prefix"), kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7)
    exported = normalize_traces(pulled.records, DAY)
    fake = langsmith()
    api = normalize_traces(_source(fake.url, kinds=["traces"]).pull("traces", WINDOW, "2026-01-01", 7).records, DAY)
    assert pulled.metadata == {"files_read": 2}
    assert sorted(exported.quarantine["reason"].str.split(":").str[0]) == ["run has no trace_id", "unreadable Parquet file"]
    columns = ["trace_id", "span_id", "parent_span_id", "session_id", "user_id", "timestamp", "model", "prompt_version", "input", "prompt", "output", "latency_ms", "input_tokens", "output_tokens"]
    pd.testing.assert_frame_equal(exported.clean.sort_values("span_id")[columns].reset_index(drop=True), api.clean.sort_values("span_id")[columns].reset_index(drop=True))
