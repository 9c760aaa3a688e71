"""The product's own PostgreSQL as a source, against the real server: mapping, bad rows, hostile
names, reruns and late rows."""

import json
import os

import dagster as dg
import pandas as pd
import psycopg2
import pytest

from feedback_loop.defs.ingest.assets import raw_feedback_events, raw_traces
from feedback_loop.lib.sources.http import SourceUnavailable
from feedback_loop.lib.sources.window import PullWindow, day_start
from feedback_loop.resources.sources import LandingFolder, PostgresSource, PostgresTable
from feedback_loop_tests.conftest import PG

DAY, NEXT = "2026-11-20", "2026-11-21"
TRACES = PostgresTable(
    table="app.chat log; drop table x",  # a hostile name: quoted as an identifier, never spliced
    timestamp='created at"--',
    columns={"trace_id": "id", "session_id": "conversation", "user_id": "app_user", "model": "model", "input": "messages", "output": "answer", "latency_ms": "latency", "input_tokens": "tokens_in"},
)
FEEDBACK = PostgresTable(
    table="app.feedback",
    timestamp="at",
    columns={"event_id": "id", "trace_id": "call_id", "type": "kind", "value": "value", "comment": "note"},
    type_values={"up": "thumbs_up", "down": "thumbs_down", "stars": "rating"},
)


@pytest.fixture
def product_db(pg_database):
    conn = psycopg2.connect(dbname=pg_database, password=os.environ.get("FEEDBACK_LOOP_PG_PASSWORD", ""), **PG)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA app")
    cur.execute(
        'CREATE TABLE app."chat log; drop table x" (id text, conversation text, app_user text, "created at""--" timestamptz, model text, messages jsonb, answer text, latency numeric, tokens_in int)'
    )
    cur.execute("CREATE TABLE app.feedback (id bigint, call_id text, kind text, value text, note text, at timestamp)")
    rows = [
        ("t1", "conv-1", "u1", "2026-11-20T10:00:00Z", "gpt-4o", json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Australia?"}]), "Sydney.", 812.5, 14),
        ("t2", "conv-1", "u1", "2026-11-20T10:05:00Z", "gpt-4o", json.dumps("'); DROP TABLE app.feedback; --"), "Canberra.", 640, 20),
        (None, "conv-2", "u2", "2026-11-20T11:00:00Z", "gpt-4o", None, "no id", 10, 1),
        ("t3", "conv-2", "u2", "2026-11-20T11:01:00Z", "gpt-4o", None, "bad tokens", 10, -5),
        ("t0", "conv-0", "u0", "2026-11-19T23:59:59Z", "gpt-4o", None, "the day before", 10, 1),
    ]
    cur.executemany('INSERT INTO app."chat log; drop table x" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)', rows)
    cur.executemany(
        "INSERT INTO app.feedback VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (1, "t1", "down", None, "Wrong, it is Canberra.", "2026-11-20 10:00:30"),
            (2, "t1", "stars", "2", None, "2026-11-20 10:00:40"),
            (3, "t2", "meh", None, None, "2026-11-20 10:06:00"),
            (4, "t2", "stars", "many", None, "2026-11-20 10:06:10"),
        ],
    )
    yield conn, f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{pg_database}"
    conn.close()


def _resources(resources: dict, url: str) -> dict:
    return {**resources, "landing": LandingFolder(kinds=[]), "postgres_source": PostgresSource(url=url, kinds=["traces", "feedback"], traces=TRACES, feedback=FEEDBACK)}


def _run(day: str, resources: dict, instance: dg.DagsterInstance) -> dict:
    result = dg.materialize([raw_traces, raw_feedback_events], partition_key=day, resources=resources, instance=instance)
    return {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events() for m in [m.materialization]}


def _run_tagged(day: str, resources: dict, instance: dg.DagsterInstance, tags: dict) -> dict:
    result = dg.materialize([raw_traces, raw_feedback_events], partition_key=day, resources=resources, instance=instance, tags=tags)
    return {m.asset_key.to_user_string(): m.metadata for m in result.get_asset_materialization_events() for m in [m.materialization]}


def _read(resources: dict, asset: str, day: str) -> pd.DataFrame:
    return pd.read_parquet(resources["io_manager"].path_for(dg.AssetKey(asset), day))


