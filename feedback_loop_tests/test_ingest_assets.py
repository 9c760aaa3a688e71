"""The ingest assets through Dagster: partitions, quarantine, metadata, checks, idempotent reruns."""

import json

import dagster as dg
import pandas as pd

from feedback_loop.defs.ingest.assets import raw_feedback_events, raw_traces
from feedback_loop.resources.settings import FeedbackLoopSettings, IngestConfig
from feedback_loop.resources.warehouse import WarehouseIOManager
from feedback_loop_tests.conftest import END

DAY = END.isoformat()


def materialize(resources):
    return dg.materialize([raw_traces, raw_feedback_events], partition_key=DAY, resources=resources)


def test_ingest_writes_partitioned_parquet_and_quarantine(resources, generated):
    result = materialize(resources)
    assert result.success
    warehouse = resources["io_manager"]
    traces = pd.read_parquet(warehouse.path_for(dg.AssetKey("raw_traces"), DAY).path)
    assert len(traces) == 300 and traces["trace_id"].is_unique
    assert (traces["timestamp"].dt.strftime("%Y-%m-%d") == DAY).all()
    quarantine = pd.read_parquet(warehouse.path_for(dg.AssetKey("raw_feedback_events_quarantine"), DAY).path)
    truth = [json.loads(line) for line in (generated / "ground_truth" / "bad_rows.jsonl").read_text().splitlines()]
    injected = {t["kind"] for t in truth if t["date"] == DAY and t["kind"] != "orphan"}
    assert (
        {r.split(" '")[0] for r in quarantine["reason"]}
        == {"malformed JSON", "missing timestamp", "unknown event type", "not valid UTF-8"}
        == {k if k != "unknown event type" else k for k in injected}
    )
    meta = result.asset_materializations_for_node("raw_feedback_events")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in meta}
    assert by_key["raw_feedback_events"]["quarantined"].value == len(quarantine)
    assert by_key["raw_feedback_events"]["dagster/row_count"].value > 0
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"raw_traces:quarantine_share": True, "raw_feedback_events:quarantine_share": True}


def test_quarantine_check_fails_past_the_threshold(resources):
    strict = {**resources, "settings": FeedbackLoopSettings(ingest=IngestConfig(max_quarantine_share=0.0))}
    result = materialize(strict)
    assert result.success  # a failed check never crashes the run
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    assert checks["raw_feedback_events:quarantine_share"] is False
    assert checks["raw_traces:quarantine_share"] is True


def test_rerunning_a_partition_gives_the_same_rows(resources):
    materialize(resources)
    path = resources["io_manager"].path_for(dg.AssetKey("raw_feedback_events"), DAY).path
    first = pd.read_parquet(path)
    materialize(resources)
    second = pd.read_parquet(path)
    pd.testing.assert_frame_equal(first, second)
    assert second["event_id"].is_unique


def test_warehouse_root_can_be_a_url(resources):
    url_resources = {**resources, "io_manager": WarehouseIOManager(root="memory://warehouse-test")}
    assert materialize(url_resources).success
    stored = url_resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY)
    assert str(stored) == f"memory://warehouse-test/raw_traces/{DAY}.parquet"
    with stored.open("rb") as fh:
        assert len(pd.read_parquet(fh)) == 300


def test_a_record_landed_again_on_a_later_day_is_a_counted_duplicate(resources, tmp_path):
    from feedback_loop.resources.sources import LandingFolder
    from feedback_loop_tests.conftest import write_jsonl

    span = {"trace_id": "t1", "span_id": "s1", "input": "q", "output": "a"}
    write_jsonl(
        tmp_path / "landing" / "traces" / "t.jsonl",
        [{**span, "timestamp": "2026-11-19T10:00:00Z"}, {**span, "timestamp": "2026-11-20T10:00:00Z"}, {**span, "span_id": "s2", "timestamp": "2026-11-20T11:00:00Z"}],
    )
    write_jsonl(tmp_path / "landing" / "feedback" / "f.jsonl", [{"event_id": "e", "trace_id": "t1", "type": "copy", "timestamp": f"2026-11-{d}T12:00:00Z"} for d in (19, 20)])
    landing = {**resources, "landing": LandingFolder(root=str(tmp_path / "landing"))}
    for day in ("2026-11-19", "2026-11-20"):
        result = dg.materialize([raw_traces, raw_feedback_events], partition_key=day, resources=landing)
    warehouse = resources["io_manager"]
    assert pd.read_parquet(warehouse.path_for(dg.AssetKey("raw_traces"), "2026-11-20").path)["span_id"].tolist() == ["s2"]
    assert pd.read_parquet(warehouse.path_for(dg.AssetKey("raw_feedback_events"), "2026-11-20").path).empty
    metadata = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("raw_traces")}
    assert metadata["raw_traces"]["duplicates_of_other_days"].value == 1 == metadata["raw_traces"]["duplicates_dropped"].value


def test_missing_landing_input_fails_the_run_and_leaves_the_warehouse_day(resources, tmp_path):
    from feedback_loop.resources.sources import LandingFolder

    assert materialize(resources).success
    path = resources["io_manager"].path_for(dg.AssetKey("raw_traces"), DAY).path
    before = open(path, "rb").read()
    (tmp_path / "empty" / "traces").mkdir(parents=True)
    (tmp_path / "empty" / "feedback").mkdir(parents=True)
    for root, message in ((tmp_path / "nowhere", "has no traces/ folder"), (tmp_path / "empty", f"no trace records for {DAY}")):
        result = dg.materialize([raw_traces], partition_key=DAY, resources={**resources, "landing": LandingFolder(root=str(root))}, raise_on_error=False)
        assert not result.success
        assert message in str(result.get_step_failure_events()[0].event_specific_data.error.message)
        assert open(path, "rb").read() == before
    allowed = {**resources, "landing": LandingFolder(root=str(tmp_path / "empty")), "settings": FeedbackLoopSettings(ingest=IngestConfig(allow_empty_day=True))}
    assert dg.materialize([raw_traces], partition_key=DAY, resources=allowed).success
