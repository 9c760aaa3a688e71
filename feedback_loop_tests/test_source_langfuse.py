"""Langfuse as a source, against a local server that implements the two documented read
endpoints from fixture pages over real HTTP: Basic auth, cursor paging, window filters, limits,
a 429 with Retry-After, a 500 then success, malformed pages; and the nightly pipeline on it."""

import base64
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
from feedback_loop.resources.sources import LandingFolder, LangfuseSource
from feedback_loop_tests.stores import DAYS, assert_same_as_files, run_nights, table, write_events

FIXTURES = Path(__file__).parent / "fixtures" / "langfuse"
DAY = "2026-11-20"
WINDOW = PullWindow(DAY, day_start(DAY), day_start("2026-11-21"))
KEYS = ("pk-lf-test", "sk-lf-test")


class FakeLangfuse:
    """`GET /api/public/v2/observations` and `GET /api/public/v3/scores` over the given items,
    as Langfuse answers them: Basic auth, the window filters, `limit` bounds, `meta.cursor` paging
    (an offset, base64url), and faults queued per endpoint."""

    def __init__(self, observations: list[dict], scores: list[dict], page_size: int = 2):
        self.items = {"/api/public/v2/observations": observations, "/api/public/v3/scores": scores}
        self.page_size = page_size
        self.faults: dict[str, list[tuple[int, dict, bytes]]] = {path: [] for path in self.items}
        self.requests: list[tuple[str, dict, dict]] = []
        self.datasets: dict[str, dict] = {}  # what was written back, by name / id, as Langfuse keeps it
        self.dataset_items: dict[str, dict] = {}
        self.scores: dict[str, dict] = {}
        self.posts = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, query, dict(self.headers)))
                status, headers, body = fake.answer(url.path, query, self.headers.get("Authorization"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                status, payload = fake.write(urlparse(self.path).path, body, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def write(self, path: str, body: dict, auth: str | None) -> tuple[int, bytes]:
        """The three write endpoints, upserting as Langfuse does: datasets by name, items and
        scores by id (an item's id may not move to another dataset)."""
        if auth != "Basic " + base64.b64encode(":".join(KEYS).encode()).decode():
            return 401, b'{"message": "Invalid credentials"}'
        self.posts += 1
        if path == "/api/public/v2/datasets":
            self.datasets.setdefault(body["name"], body)
            return 200, json.dumps({"id": body["name"], **body}).encode()
        if path == "/api/public/dataset-items":
            known = self.dataset_items.get(body.get("id"), {})
            if known and known["datasetName"] != body["datasetName"] or body["datasetName"] not in self.datasets:
                return 400, b'{"message": "dataset item id belongs to another dataset, or no such dataset"}'
            self.dataset_items[body["id"]] = {**known, **body}
            return 200, json.dumps(self.dataset_items[body["id"]]).encode()
        if path == "/api/public/scores":
            if not body.get("name") or body.get("value") is None:
                return 400, b'{"message": "name and value are required"}'
            self.scores[body["id"]] = body
            return 200, json.dumps({"id": body["id"]}).encode()
        return 404, b'{"message": "Not found"}'

    def answer(self, path: str, query: dict, auth: str | None) -> tuple[int, dict, bytes]:
        if auth != "Basic " + base64.b64encode(":".join(KEYS).encode()).decode():
            return 401, {}, json.dumps({"message": "Invalid credentials"}).encode()
        if path not in self.items:
            return 404, {}, b'{"message": "Not found"}'
        if self.faults[path]:
            return self.faults[path].pop(0)
        limit = int(query.get("limit", 50))
        if limit > (1000 if "observations" in path else 100):
            return 400, {}, json.dumps({"message": f"limit {limit} is too large"}).encode()
        stamp, lower, upper = ("startTime", "fromStartTime", "toStartTime") if "observations" in path else ("timestamp", "fromTimestamp", "toTimestamp")
        items = [i for i in self.items[path] if query[lower] <= i.get(stamp, "") < query[upper]]
        if "observations" in path and query.get("type"):
            items = [i for i in items if i.get("type") == query["type"]]
        at = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if "cursor" in query else 0
        size = min(limit, self.page_size)
        meta = {"limit": limit} | ({"cursor": base64.urlsafe_b64encode(str(at + size).encode()).decode()} if at + size < len(items) else {})
        return 200, {}, json.dumps({"data": items[at : at + size], "meta": meta}).encode()

    def close(self):
        self.server.shutdown()


def _fixture_items(name: str) -> list[dict]:
    return [item for page in (1, 2) for item in json.loads((FIXTURES / f"{name}_page{page}.json").read_text())["data"]]


@pytest.fixture
def langfuse():
    fakes = []

    def start(observations=None, scores=None, page_size=2):
        fake = FakeLangfuse(_fixture_items("observations") if observations is None else observations, _fixture_items("scores") if scores is None else scores, page_size)
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.close()


def _source(url: str, **settings) -> LangfuseSource:
    return LangfuseSource(host=url, public_key=KEYS[0], secret_key=KEYS[1], **settings)


def test_generations_map_onto_the_contract_field_by_field(langfuse):
    fake = langfuse()
    fake.faults["/api/public/v2/observations"].append((429, {"Retry-After": "0"}, b'{"message": "rate limited"}'))
    fake.faults["/api/public/v2/observations"].append((500, {}, b"boom"))
    pulled = _source(fake.url, kinds=["traces"])
    result = normalize_traces(pulled.pull("traces", WINDOW, "2026-01-01", 7).records, DAY)
    assert sorted(result.clean["span_id"]) == ["obs-1", "obs-2", "obs-3"]
    assert result.quarantine["reason"].tolist() == ["observation has no traceId"]
    a1 = result.clean.set_index("span_id").loc["obs-1"]
    assert (a1["trace_id"], a1["parent_span_id"], a1["session_id"], a1["user_id"]) == ("trace-a1", "span-root-a1", "sess-17", "user-42")
    assert a1["timestamp"] == pd.Timestamp("2026-11-20T10:00:01.250Z") and a1["latency_ms"] == 1250.0
    assert a1["model"] == "gpt-4o-mini" and a1["prompt_version"] == "qa-answer@3"
    assert json.loads(a1["input"])[1] == {"role": "user", "content": "Capital of Australia?"} and a1["prompt"] == "Capital of Australia?"
    assert a1["output"] == "The capital of Australia is Sydney." and (a1["input_tokens"], a1["output_tokens"]) == (21, 9)
    meta = json.loads(a1["metadata"])
    assert meta["tenant"] == "acme" and meta["environment"] == "production" and meta["name"] == "chat-completion"
    a2 = result.clean.set_index("span_id").loc["obs-2"]
    assert a2["prompt"] == "And of Canada?" and a2["output"] == "The capital of Canada is Ottawa."
    b1 = result.clean.set_index("span_id").loc["obs-3"]
    assert b1["prompt"] == "Write a haiku about rain." and b1["output"] == "Soft rain on the roof" and (b1["input_tokens"], b1["output_tokens"]) == (7, 6)
    calls = [q for path, q, _ in fake.requests if path.endswith("observations")]
    assert len(calls) == 4  # the 429, the 500, then two pages
    assert calls[0]["fromStartTime"] == "2026-11-19T23:00:00Z" and calls[0]["toStartTime"] == "2026-11-21T00:00:00Z"
    assert calls[0]["type"] == "GENERATION" and calls[0]["parseIoAsJson"] == "true" and "io" in calls[0]["fields"].split(",")
    assert "cursor" not in calls[2] and calls[3]["cursor"]


def test_scores_map_by_data_type_and_subject(langfuse):
    fake = langfuse()
    pulled = _source(fake.url, kinds=["feedback"]).pull("feedback", WINDOW, "2026-01-01", 7)
    result = normalize_feedback(pulled.records, DAY)
    events = result.clean.set_index("event_id")
    down = events.loc["langfuse:score-1"]
    assert (down["type"], down["trace_id"], down["reason"], down["comment"]) == ("thumbs_down", "trace-a1", "not_factual", "Wrong, it is Canberra.")
    up = events.loc["langfuse:score-2"]
    assert (up["type"], up["trace_id"], up["span_id"]) == ("thumbs_up", "trace-a2", "obs-2")
    assert (events.loc["langfuse:score-3", "type"], events.loc["langfuse:score-3", "value_num"]) == ("rating", 4.0)
    assert (events.loc["langfuse:score-4", "type"], events.loc["langfuse:score-4", "reason"]) == ("comment", "formatting")
    assert events.loc["langfuse:score-5", "comment"] == "Nice, but too short."
    correction = events.loc["langfuse:score-6"]
    assert (correction["type"], correction["value"], correction["span_id"]) == ("correction", "The capital of Australia is Canberra.", "obs-1")
    session = events.loc["langfuse:score-8"]
    assert (session["type"], session["session_id"]) == ("thumbs_up", "sess-17") and pd.isna(session["trace_id"])
    assert events.loc["langfuse:score-1", "timestamp"] == pd.Timestamp("2026-11-20T10:00:09Z")
    assert pulled.metadata["judgements_not_feedback"] == {"hallucination": 1, "user-feedback": 1}  # an LLM judge; an experiment run
    assert result.quarantine["reason"].str.startswith("annotation 'thumbs' is neither positive nor negative").tolist() == [True]
    calls = [q for path, q, _ in fake.requests if path.endswith("scores")]
    assert all(q["limit"] == "100" and q["fields"] == "details,subject" for q in calls) and len(calls) == 5
    assert calls[0]["fromTimestamp"] == "2026-11-20T00:00:00Z" and calls[0]["toTimestamp"] == "2026-11-21T00:00:00Z"


def test_a_malformed_page_is_quarantined_and_bad_keys_fail_naming_the_path(langfuse):
    fake = langfuse()
    fake.faults["/api/public/v3/scores"].append((200, {}, b'{"data": "not a list"}'))
    pulled = _source(fake.url, kinds=["feedback"]).pull("feedback", WINDOW, "2026-01-01", 7)
    assert normalize_feedback(pulled.records, DAY).quarantine["reason"].tolist() == ["scores page 1 has no data list"]
    wrong = LangfuseSource(host=fake.url, public_key="pk", secret_key="wrong", kinds=["traces"])
    with pytest.raises(SourceRejected, match="langfuse: GET /api/public/v2/observations answered 401 Unauthorized") as err:
        wrong.pull("traces", WINDOW, "2026-01-01", 7)
    assert "wrong" not in str(err.value)


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _generation(row) -> dict:
    """A landed trace as Langfuse gives the generation."""
    end = row.timestamp
    messages = json.loads(row.input) if isinstance(row.input, str) and row.input.startswith("[") else row.prompt
    return {
        "id": row.span_id,
        "traceId": row.trace_id,
        "startTime": _iso(end - pd.Timedelta(milliseconds=row.latency_ms)),
        "endTime": _iso(end),
        "projectId": "p1",
        "parentObservationId": None,
        "type": "GENERATION",
        "name": "chat",
        "level": "DEFAULT",
        "environment": "production",
        "userId": row.user_id,
        "sessionId": row.session_id,
        "input": messages,
        "output": {"role": "assistant", "content": row.output},
        "metadata": json.loads(row.metadata) if isinstance(row.metadata, str) else {},
        "providedModelName": row.model,
        "usageDetails": {"input": int(row.input_tokens), "output": int(row.output_tokens)},
        "latency": row.latency_ms / 1000,
    }


def _score(event) -> dict:
    """A landed explicit event as the Langfuse score the app would have posted."""
    kind = event["type"]
    name, data_type, value = {
        "thumbs_up": ("user-feedback", "NUMERIC", 1),
        "thumbs_down": ("user-feedback", "NUMERIC", 0),
        "rating": ("rating", "NUMERIC", event["value_num"]),
        "comment": ("comment", "TEXT", event["value"] if isinstance(event["value"], str) else event["comment"]),
        "correction": ("correction", "CORRECTION", event["value"]),
    }[kind]
    subject = {"kind": "observation", "id": event["span_id"], "traceId": event["trace_id"]} if isinstance(event["span_id"], str) else {"kind": "trace", "id": event["trace_id"]}
    comment = event["comment"] if isinstance(event["comment"], str) and kind != "comment" else None
    return {
        "id": event["event_id"],
        "projectId": "p1",
        "name": name,
        "value": value,
        "dataType": data_type,
        "source": "API",
        "timestamp": _iso(event["timestamp"]),
        "environment": "production",
        "createdAt": _iso(event["timestamp"]),
        "updatedAt": _iso(event["timestamp"]),
        "comment": comment,
        "configId": None,
        "metadata": {"reason": event["reason"]} if isinstance(event["reason"], str) else {},
        "subject": subject,
    }


@pytest.mark.slow
def test_nightly_pipeline_on_langfuse(files_reference, langfuse, tmp_path, resources):
    data = files_reference.data
    assert len(data.explicit) > 40
    fake = langfuse([_generation(r) for r in data.traces.itertuples()], [_score(e) for _, e in data.explicit.iterrows()], page_size=50)
    sources = {
        "langfuse": _source(fake.url, kinds=["traces", "feedback"], write_back=True, dataset_name="support-bot-regressions"),
        "landing": LandingFolder(root=str(write_events(data.implicit, tmp_path / "app")), kinds=["feedback"]),
    }
    warehouse = run_nights(tmp_path, resources, "langfuse", sources).warehouse
    assert len(table(warehouse, "raw_traces")) == len(data.traces)
    assert table(warehouse, "raw_feedback_events")["event_id"].str.startswith("langfuse:").sum() == len(data.explicit)
    linked = table(warehouse, "linked_feedback")
    assert set(linked.loc[linked["event_id"].str.startswith("langfuse:"), "link_method"]) <= {"by_span", "by_trace"}
    assert_same_as_files(tmp_path, files_reference, "langfuse")

    # Written back: the newest suite version as the dataset, one error-mode score per negative trace.
    latest = (tmp_path / "datasets-langfuse" / "regression_suite" / "LATEST").read_text().strip()
    cases = [json.loads(line)["case_id"] for line in (tmp_path / "datasets-langfuse" / "regression_suite" / latest / "cases.jsonl").read_text().splitlines()]
    assert set(fake.dataset_items) == set(cases) and {i["status"] for i in fake.dataset_items.values()} == {"ACTIVE"} and set(fake.datasets) == {"support-bot-regressions"}
    assert all(i["sourceTraceId"] and i["input"]["messages"] for i in fake.dataset_items.values())
    modes = table(warehouse, "error_modes")
    assert len(fake.scores) == modes["trace_id"].nunique() > 0
    last = modes.sort_values("partition_date").drop_duplicates("trace_id", keep="last").set_index("trace_id")
    assert all(fake.scores[f"feedback-loop:error-mode:{t}"]["value"] == last.loc[t, "mode"] for t in last.index)
    assert all(s["dataType"] == "CATEGORICAL" and s["name"] == "error_mode" for s in fake.scores.values())
    items, scores, posts = dict(fake.dataset_items), dict(fake.scores), fake.posts
    run_nights(tmp_path, resources, "langfuse", sources, days=DAYS[-1:])  # the last night runs again: everything is written again
    assert fake.posts > posts and fake.dataset_items == items and fake.scores == scores  # and nothing is added or changed


def test_write_back_archives_cases_that_left_the_suite(langfuse):
    from feedback_loop.lib.sources.langfuse_write_back import write_suite

    fake = langfuse()
    http = _source(fake.url).client()
    item = lambda case: {"id": case, "input": {"messages": [{"role": "user", "content": case}]}, "expectedOutput": None, "metadata": {}, "sourceTraceId": "t", "sourceObservationId": "s"}  # noqa: E731
    assert write_suite(http, "suite", [item("case-1"), item("case-2")], []) == {"items_upserted": 2, "items_archived": 0}
    assert write_suite(http, "suite", [item("case-2"), item("case-3")], ["case-1"]) == {"items_upserted": 2, "items_archived": 1}
    assert {k: v["status"] for k, v in fake.dataset_items.items()} == {"case-1": "ARCHIVED", "case-2": "ACTIVE", "case-3": "ACTIVE"}
    assert fake.dataset_items["case-1"]["input"]["messages"][0]["content"] == "case-1"  # archived, kept
    with pytest.raises(SourceRejected, match="answered 400"):
        write_suite(http, "other", [item("case-2")], [])  # an id Langfuse holds in another dataset
    http.close()
