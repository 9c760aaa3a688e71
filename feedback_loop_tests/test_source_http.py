"""HTTP behaviour every pulling source shares, against a local server: retries with backoff and
`Retry-After`, permanent errors that name the path and status, paging to the end, malformed pages
quarantined, the API key sent as a header and never in a message."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.lib.sources.http import Http, SourceRejected, SourceUnavailable
from feedback_loop.lib.sources.window import PullWindow, day_start
from feedback_loop.resources.sources import PhoenixSource

# One span as Phoenix's `GET /v1/projects/{project}/spans` returns it (the `Span` model of
# arize-phoenix 20.26.1, `phoenix/server/api/routers/v1/spans.py`: nested attributes, ISO times).
SPAN = {
    "id": "U3Bhbjox",
    "name": "ChatCompletion",
    "context": {"trace_id": "5b8aa5a2d2c872e8321cf37308d69df2", "span_id": "5fb397be34d26b51"},
    "span_kind": "LLM",
    "parent_id": None,
    "start_time": "2026-11-20T10:00:00+00:00",
    "end_time": "2026-11-20T10:00:01+00:00",
    "status_code": "OK",
    "status_message": "",
    "attributes": {"llm": {"model_name": "gpt-4o", "output_messages": [{"message": {"role": "assistant", "content": "Hi."}}]}, "input": {"value": "Hello"}},
    "events": [],
}


class Script:
    """What the server answers, request by request, and what it was asked."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []


