"""The benchmark end to end (`bench/run.py`) at a small size: the stages it runs in processes of
their own, the JSON the issue asks for, and the summary line."""

import contextlib
import io
import json

import pytest

pytestmark = pytest.mark.slow  # the whole pipeline, or the benchmark

ASSETS = [
    "raw_feedback_events",
    "raw_traces",
    "linked_feedback",
    "implicit_signals",
    "trace_labels",
    "negative_traces",
    "error_modes",
    "error_mode_clusters",
    "regression_suite",
    "preference_dataset",
]


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    """`bench/run.py --traces 2000`, its cache and results in a folder of their own."""
    root = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(bench, "CACHE", root / "cache")
        patch.setattr(bench, "RESULTS", root / "results")
        patch.setattr("sys.argv", ["run.py", "--traces", "2000"])
        bench.main()
    (written,) = (root / "results").glob("*.json")
    return json.loads(written.read_text()), written, printed.getvalue()


def test_a_run_writes_the_figures_the_issue_asks_for(run):
    result = run[0]
    for key in ("traces", "events", "total_seconds", "peak_rss_mb", "per_asset", "ingest_link_signals_seconds", "duckdb_reference_seconds", "error_modes_seconds", "negatives"):
        assert key in result, key
    assert result["success"] and result["traces"] == 2000
    assert 2.5 * 2000 <= result["events"] <= 3.5 * 2000  # about 3 events per trace
    assert 0 < result["negatives"] < 2000
    assert result["total_seconds"] > 0 and result["peak_rss_mb"] > 0 and result["duckdb_reference_seconds"] > 0


def test_every_asset_of_the_night_has_its_seconds_and_peak(run):
    per_asset = run[0]["per_asset"]
    assert set(ASSETS) <= set(per_asset)
    for asset in ASSETS:
        assert per_asset[asset]["seconds"] > 0 and per_asset[asset]["peak_rss_mb"] > 0, asset
    steps = sum(figures["seconds"] for figures in per_asset.values())
    assert steps <= run[0]["total_seconds"]  # the steps run one after the other, within the night


def test_the_ratio_is_ingest_link_and_signals_against_the_reference(run):
    result = run[0]
    ours = sum(result["per_asset"][step]["seconds"] for step in ("raw_feedback_events", "raw_traces", "linked_feedback", "implicit_signals"))
    assert result["ingest_link_signals_seconds"] == pytest.approx(ours, abs=0.05)
    assert result["ratio_to_duckdb"] == pytest.approx(result["ingest_link_signals_seconds"] / result["duckdb_reference_seconds"], rel=0.01)


def test_the_last_line_printed_is_the_summary_naming_the_results_file(run):
    result, written, printed = run
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("SUMMARY traces=2,000 ") and lines[-1].endswith(f"-> bench/results/{written.name}")
    assert f"total={result['total_seconds']:.1f}s" in lines[-1]
    assert "asset or check" in printed and "targets:" in printed
