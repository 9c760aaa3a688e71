"""The warehouse IO manager: loading a range of partitions gives the partitions' rows in order,
with the dtypes they were written with and each column in one Arrow chunk."""

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from feedback_loop.lib.paths import UnsafeName
from feedback_loop.lib.text import text_length
from feedback_loop.resources.warehouse import PartitionedTable, PartitionFrames, WarehouseIOManager

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
PARTITIONS = dg.DailyPartitionsDefinition(start_date=DAYS[0])
KEY = dg.AssetKey("table")


def day_frame(day: str, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trace_id": pd.Series([f"{day}-{i}" for i in range(rows)], dtype="string"),
            "text": pd.Series([None if i % 3 == 0 else f"text 'quoted' {i}" for i in range(rows)], dtype="string"),
            "count": pd.Series([pd.NA if i % 4 == 0 else i for i in range(rows)], dtype="Int64"),
            "score": [i / 7 for i in range(rows)],
            "flag": [i % 2 == 0 for i in range(rows)],
            "timestamp": pd.Series(pd.date_range(f"{day}T01:00", periods=rows, freq="min", tz="UTC"), dtype="datetime64[us, UTC]"),
            "partition_date": day,
        }
    )


def load(io_manager: WarehouseIOManager, columns: list[str] | None = None) -> pd.DataFrame:
    context = dg.build_input_context(
        asset_key=KEY,
        asset_partitions_def=PARTITIONS,
        asset_partition_key_range=dg.PartitionKeyRange(DAYS[0], DAYS[-1]),
        definition_metadata={"columns": columns} if columns else None,
    )
    return io_manager.load_input(context)


def one_chunk_per_column(frame: pd.DataFrame) -> bool:
    return all(column.num_chunks <= 1 for column in pa.Table.from_pandas(frame, preserve_index=False).columns)


@pytest.mark.parametrize("columns", [None, ["text", "trace_id", "not_stored"]])
def test_a_range_of_local_partitions_loads_in_order_with_its_dtypes_in_one_chunk(tmp_path, monkeypatch, columns):
    io_manager = WarehouseIOManager(root=str(tmp_path))
    frames = {day: day_frame(day, rows) for day, rows in zip(DAYS, (5, 5, 7), strict=True)}
    frames[DAYS[1]] = frames[DAYS[1]].iloc[0:0]  # an empty partition between, written as the IO manager writes one
    for day, frame in frames.items():
        WarehouseIOManager._write(io_manager.path_for(KEY, day), frame)
    expected = pd.concat([frames[DAYS[0]], frames[DAYS[2]]], ignore_index=True)
    expected = expected if columns is None else expected[["text", "trace_id"]]
    # Local files of one schema are read together (by DuckDB), not file by file and then joined.
    monkeypatch.setattr(WarehouseIOManager, "_read", staticmethod(lambda *args: pytest.fail("read file by file")))
    loaded = load(io_manager, columns)
    pd.testing.assert_frame_equal(loaded, expected)
    assert one_chunk_per_column(loaded)


def test_partitions_with_different_columns_still_load_together(tmp_path):
    io_manager = WarehouseIOManager(root=str(tmp_path))
    first, second = day_frame(DAYS[0], 4), day_frame(DAYS[1], 3).drop(columns="score")
    WarehouseIOManager._write(io_manager.path_for(KEY, DAYS[0]), first)
    WarehouseIOManager._write(io_manager.path_for(KEY, DAYS[1]), second)
    loaded = load(io_manager)
    pd.testing.assert_frame_equal(loaded, pd.concat([first, second], ignore_index=True))
    assert loaded["score"].isna().sum() == 3
    assert one_chunk_per_column(loaded)


def test_a_range_loads_from_a_url_root():
    io_manager = WarehouseIOManager(root="memory://warehouse-range-test")
    frames = [day_frame(day, 3) for day in DAYS]
    for day, frame in zip(DAYS, frames, strict=True):
        WarehouseIOManager._write(io_manager.path_for(KEY, day), frame)
    pd.testing.assert_frame_equal(load(io_manager), pd.concat(frames, ignore_index=True))


