"""The benchmark's verdict on its targets (`bench/run.py`): which targets a result measures, and whether each is met."""


def result(traces=1_000_000, days=1, total=94.3, ratio=3.1, peak=4_100.0, modes=5.8, sample=100_000, scaling=None) -> dict:
    figures = {
        "traces": traces,
        "days": days,
        "total_seconds": total,
        "ratio_to_duckdb": ratio,
        "peak_rss_mb": peak,
        "error_modes_100k_seconds": modes,
        "error_modes_100k": {"negatives": sample},
    }
    return figures if scaling is None else {**figures, "scaling": scaling}


def verdicts(rows: list[dict]) -> dict[str, bool]:
    return {row["target"]: row["met"] for row in rows}


def test_a_first_night_at_1m_traces_is_judged_on_every_target_it_measures(bench):
    rows = bench.targets(result())
    assert verdicts(rows) == {
        "nightly DAG wall seconds": False,
        "ingest + link + signals / DuckDB reference": False,
        "peak RSS MB (6 GB)": True,
        "error-mode assignment seconds, 100k negatives": True,
    }
    assert [row["measured"] for row in rows] == [94.3, 3.1, 4_100.0, 5.8]


def test_targets_are_met_at_their_limits_and_missed_above(bench):
    at_limits = verdicts(bench.targets(result(total=90.0, ratio=1.5, peak=6e9 / 2**20 - 1, modes=15.0)))
    assert all(at_limits.values())
    above = verdicts(bench.targets(result(total=90.01, ratio=1.51, peak=5_800.0, modes=15.01)))
    assert not any(above.values())


def test_a_steady_state_night_is_judged_on_its_peak_only(bench):
    assert set(verdicts(bench.targets(result(days=8)))) == {"peak RSS MB (6 GB)", "error-mode assignment seconds, 100k negatives"}


def test_other_sizes_measure_no_night_target_and_a_small_sample_no_error_mode_target(bench):
    assert bench.targets(result(traces=100_000, sample=11_000)) == []


def test_a_scaling_run_is_judged_on_the_growth_from_100k_to_1m(bench):
    scaling = [
        {"traces": 100_000, "total_seconds": 17.6, "time_ratio": 1.0, "size_ratio": 1.0},
        {"traces": 300_000, "total_seconds": 35.1, "time_ratio": 2.0, "size_ratio": 3.0},
        {"traces": 1_000_000, "total_seconds": 95.1, "time_ratio": 5.42, "size_ratio": 10.0},
    ]
    rows = bench.targets(result(scaling=scaling))
    assert rows[-1] == {"target": "time ratio for 10x the traces", "limit": 11.0, "measured": 5.42, "met": True}
    slow = [*scaling[:2], {**scaling[2], "time_ratio": 11.2}]
    assert verdicts(bench.targets(result(scaling=slow)))["time ratio for 10x the traces"] is False


def test_free_page_reporting_reads_the_kernels_settings_or_none_without_them(bench, tmp_path):
    parameters = tmp_path / "parameters"
    parameters.mkdir()
    for name, value in (("min_free_ms", "0\n"), ("page_reporting_order", "5\n"), ("max_waiting_mib", "1024\n"), ("reported_kib", "236408148\n")):
        (parameters / name).write_text(value)
    assert bench.free_page_reporting(parameters) == {"max_waiting_mib": "1024", "min_free_ms": "0", "page_reporting_order": "5"}
    assert bench.free_page_reporting(tmp_path / "absent") is None


def test_fresh_memory_is_timed_in_a_process_of_its_own(bench):
    seconds = bench.fresh_memory_seconds_per_gib()
    assert 0 < seconds < 60


def test_a_clock_counts_the_union_of_its_spans_within_an_interval(bench):
    clock = bench.SpanClock()
    clock.spans = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]
    assert clock.seconds(0.0, 10.0) == 4.0
    assert clock.seconds(2.5, 5.5) == 1.0
    assert clock.seconds(3.0, 5.0) == 0.0


def test_warehouse_clock_times_writes_and_lazy_reads_on_any_instance(bench, tmp_path, monkeypatch):
    import pandas as pd
    from upath import UPath

    from feedback_loop.resources.warehouse import PartitionedTable, WarehouseIOManager

    clock = bench.warehouse_clock(patch=monkeypatch.setattr)
    path = UPath(tmp_path) / "table" / "2026-11-20.parquet"
    WarehouseIOManager(root=str(tmp_path))._write(path, pd.DataFrame({"trace_id": ["a", "b"]}))
    table = PartitionedTable(files={"2026-11-20": path})
    assert table.read()["trace_id"].tolist() == ["a", "b"]
    assert table.row_count() == 2
    assert len(clock.spans) == 3 and all(end >= start for start, end in clock.spans)


def test_the_references_tables_are_written_by_pyarrow_with_the_dwell_in_seconds(bench, tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    con = duckdb.connect()
    con.execute("CREATE TABLE events AS SELECT * FROM (VALUES ('e1', 't1'), ('e2', NULL)) AS v(event_id, trace_id)")
    con.execute("CREATE TABLE signals AS SELECT 't1' AS trace_id, 2 AS copies, INTERVAL 90 SECOND AS dwell")
    for table in ("events", "signals"):
        bench._pyarrow_write(con, table, str(tmp_path / f"{table}.parquet"))
    assert pq.read_table(tmp_path / "events.parquet").to_pylist() == [{"event_id": "e1", "trace_id": "t1"}, {"event_id": "e2", "trace_id": None}]
    assert pq.read_table(tmp_path / "signals.parquet").to_pylist() == [{"trace_id": "t1", "copies": 2, "dwell": 90.0}]


def test_the_sampler_counts_a_steps_system_time_and_the_pages_it_touches_anew(bench):
    import time

    import numpy as np

    sampler = bench.RssSampler()
    sampler.start()
    time.sleep(0.1)
    start = time.time()
    time.sleep(0.05)  # a sample or two before the pages are touched
    touched = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB of new pages
    time.sleep(0.1)
    end = time.time()
    sampler.running = False
    sampler.join()
    spent = sampler.spent(start, end)
    assert set(spent) == set(bench.SPENT) and touched.sum() == 64 << 20
    assert spent["minor_faults"] >= 32  # one fault per page: 16,384 of 4 KiB, or 32 huge pages of 2 MiB
    assert 0 <= spent["system_seconds"] <= spent["cpu_seconds"]
    assert sampler.spent(end + 60, end + 61) == dict.fromkeys(bench.SPENT, 0.0)


def test_the_allocator_settings_a_night_inherits_are_recorded(bench):
    environ = {"MIMALLOC_PURGE_DELAY": "-1", "MALLOC_TRIM_THRESHOLD_": "0", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "PATH": "/usr/bin", "MALLOCX": "1"}
    assert bench.allocator_settings(environ) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "MALLOC_TRIM_THRESHOLD_": "0", "MIMALLOC_PURGE_DELAY": "-1"}
    assert bench.allocator_settings({"PATH": "/usr/bin"}) == {}
