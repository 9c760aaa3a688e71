"""The optional judge over HTTP against a local OpenAI-compatible server: budget, cache, failures,
and its decisions in the error_modes asset."""

import json

import dagster as dg
import pandas as pd
import pytest

from feedback_loop.lib.error_modes.judge import apply_judge, parse_answer
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.judge import Judge
from feedback_loop_tests.conftest import defs_with
from feedback_loop_tests.openai_stub import OpenAIStub


def modes_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trace_id": ["t1", "t2", "t3", "t4"],
            "mode": ["other", "length", "other", "format"],
            "mode_id": ["EM-999", "EM-004", "EM-999", "EM-002"],
            "confidence": [0.3, 0.45, 0.3, 0.95],
            "evidence": ["no specific evidence", "votes split", "no specific evidence", "reason tag 'formatting'"],
            "evidence_source": ["none", "response", "none", "reason_tag"],
        }
    )


def cases_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trace_id": ["t1", "t2", "t3", "t4"],
            "input": ["q1", "q2", "q3", "q4"],
            "prompt": ["Which port does the kubelet API use?", "Summarize this.", "What is EOMONTH in BigQuery?", "JSON please"],
            "output": ["Port 10255.", "A long summary.", "EOMONTH returns the month end.", "not json"],
            "reason_tags": [None, None, None, "formatting"],
            "comments": ["that port is wrong", None, None, None],
            "edit_text": [None, None, None, None],
        }
    )


@pytest.fixture
def stub():
    server = OpenAIStub(lambda body: (200, json.dumps({"mode": "hallucination", "reason": "invents a fact"})))
    yield server
    server.close()


def judge_for(stub: OpenAIStub, tmp_path, **settings) -> Judge:
    return Judge(base_url=stub.url, model="judge-model", api_key="sk-test", cache_folder=str(tmp_path / "judge"), **settings)


def run(judge: Judge, modes: pd.DataFrame | None = None):
    return apply_judge(modes_frame() if modes is None else modes, cases_frame(), judge.ask, judge.cache_get, judge.cache_put, judge.model, TAXONOMY_V1, judge.max_calls_per_night, judge.max_confidence)


def test_the_judge_decides_unsure_rows_within_its_budget_and_caches_by_content(stub, tmp_path):
    judge = judge_for(stub, tmp_path, max_calls_per_night=2)
    modes, tally = run(judge)
    assert tally.unsure == 3 and tally.called == 2 and tally.over_budget == 1
    judged = modes[modes["evidence_source"] == "judge"]
    assert judged["trace_id"].tolist() == ["t1", "t3"]  # least confident first, then by trace id
    assert (judged["mode"] == "hallucination").all() and (judged["mode_id"] == "EM-001").all()
    assert judged["evidence"].str.startswith("judge judge-model: invents a fact").all()
    assert modes.set_index("trace_id").loc["t4", "evidence_source"] == "reason_tag"  # sure rows are not sent
    request = stub.requests[0]
    assert request["model"] == "judge-model" and request["temperature"] == 0
    assert "that port is wrong" in request["messages"][1]["content"]
    assert stub.headers[0]["Authorization"] == "Bearer sk-test"
    # The next run: the two answers come from the cache, the budget goes to the row left over.
    again, tally = run(judge)
    assert tally.cached == 2 and tally.called == 1 and len(stub.requests) == 3
    assert (again["evidence_source"] == "judge").sum() == 3
    rerun, tally = run(judge)
    assert tally.called == 0 and tally.cached == 3
    pd.testing.assert_frame_equal(rerun, again)


def test_a_failing_or_confused_judge_leaves_the_offline_modes(tmp_path):
    down = OpenAIStub(lambda body: (503, '{"error": {"message": "overloaded"}}'))
    try:
        judge = Judge(base_url=down.url, model="m", cache_folder=str(tmp_path / "a"), max_calls_per_night=5, retries=0)
        modes, tally = run(judge)
        assert tally.unavailable and "503" in tally.unavailable and tally.called == 0
        pd.testing.assert_frame_equal(modes, modes_frame())
    finally:
        down.close()
    confused = OpenAIStub(lambda body: (200, "I think it is probably a hallucination."))
    try:
        modes, tally = run(Judge(base_url=confused.url, model="m", cache_folder=str(tmp_path / "b")))
        assert tally.invalid == 3 and tally.decided == 0
        pd.testing.assert_frame_equal(modes, modes_frame())
    finally:
        confused.close()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"mode": "format", "reason": "breaks the JSON"}', ("format", "breaks the JSON")),
        ('```json\n{"mode": "refusal"}\n```', ("refusal", "")),
        ('{"mode": "sarcasm"}', None),
        ("format", None),
        ("[]", None),
    ],
)
def test_parse_answer(content, expected):
    assert parse_answer(content, TAXONOMY_V1) == expected


def test_the_error_modes_asset_uses_a_configured_judge(resources, stub, tmp_path):
    resources["judge"] = judge_for(stub, tmp_path, max_calls_per_night=3)
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    report = run_nightly("2026-11-20", instance, defs)
    assert report.success
    warehouse = resources["io_manager"]
    modes = pd.read_parquet(warehouse.path_for(dg.AssetKey("error_modes"), "2026-11-20").path)
    assert (modes["evidence_source"] == "judge").sum() == len(stub.requests) == 3
    event = instance.get_latest_materialization_event(dg.AssetKey("error_modes"))
    metadata = event.asset_materialization.metadata
    assert metadata["judge"].value == "judge-model" and metadata["judge_calls"].value == 3
    assert metadata["judge_over_budget"].value > 0