@pytest.mark.parametrize("root", ["local", "memory://warehouse-lazy-test"])
def test_a_lazy_input_reads_some_partitions_columns_rows_and_lengths(tmp_path, root):
    io_manager = WarehouseIOManager(root=str(tmp_path) if root == "local" else root)
    frames = {day: day_frame(day, 6) for day in DAYS}
    for day in DAYS[:2]:  # the third day is not materialized yet
        WarehouseIOManager._write(io_manager.path_for(KEY, day), frames[day])
    context = dg.build_input_context(
        asset_key=KEY,
        asset_partitions_def=PARTITIONS,
        asset_partition_key_range=dg.PartitionKeyRange(DAYS[0], DAYS[-1]),
        definition_metadata={"lazy": True, "columns": ["trace_id", "text"]},
    )
    table = io_manager.load_input(context)
    assert isinstance(table, PartitionedTable) and table.partitions == DAYS[:2] and table.row_count() == 12
    both = pd.concat([frames[DAYS[0]], frames[DAYS[1]]], ignore_index=True)
    pd.testing.assert_frame_equal(table.read(), both[["trace_id", "text"]])
    pd.testing.assert_frame_equal(table.read(partitions=[DAYS[1], DAYS[2]], columns=["count"]), frames[DAYS[1]][["count"]])
    wanted = pd.Series([f"{DAYS[1]}-4", f"{DAYS[0]}-5", f"{DAYS[0]}-1", "absent", None], dtype="string")
    rows = table.read(columns=["trace_id", "timestamp"], rows_where=("trace_id", wanted), lengths=["text"])
    expected = both.iloc[[1, 5, 10]][["trace_id", "timestamp"]].reset_index(drop=True)  # in the files' order
    pd.testing.assert_frame_equal(rows, expected.assign(text_length=text_length(both["text"].iloc[[1, 5, 10]]).reset_index(drop=True)))
    assert table.read(rows_where=("trace_id", pd.Series([], dtype="string"))).empty


def materialize_range(io_manager: WarehouseIOManager, yield_days: list[str]) -> tuple[dg.ExecuteInProcessResult, list[list[str]]]:
    """Materialize `table` over DAYS, its output made a partition at a time for `yield_days`; and,
    at each yield, which partition files were already on disk."""
    on_disk_at_yield = []

    @dg.asset(name="table", partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
    def table() -> dg.MaterializeResult:
        def frames():
            for day in yield_days:
                on_disk_at_yield.append([d for d in DAYS if io_manager.path_for(KEY, d).exists()])
                yield day, day_frame(day, 3)

        return dg.MaterializeResult(value=PartitionFrames(frames=frames(), metadata=lambda: {"days_made": len(on_disk_at_yield)}))

    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
    result = dg.materialize([table], resources={"io_manager": io_manager}, tags=tags, raise_on_error=False)
    return result, on_disk_at_yield


def test_an_output_made_a_partition_at_a_time_is_written_as_each_partition_is_yielded(tmp_path):
    io_manager = WarehouseIOManager(root=str(tmp_path))
    result, on_disk_at_yield = materialize_range(io_manager, DAYS)
    assert result.success
    assert on_disk_at_yield == [[], DAYS[:1], DAYS[:2]]  # each day written before the next is made
    pd.testing.assert_frame_equal(load(io_manager), pd.concat([day_frame(day, 3) for day in DAYS], ignore_index=True))
    materializations = result.asset_materializations_for_node("table")
    assert {m.partition for m in materializations} == set(DAYS)
    assert all(m.metadata["days_made"].value == 3 for m in materializations)  # the summary, gathered once all were made


def test_an_output_made_a_partition_at_a_time_must_make_every_partition_of_the_run(tmp_path):
    result, _ = materialize_range(WarehouseIOManager(root=str(tmp_path)), DAYS[:2])
    assert not result.success
    assert "no frame for partitions ['2026-11-03']" in str(result.all_events)


@pytest.mark.parametrize(("key", "partition"), [(["..", "x"], None), (["raw_traces"], "../../x"), (["a/b"], None), (["raw_traces"], "2026-11-20/../../x")])
def test_asset_keys_and_partition_keys_that_could_leave_the_root_are_refused(tmp_path, key, partition):
    with pytest.raises(UnsafeName):
        WarehouseIOManager(root=str(tmp_path)).path_for(dg.AssetKey(key), partition)
