"""Choosing sources by configuration: the sources file, the resources it makes, pull windows, and
a nightly run from the CLI on an OTLP export folder."""

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from feedback_loop.defs.resources import judge_resource, source_resources
from feedback_loop.lib.sources.config import SourcesFileError, read_sources_config
from feedback_loop.lib.sources.window import pull_window

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
DAY = "2026-11-20"
MIDNIGHT = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
HOURS_24 = dt.timedelta(hours=24)


def test_without_a_sources_file_the_landing_folder_feeds_both_kinds():
    resources = source_resources(read_sources_config(None).get("sources", {}))
    assert [key for key, r in resources.items() if r.kinds] == ["landing"] and resources["landing"].kinds == ["traces", "feedback"]


def test_a_sources_file_names_what_feeds_what_and_secrets_come_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "sources.yaml"
    path.write_text(
        """
sources:
  phoenix: {url: "http://phoenix:6006", project: chat, api_key_env: PHOENIX_API_KEY, kinds: [traces, feedback]}
  landing: {root: extra, kinds: [feedback]}
  postgres:
    url_env: PRODUCT_DB_URL
    kinds: [feedback]
    feedback: {table: app.feedback, timestamp: at, columns: {event_id: id, trace_id: call_id, type: kind}}
ingest: {pull_overlap_hours: 6}
judge: {base_url: "http://127.0.0.1:8000/v1", model: local-judge, api_key_env: JUDGE_KEY, max_calls_per_night: 50}
"""
    )
    config = read_sources_config(str(path))
    judge = judge_resource(config["judge"], str(tmp_path / "judge"))
    assert judge.enabled and judge.max_calls_per_night == 50 and isinstance(judge.api_key, dg.EnvVar) and judge.api_key.env_var_name == "JUDGE_KEY"
    assert not judge_resource({}, str(tmp_path / "judge")).enabled
    resources = source_resources(config["sources"])
    assert resources["phoenix"].kinds == ["traces", "feedback"] and resources["landing"].root == str(tmp_path / "extra") and resources["otlp_files"].kinds == []
    assert isinstance(resources["phoenix"].api_key, dg.EnvVar) and resources["phoenix"].api_key.env_var_name == "PHOENIX_API_KEY"
    assert isinstance(resources["postgres_source"].url, dg.EnvVar)
    assert config["ingest"] == {"pull_overlap_hours": 6}
    monkeypatch.setenv("PHOENIX_API_KEY", "k")
    monkeypatch.setenv("PRODUCT_DB_URL", "postgresql://x")
    assert resources["phoenix"].process_config_and_initialize().api_key == "k"  # resolved when a run starts, never written in config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources:\n  braintrust: {}\n", "names landing, otlp_files, phoenix, langfuse, langfuse_export, langsmith, langsmith_export, postgres only"),
        ("sources:\n  phoenix: {kinds: [spans]}\n", "kinds` lists traces and/or feedback"),
        ("source:\n  phoenix: {}\n", "the top level holds sources, ingest, judge only"),
        ("judge: {url: http://x}\n", "`judge` holds base_url, model, api_key_env"),
        ("sources: [\n", "sources file"),
    ],
)
def test_a_wrong_sources_file_is_refused_with_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(SourcesFileError, match=message.replace("[", r"\[")):
        read_sources_config(str(path))


