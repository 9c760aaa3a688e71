"""The pipeline on a real PostgreSQL instance storage: runs and events are recorded there."""

import os
import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from feedback_loop.pipeline import run_nightly
from feedback_loop_tests.conftest import END, PG, defs_with

pytestmark = pytest.mark.slow  # the whole pipeline, or the benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_nightly_run_is_recorded_in_postgres(pg_database, tmp_path, monkeypatch, resources):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("FEEDBACK_LOOP_PG_USER", PG["user"])
    monkeypatch.setenv("FEEDBACK_LOOP_PG_PASSWORD", os.environ.get("FEEDBACK_LOOP_PG_PASSWORD", ""))
    monkeypatch.setenv("FEEDBACK_LOOP_PG_HOST", PG["host"])
    monkeypatch.setenv("FEEDBACK_LOOP_PG_PORT", str(PG["port"]))
    monkeypatch.setenv("FEEDBACK_LOOP_PG_DB", pg_database)
    test_defs = defs_with(resources)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        report = run_nightly(END.isoformat(), instance, test_defs)
        assert report.success
        run_ids = {r.run_id for r in report.runs}
    conn = psycopg2.connect(dbname=pg_database, password=os.environ.get("FEEDBACK_LOOP_PG_PASSWORD", ""), **PG)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs")
        stored = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        materializations = cur.fetchone()[0]
    conn.close()
    assert run_ids <= set(stored) and all(stored[r] == "SUCCESS" for r in run_ids)
    assert materializations >= 4