def test_tables_map_onto_the_contract_field_by_field(product_db, resources):
    conn, url = product_db
    resources = _resources(resources, url)
    with dg.instance_for_test() as instance:
        metadata = _run(DAY, resources, instance)
    traces = _read(resources, "raw_traces", DAY).set_index("trace_id")
    assert sorted(traces.index) == ["t1", "t2"]  # t0 is of the day before; the rest is quarantined
    t1 = traces.loc["t1"]
    assert t1["session_id"] == "conv-1" and t1["user_id"] == "u1" and t1["model"] == "gpt-4o"
    assert t1["timestamp"] == pd.Timestamp("2026-11-20T10:00:00Z") and t1["latency_ms"] == 812.5 and t1["input_tokens"] == 14
    assert json.loads(t1["input"])[1] == {"role": "user", "content": "Capital of Australia?"} and t1["prompt"] == "Capital of Australia?"
    assert t1["output"] == "Sydney."
    assert traces.loc["t2", "prompt"] == "'); DROP TABLE app.feedback; --"  # a value, stored as text
    quarantine = _read(resources, "raw_traces_quarantine", DAY)
    assert sorted(quarantine["reason"]) == ["input_tokens is negative", "missing trace_id"]
    assert quarantine["source"].unique().tolist() == ["postgres app.chat log; drop table x"]
    events = _read(resources, "raw_feedback_events", DAY).set_index("event_id")
    assert events.loc["postgres:1", "type"] == "thumbs_down" and events.loc["postgres:1", "comment"] == "Wrong, it is Canberra."
    assert events.loc["postgres:2", "type"] == "rating" and events.loc["postgres:2", "value_num"] == 2.0
    assert events.loc["postgres:1", "timestamp"] == pd.Timestamp("2026-11-20T10:00:30Z")  # a naive timestamp is UTC
    bad = _read(resources, "raw_feedback_events_quarantine", DAY)
    assert sorted(bad["reason"]) == ["rating value is not a number", "unknown event type 'meh'"]
    assert metadata["raw_traces"]["sources"].value["postgres_source"]["rows_read"] == 4
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM app.feedback")
    assert cur.fetchone()[0] == 4  # nothing ran but the bound query


def test_reruns_add_nothing_and_late_rows_are_taken_by_the_next_night(product_db, resources):
    conn, url = product_db
    resources = _resources(resources, url)
    with dg.instance_for_test() as instance:
        first = _run(DAY, resources, instance)
        before = resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY).read_bytes()
        _run(DAY, resources, instance)
        assert resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY).read_bytes() == before
        assert first["raw_traces"]["window_start"].value == "2026-11-20T00:00:00+00:00"  # the first night: its day exactly

        cur = conn.cursor()  # indexed after the night of the 20th ran, though it happened on the 20th
        cur.execute('INSERT INTO app."chat log; drop table x" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)', ("t9", "conv-9", "u9", "2026-11-20T23:30:00Z", "gpt-4o", None, "late", 5, 1))
        cur.execute('INSERT INTO app."chat log; drop table x" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)', ("t10", "conv-9", "u9", "2026-11-21T09:00:00Z", "gpt-4o", None, "next day", 5, 1))
        nxt = _run(NEXT, resources, instance)
        assert nxt["raw_traces"]["window_start"].value == "2026-11-20T00:00:00+00:00"  # a day of overlap back
        assert sorted(_read(resources, "raw_traces", NEXT)["trace_id"]) == ["t10", "t9"]
        assert nxt["raw_traces"]["duplicates_of_other_days"].value == 2  # t1 and t2, which the 20th holds
        assert _read(resources, "raw_traces_quarantine", NEXT).empty and nxt["raw_traces"]["quarantined_by_other_days"].value == 2  # the 20th quarantined them

        quarantine = resources["io_manager"].path_for(dg.AssetKey("raw_traces_quarantine"), DAY).read_bytes()
        _run(DAY, resources, instance)  # a rerun of the 20th leaves t9 with the night that took it
        assert resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY).read_bytes() == before
        assert resources["io_manager"].path_for(dg.AssetKey("raw_traces_quarantine"), DAY).read_bytes() == quarantine

        after = resources["io_manager"].path_for(dg.AssetKey("raw_traces"), NEXT).read_bytes()
        tags = {"dagster/backfill": "abcdefgh"}
        for day in (DAY, NEXT):  # a backfill over both days keeps every record where it was
            dg.materialize([raw_traces, raw_feedback_events], partition_key=day, resources=resources, instance=instance, tags=tags)
        assert resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY).read_bytes() == before
        assert resources["io_manager"].path_for(dg.AssetKey("raw_traces"), NEXT).read_bytes() == after
        cur.execute('INSERT INTO app."chat log; drop table x" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)', ("t20", "c", "u", "2026-11-22T09:00:00Z", "gpt-4o", None, "x", 5, 1))
        fresh = _run_tagged("2026-11-22", resources, instance, tags)
        assert fresh["raw_traces"]["window_start"].value == "2026-11-22T00:00:00+00:00"  # a backfill of a day never pulled: exactly its day


def test_a_missing_column_fails_the_run_naming_it(product_db, resources):
    _, url = product_db
    broken = PostgresTable(table="app.feedback", timestamp="at", columns={"event_id": "id", "type": "nope"})
    bad = {**_resources(resources, url), "postgres_source": PostgresSource(url=url, kinds=["feedback"], feedback=broken)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_feedback_events], partition_key=DAY, resources=bad, instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "table 'app.feedback' has no column nope" in failure.event_specific_data.error.message


def test_a_server_that_is_down_is_a_transient_failure():
    down = PostgresSource(url="postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", kinds=["feedback"], feedback=FEEDBACK)
    window = PullWindow(DAY, day_start(DAY), day_start(NEXT))
    with pytest.raises(SourceUnavailable, match="postgres app.feedback: "):
        down.pull("feedback", window, "2026-01-01", 7)
    assert raw_feedback_events.op.retry_policy is not None  # which the ingest step turns into a retry of the step