def test_pull_windows():
    first_night = pull_window(DAY, HOURS_24, first_pull=None, cursor=None, backfill=False)
    assert (first_night.start, first_night.end) == (MIDNIGHT, MIDNIGHT + HOURS_24)
    next_night = pull_window(DAY, HOURS_24, first_pull=None, cursor=MIDNIGHT, backfill=False)
    assert next_night.start == MIDNIGHT - HOURS_24 and next_night.accept_from == "2026-11-19"
    after_a_gap = pull_window(DAY, HOURS_24, first_pull=None, cursor=MIDNIGHT - 5 * HOURS_24, backfill=False)
    assert after_a_gap.start == MIDNIGHT - HOURS_24  # the skipped days are a backfill's, not this night's
    rerun = pull_window(DAY, HOURS_24, first_pull=MIDNIGHT - HOURS_24, cursor=MIDNIGHT + 3 * HOURS_24, backfill=False)
    assert rerun.start == MIDNIGHT - HOURS_24  # the window it pulled first
    older_day = pull_window(DAY, HOURS_24, first_pull=None, cursor=MIDNIGHT + 3 * HOURS_24, backfill=False)
    assert older_day.start == MIDNIGHT
    backfill = pull_window(DAY, HOURS_24, first_pull=None, cursor=MIDNIGHT, backfill=True)
    assert (backfill.start, backfill.end) == (MIDNIGHT, MIDNIGHT + HOURS_24)
    backfill_again = pull_window(DAY, HOURS_24, first_pull=MIDNIGHT - HOURS_24, cursor=MIDNIGHT, backfill=True)
    assert backfill_again.start == MIDNIGHT - HOURS_24  # what the night took first stays with it


def test_the_cli_runs_a_night_from_an_otlp_export_folder(tmp_path):
    (tmp_path / "otlp").mkdir()
    for name in ("openinference.jsonl", "genai.json"):
        shutil.copy(FIXTURES / name, tmp_path / "otlp" / name)
        written = dt.datetime(2026, 11, 21, 0, 30, tzinfo=dt.UTC).timestamp()
        os.utime(tmp_path / "otlp" / name, (written, written))
    (tmp_path / "sources.yaml").write_text("sources:\n  otlp_files: {root: otlp, kinds: [traces, feedback]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_LOOP_", "DAGSTER_HOME"))}
    env |= {"FEEDBACK_LOOP_SOURCES": "sources.yaml", "FEEDBACK_LOOP_START_DATE": "2026-11-01"}
    cli = str(Path(sys.executable).parent / "feedback-loop")
    out = subprocess.run([cli, "run", "--date", DAY], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{DAY}: ok" in out.stdout
    ui = next(line for line in out.stdout.splitlines() if line.startswith("open the UI:"))
    assert f"FEEDBACK_LOOP_SOURCES={tmp_path / 'sources.yaml'}" in ui and "FEEDBACK_LOOP_START_DATE=2026-11-01" in ui  # the UI sees the same sources and days
    import pandas as pd

    traces = pd.read_parquet(tmp_path / "data" / "warehouse" / "raw_traces" / f"{DAY}.parquet")
    assert sorted(traces["trace_id"]) == ["4bf92f3577b34da6a3ce929d0e0e4736", "5b8aa5a2d2c872e8321cf37308d69df2"]
    labels = pd.read_parquet(tmp_path / "data" / "warehouse" / "trace_labels" / f"{DAY}.parquet").set_index("trace_id")
    assert labels.loc["5b8aa5a2d2c872e8321cf37308d69df2", "label"] == "negative" and labels.loc["4bf92f3577b34da6a3ce929d0e0e4736", "label"] == "positive"


def test_a_key_two_sources_give_is_quarantined_in_the_later_source_not_dropped():
    from feedback_loop.lib.landing import PulledRecord, read_pulled_records
    from feedback_loop.lib.normalize import normalize_traces
    from feedback_loop.lib.sources.combined import combined

    def pulled(source: str, *ids: str):
        rows = [PulledRecord(source, n, "{}", fields={"trace_id": i, "span_id": "s", "timestamp": f"{DAY}T10:00:00Z", "output": source}) for n, i in enumerate(ids, start=1)]
        return read_pulled_records("traces", rows, DAY, DAY)

    records = combined("traces", {"phoenix": pulled("phoenix", "t1", "t2"), "landing": pulled("landing", "t2", "t3", "t3")})
    result = normalize_traces(records, DAY)
    assert sorted(result.clean["trace_id"]) == ["t1", "t2", "t3"] and result.clean.set_index("trace_id").loc["t2", "output"] == "phoenix"
    assert result.quarantine[["record_id", "reason"]].values.tolist() == [["t2", "trace_id and span_id also come from source 'phoenix'"]]
    assert result.duplicates == 1  # t3 twice in one source is a plain duplicate
