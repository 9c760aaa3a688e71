"""Planted personal data and secrets never reach a published file of any version, the state kept
between runs, or the metadata a person sees in the Dagster UI."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from feedback_loop.lib.datasets.privacy import strings_in
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.sources import LandingFolder
from feedback_loop_tests.canaries import Canary, canaries, secret_parts
from feedback_loop_tests.conftest import defs_with, write_jsonl

DAYS = ("2026-11-18", "2026-11-19", "2026-11-20")
FIELDS = ("system prompt", "prompt", "output", "trace metadata", "comment", "edit", "reason", "feedback metadata")


def planted_records(planted: list[Canary]) -> tuple[dict[str, list], dict[str, list]]:
    """Trace and feedback records per day, each trace carrying one canary in each field. Two traces
    in three are thumbed down with a comment and an edit (suite cases, DPO pairs, KTO negatives),
    the third thumbed up with a comment (a KTO positive)."""
    traces, events = {day: [] for day in DAYS}, {day: [] for day in DAYS}
    groups = [planted[i : i + len(FIELDS)] for i in range(0, len(planted), len(FIELDS))]
    for n, group in enumerate(groups):
        field = {name: c.text for name, c in zip(FIELDS, group, strict=False)}
        day = DAYS[(n // 3) % len(DAYS)]
        trace_id, session = f"canary-trace-{n}", f"canary-session-{n}"
        at = f"{day}T{9 + n % 10:02d}:{n % 60:02d}:00Z"
        traces[day].append(
            {
                "trace_id": trace_id,
                "session_id": session,
                "user_id": f"canary-user-{n}",
                "timestamp": at,
                "model": "gpt-4o-mini",
                "prompt_version": "v1",
                "input": [{"role": "system", "content": "You help. " + field.get("system prompt", "")}, {"role": "user", "content": "Please check this: " + field.get("prompt", "")}],
                "output": "Here is the answer you asked for. " + field.get("output", ""),
                "metadata": {"note": field.get("trace metadata", "")},
            }
        )
        later = at.replace(":00Z", ":30Z")
        base = {"trace_id": trace_id, "session_id": session, "user_id": f"canary-user-{n}", "timestamp": later}
        if n % 3 < 2:
            events[day] += [
                {
                    **base,
                    "event_id": f"canary-down-{n}",
                    "type": "thumbs_down",
                    "reason": field.get("reason", "other"),
                    "comment": "this is wrong: " + field.get("comment", ""),
                    "metadata": {"note": field.get("feedback metadata", "")},
                },
                {**base, "event_id": f"canary-edit-{n}", "type": "edit", "value": "The corrected answer. " + field.get("edit", "")},
            ]
        else:
            events[day].append(
                {**base, "event_id": f"canary-up-{n}", "type": "thumbs_up", "comment": "great, thanks! " + field.get("comment", ""), "metadata": {"note": field.get("feedback metadata", "")}}
            )
    return traces, events


def published_texts(root: Path) -> dict[str, str]:
    """Every file under `root` as the text of all its string values (Parquet and JSON decoded, so an
    escaped or compressed value is seen as it is)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            strings = [s for column in table.columns for value in column.to_pylist() for s in strings_in(value)]
        elif path.suffix in (".jsonl", ".json"):
            text = path.read_text()
            lines = text.splitlines() if path.suffix == ".jsonl" else [text]
            strings = [text, *(s for line in lines if line.strip() for s in strings_in(json.loads(line)))]
        else:
            strings = [path.read_text(errors="replace")]
        out[str(path.relative_to(root))] = "\n".join(strings)
    return out


def metadata_texts(instance: dg.DagsterInstance) -> dict[str, str]:
    """The events of every run (materialization and check metadata, step outputs) as text."""
    return {run.run_id: "\n".join(f"{record.user_message}\n{record.dagster_event}" for record in instance.all_logs(run.run_id)) for run in instance.get_runs()}


def leaks(planted: list[Canary], places: dict[str, str]) -> list[tuple[str, str]]:
    return [(c.kind, where) for c in planted for where, text in places.items() if any(part in text for part in secret_parts(c))]


@pytest.mark.slow
def test_no_planted_value_reaches_a_published_file_the_state_or_the_metadata(resources, generated, tmp_path):
    planted = canaries()
    assert len(planted) >= 200 and len({c.kind for c in planted}) >= 15
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    traces, events = planted_records(planted)
    for day in DAYS:
        write_jsonl(landing / "traces" / f"canaries-{day}.jsonl", traces[day])
        write_jsonl(landing / "feedback" / f"canaries-{day}.jsonl", events[day])
    defs = defs_with({**resources, "landing": LandingFolder(root=str(landing))})
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        report = run_nightly(day, instance, defs)
        assert report.success, report.summary_line()
    published = published_texts(tmp_path / "datasets")
    assert any("canary-trace" in text or "Please check this" in text for text in published.values())  # the planted traces were published
    found = leaks(planted, published) + leaks(planted, published_texts(tmp_path / "state")) + leaks(planted, metadata_texts(instance))
    assert not found, f"{len(found)} leaks, e.g. {sorted(set(found))[:20]}"