def _server(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            script.requests.append((self.path, dict(self.headers)))
            status, headers, body = script.answers.pop(0) if script.answers else (200, {}, {"data": [], "next_cursor": None})
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def serve():
    servers = []

    def start(answers):
        script = Script(answers)
        server, url = _server(script)
        servers.append(server)
        return script, url

    yield start
    for server in servers:
        server.shutdown()


def test_429_and_5xx_are_retried_with_retry_after_then_backoff(serve):
    script, url = serve([(429, {"Retry-After": "7"}, {}), (503, {}, {}), (200, {}, {"ok": 1})])
    waits = []
    http = Http("phoenix", url, backoff_s=0.5, sleep=waits.append)
    assert http.get("/v1/x").json() == {"ok": 1}
    assert waits[0] == 7.0 and 0.5 * 2 <= waits[1] <= 0.5 * 2 * 1.25  # Retry-After, then the doubled backoff with jitter
    assert len(script.requests) == 3


def test_a_failure_that_persists_is_transient_and_names_the_path(serve):
    _, url = serve([(502, {}, {})] * 3)
    http = Http("phoenix", url, retries=2, sleep=lambda s: None)
    with pytest.raises(SourceUnavailable, match=r"phoenix: GET /v1/projects/p/spans failed 3 times, last with 502"):
        http.get("/v1/projects/p/spans")


def test_a_permanent_error_names_the_source_path_and_status_and_not_the_key(serve):
    script, url = serve([(404, {}, {"detail": "Project not found"})])
    source = PhoenixSource(url=url, project="no such", api_key="secret-key-123", kinds=["traces"])
    window = PullWindow("2026-11-20", day_start("2026-11-20"), day_start("2026-11-21"))
    with pytest.raises(SourceRejected) as err:
        source.pull("traces", window, "2026-01-01", 7)
    assert "phoenix: GET /v1/projects/no%20such/spans answered 404 Not Found" in str(err.value)
    assert "secret-key-123" not in str(err.value)
    assert script.requests[0][1]["Authorization"] == "Bearer secret-key-123"


def test_pages_are_read_to_the_end_and_a_malformed_page_is_quarantined(serve):
    second = dict(SPAN, context={"trace_id": SPAN["context"]["trace_id"], "span_id": "aaaaaaaaaaaaaaaa"})
    script, url = serve(
        [
            (200, {}, {"data": [SPAN, {"name": "no context"}], "next_cursor": "c2"}),
            (200, {}, {"data": [second], "next_cursor": "c3"}),
            (200, {}, b"<html>gateway hiccup</html>"),
        ]
    )
    window = PullWindow("2026-11-20", day_start("2026-11-20"), day_start("2026-11-21"))
    pulled = PhoenixSource(url=url, project="chat", kinds=["traces"]).pull("traces", window, "2026-01-01", 7)
    result = normalize_traces(pulled.records, "2026-11-20")
    assert sorted(result.clean["span_id"]) == ["5fb397be34d26b51", "aaaaaaaaaaaaaaaa"]
    row = result.clean.iloc[0]
    assert row["model"] == "gpt-4o" and row["prompt"] == "Hello" and row["output"] == "Hi."
    assert sorted(result.quarantine["reason"]) == ["span has no context.trace_id", "spans page 3 is not JSON"]
    queries = [parse_qs(urlparse(path).query) for path, _ in script.requests]
    assert [q.get("cursor") for q in queries] == [None, ["c2"], ["c3"]]
    assert queries[0]["start_time"] == ["2026-11-19T23:00:00+00:00"] and queries[0]["end_time"] == ["2026-11-21T00:00:00+00:00"]


def test_phoenix_pages_map_onto_the_contract_field_by_field(serve):
    """The pages a real Phoenix server gave (fixtures/phoenix), replayed."""
    fixtures = Path(__file__).parent / "fixtures" / "phoenix"
    spans = json.loads((fixtures / "spans_page.json").read_text())
    annotations = json.loads((fixtures / "span_annotations_page.json").read_text())
    day = "2026-11-19"
    window = PullWindow(day, day_start(day), day_start("2026-11-20"))
    _, url = serve([(200, {}, spans)])
    traces = normalize_traces(PhoenixSource(url=url, project="support-bot", kinds=["traces"]).pull("traces", window, "2026-01-01", 7).records, day)
    assert traces.quarantine.empty and len(traces.clean) == 4
    row = traces.clean.set_index("span_id").loc["ca87240a80170fb3"]
    assert row["trace_id"] == "c7efbecf0451fce4b90b3ba09b515ee3" and row["model"] == "llama-3.1-70b" and row["session_id"] == "s-20261119-5-0000020"
    assert row["timestamp"] == pd.Timestamp("2026-11-19T07:42:51.825Z") and row["output"] == "The HTTP status code for Not Found is 403."
    assert json.loads(row["input"])[0] == {"role": "system", "content": "You are a helpful assistant (v1)."} and row["prompt"].startswith(
        "Thanks. Next: Do you know the HTTP status code for Not Found?"
    )
    assert (row["input_tokens"], row["output_tokens"]) == (23, 10) and json.loads(row["metadata"])["environment"] == "production"

    _, url = serve([(200, {}, spans), (200, {}, annotations)])
    pulled = PhoenixSource(url=url, project="support-bot", kinds=["feedback"]).pull("feedback", window, "2026-01-01", 7)
    events = normalize_feedback(pulled.records, day).clean.set_index("event_id")
    assert sorted(events["type"]) == ["correction", "rating", "thumbs_down", "thumbs_up"]
    down = events.loc["phoenix:U3BhbkFubm90YXRpb246MTY="]
    assert (down["type"], down["trace_id"], down["span_id"], down["reason"]) == ("thumbs_down", "c7efbecf0451fce4b90b3ba09b515ee3", "ca87240a80170fb3", "not_factual")
    assert down["timestamp"] == pd.Timestamp("2026-11-19T07:43:02.578Z")
    assert events.loc["phoenix:U3BhbkFubm90YXRpb246MTc=", "value"] == "The HTTP status code for Not Found is 404."
    assert events.loc["phoenix:U3BhbkFubm90YXRpb246MTA=", "value_num"] == 2.0
    assert pulled.metadata["judgements_not_feedback"] == {"correctness": 1}  # an LLM judge, not a user


def test_a_permanent_error_fails_the_step_at_once_with_the_path_and_status(serve, resources):
    import dagster as dg

    from feedback_loop.defs.ingest.assets import raw_traces
    from feedback_loop.resources.sources import LandingFolder

    script, url = serve([(401, {}, {"detail": "bad key"})])
    broken = {**resources, "landing": LandingFolder(kinds=[]), "phoenix": PhoenixSource(url=url, project="chat", api_key="k", kinds=["traces"])}
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_traces], partition_key="2026-11-20", resources=broken, instance=instance, raise_on_error=False)
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events and len(script.requests) == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "raw_traces: phoenix: GET /v1/projects/chat/spans answered 401 Unauthorized" in failure.event_specific_data.error.message
