"""The opt-out through Dagster: a user known only by their feedback, their edit on someone else's
trace, their id in another case or spacing: none of their data is published. A configured list
that is missing fails the night and publishes nothing."""

import shutil

import dagster as dg
import pytest

from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.datasets import Privacy
from feedback_loop.resources.sources import LandingFolder
from feedback_loop_tests.conftest import defs_with, write_jsonl
from feedback_loop_tests.test_canaries import published_texts

DAYS = ("2026-11-18", "2026-11-19", "2026-11-20")


def trace(trace_id: str, user_id: str | None, output: str, at: str) -> dict:
    return {
        "trace_id": trace_id,
        "session_id": f"s-{trace_id}",
        "user_id": user_id,
        "timestamp": at,
        "model": "gpt-4o-mini",
        "prompt_version": "v1",
        "input": f"Question for {trace_id}?",
        "output": output,
    }


def event(event_id: str, trace_id: str, user_id: str | None, kind: str, at: str, **fields) -> dict:
    return {"event_id": event_id, "trace_id": trace_id, "session_id": f"s-{trace_id}", "user_id": user_id, "timestamp": at, "type": kind, **fields}


def planted(landing, day: str) -> None:
    at, later = f"{day}T12:00:00Z", f"{day}T12:00:30Z"
    n = day[-2:]
    write_jsonl(
        landing / "traces" / f"opt-out-{day}.jsonl",
        [
            trace(f"opt-a-{n}", None, f"OPTED-OUTPUT-A-{n} is the answer.", at),  # no user id: known by its feedback
            trace(f"opt-b-{n}", "someone-else", f"CONTROL-OUTPUT-B-{n} is the answer.", at),  # the opted-out user edits it
            trace(f"opt-c-{n}", "OPTED.User", f"OPTED-OUTPUT-C-{n} is the answer.", at),  # the id in another case
            trace(f"ctl-d-{n}", "kept-user", f"CONTROL-OUTPUT-D-{n} is the answer.", at),
        ],
    )
    write_jsonl(
        landing / "feedback" / f"opt-out-{day}.jsonl",
        [
            event(f"a1-{n}", f"opt-a-{n}", "opted.user", "thumbs_down", later, comment="wrong answer"),
            event(f"a2-{n}", f"opt-a-{n}", "opted.user", "edit", later, value=f"OPTED-EDIT-A-{n} is right."),
            event(f"b1-{n}", f"opt-b-{n}", "someone-else", "thumbs_down", later, comment="wrong answer"),
            event(f"b2-{n}", f"opt-b-{n}", " Opted.User ", "edit", later, value=f"OPTED-EDIT-B-{n} is right."),
            event(f"c1-{n}", f"opt-c-{n}", "OPTED.User", "thumbs_up", later),
            event(f"d1-{n}", f"ctl-d-{n}", "kept-user", "thumbs_down", later, comment="wrong answer"),
            event(f"d2-{n}", f"ctl-d-{n}", "kept-user", "edit", later, value=f"CONTROL-EDIT-D-{n} is right."),
        ],
    )


@pytest.mark.slow
def test_no_data_of_an_opted_out_user_is_published_however_it_is_linked(resources, generated, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    for day in DAYS:
        planted(landing, day)
    (tmp_path / "opt_out.txt").write_text("# opted out\nopted.user\n")
    defs = defs_with({**resources, "landing": LandingFolder(root=str(landing))})
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        report = run_nightly(day, instance, defs)
        assert report.success, report.summary_line()
    text = "\n".join(published_texts(tmp_path / "datasets").values())
    assert "CONTROL-EDIT-D" in text and "CONTROL-OUTPUT-D" in text  # the same shapes from a user who did not opt out are published
    for marker in ("OPTED-OUTPUT-A", "OPTED-EDIT-A", "OPTED-EDIT-B", "OPTED-OUTPUT-C", "opt-a-", "opt-c-"):
        assert marker not in text, marker


@pytest.mark.slow
def test_a_missing_configured_opt_out_list_fails_the_night_and_publishes_nothing(resources, tmp_path):
    defs = defs_with({**resources, "privacy": Privacy(user_hash_key="test-key", opt_out_path=str(tmp_path / "no-such-list.txt"))})
    report = run_nightly(DAYS[0], dg.DagsterInstance.ephemeral(), defs)
    assert not report.success and "no-such-list.txt not found" in report.summary_line()
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").rglob("manifest.json"))
