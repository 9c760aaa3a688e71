"""Benchmark the nightly pipeline at production scale.

    python bench/run.py [--traces N] [--days D] [--scaling] [--repeat R] [--keep]
    python bench/run.py --compare REV [--traces N] [--days D] [--repeat R]

For N traces (default 1,000,000) and about 3N feedback events in one daily partition:
1. generates the landing files with the project's generator (seeded, cached in bench/cache/);
2. runs the nightly DAG for that partition through Dagster, exactly as `feedback-loop run` does
   (ingest job, then the relabel job), in a fresh process, and reports wall seconds, CPU seconds and peak RSS
   per asset and in total, and per asset the seconds spent reading and writing the warehouse's
   Parquet files (timed inside the warehouse IO manager's reads and writes);
3. runs a DuckDB SQL reference of ingest + dedupe + link + per-trace signal aggregation over the
   same files, and reports our ingest + link + signals time as a ratio to it (and to the reference
   timed until it has also written its four tables as Parquet, as our steps write theirs: by DuckDB's
   own writer, and handed to Arrow and written by pyarrow as our warehouse writes);
4. times linking + signals + labels as plain functions on the run's ingested partition (in memory,
   without the Parquet reads and writes of the Dagster steps), and within the signals their text
   work, which the reference does not do; the reference with its writes (by the faster writer) plus
   that text work is printed as a floor for ingest + link + signals;
5. times error-mode assignment on 100,000 negative traces;
6. prints the targets the run measures, each with its figure and whether it is met (`targets` in
   the JSON): at 1M traces the night's wall time (<= 90 s) and ingest + link + signals against the
   reference (<= 1.5x) for a first night, and the peak RSS (<= 6 GB) for any window; error-mode
   assignment on 100,000 negatives (<= 15 s); with `--scaling`, the time for 10x the traces (<= 11x);
   before them, the seconds this machine takes to fill 1 GiB of new memory, its kernel's free
   page reporting settings and the allocator settings in the environment (`machine` in the JSON):
   a VM that hands freed pages back to its host makes every step that allocates anew pay again;
   each step's system seconds and pages touched anew are in its row.
`--days D` measures a night in steady state: the landing folder holds D days of N traces each, the
days before the last are ingested first (untimed, in a process of their own), and the timed
nightly run for the last day relabels every trace day of its window
(`FEEDBACK_LOOP_LATE_FEEDBACK_DAYS` + 1 days, 8 by default) as production nights do; with the
default, 1, the window holds only the run's own day.
`--scaling` runs 100k, 300k and 1M and prints how time grows; `--repeat R` runs the DAG and the
DuckDB reference R times and reports medians (on a noisy machine). Results go to
bench/results/<timestamp>.json; the last line printed is a one-line summary.
`--compare REV` is a before/after on one machine: nights of the code at git revision REV (checked
out in a worktree under bench/cache/) and of the working tree alternate, R a side (default 2), in
the order base, head, head, base, ... so that a machine drifting in speed favours neither; it
prints each step's median wall and CPU seconds on both sides, and whether both sides built the same
warehouse tables and datasets (bench/results/<timestamp>-compare.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import inspect
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
DAY = dt.date(2026, 11, 20)
INGEST_LINK_SIGNALS = ("raw_traces", "raw_feedback_events", "linked_feedback", "implicit_signals")
LINK_SIGNALS_LABELS = ("linked_feedback", "implicit_signals", "trace_labels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=1, help="trace days of N traces each in the landing folder; the nightly run for the last one relabels its window (steady state)")
    parser.add_argument("--scaling", action="store_true", help="run 100k, 300k and 1M traces")
    parser.add_argument("--keep", action="store_true", help="keep the run's warehouse and datasets")
    parser.add_argument("--repeat", type=int, default=None, help="run the DAG and the DuckDB reference N times; report medians (with --compare: nights per side, default 2)")
    parser.add_argument("--compare", metavar="REV", help="alternate nights of the code at git revision REV and of the working tree; compare times and outputs")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--landing", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "generate":
        return generate_stage(args.traces, Path(args.landing), args.days)
    if args.stage == "earlier_days":
        return earlier_days_stage(Path(args.landing), Path(args.workdir), args.days)
    if args.stage == "pipeline":
        return pipeline_stage(Path(args.landing), Path(args.workdir), args.days)
    if args.stage == "reference":
        return reference_stage(Path(args.landing))
    if args.stage == "error_modes":
        return error_modes_stage(Path(args.workdir))
    if args.stage == "link_signals_labels":
        return link_signals_labels_stage(Path(args.workdir))
    if args.compare:
        return compare_stage(args.compare, args.traces, args.days, args.repeat or 2)
    sizes = [100_000, 300_000, 1_000_000] if args.scaling else [args.traces]
    results = [run_size(n, args.keep, args.repeat or 1, args.days) for n in sizes]
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    payload = results[-1] if len(results) == 1 else {**results[-1], "scaling": scaling(results)}
    payload["targets"] = targets(payload)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(payload, indent=2))
    if len(results) > 1:
        print_scaling(results)
    print_targets(payload["targets"])
    last = results[-1]
    print(
        f"\nSUMMARY traces={last['traces']:,} window_traces={last['window_traces']:,} events={last['events']:,} total={last['total_seconds']:.1f}s "
        f"peak_rss={last['peak_rss_mb']:,.0f}MB ingest+link+signals={last['ingest_link_signals_seconds']:.1f}s "
        f"duckdb={last['duckdb_reference_seconds']:.1f}s ratio={last['ratio_to_duckdb']:.2f} night/duckdb={last['night_to_duckdb']:.1f} "
        f"link+signals+labels={last['link_signals_labels_seconds']:.1f}s (in memory; {last['link_signals_labels_dag_seconds']:.1f}s as steps) "
        f"error_modes_100k={last['error_modes_100k_seconds']:.1f}s targets_met={sum(t['met'] for t in payload['targets'])}/{len(payload['targets'])} "
        f"-> bench/results/{stamp}.json"
    )


def landing_of(traces: int, days: int) -> tuple[str, Path]:
    """The run's name and its landing folder, generated on first use and cached."""
    name = f"{traces}" if days == 1 else f"{traces}x{days}"
    landing = CACHE / f"landing-{name}"
    if not (landing / "ground_truth" / "summary.json").exists():
        print(f"generating {days} day(s) of {traces:,} traces into {landing} (cached for later runs) ...", flush=True)
        shutil.rmtree(landing, ignore_errors=True)
        stage("generate", "--traces", str(traces), "--days", str(days), "--landing", str(landing))
    return name, landing


REFERENCE_MEDIANS = ("seconds", "seconds_with_writes", "seconds_with_pyarrow_writes", "system_seconds", "minor_faults")


def run_size(traces: int, keep: bool, repeat: int = 1, days: int = 1) -> dict:
    name, landing = landing_of(traces, days)
    workdir = CACHE / f"run-{name}"
    runs, references = [], []
    for n in range(repeat):
        fresh_workdir(workdir)
        print(f"running the nightly DAG on {traces:,} traces ({n + 1}/{repeat}) ...", flush=True)
        runs.append(json.loads(stage("pipeline", "--landing", str(landing), "--workdir", str(workdir), "--days", str(days))))
        print(f"running the DuckDB reference ({n + 1}/{repeat}) ...", flush=True)
        references.append(json.loads(stage("reference", "--landing", str(landing))))
    pipeline = median_run(runs)
    reference = {
        **references[0],
        **{name: round(statistics.median(r[name] for r in references), 2) for name in REFERENCE_MEDIANS},
        "runs_seconds": [r["seconds"] for r in references],
        "runs_seconds_with_writes": [r["seconds_with_writes"] for r in references],
        "runs_seconds_with_pyarrow_writes": [r["seconds_with_pyarrow_writes"] for r in references],
    }
    print("timing linking + signals + labels in memory ...", flush=True)
    core = json.loads(stage("link_signals_labels", "--workdir", str(workdir)))
    print("timing error-mode assignment on 100k negatives ...", flush=True)
    modes = json.loads(stage("error_modes", "--workdir", str(workdir)))
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    ils = sum(pipeline["per_asset"][a]["seconds"] for a in INGEST_LINK_SIGNALS if a in pipeline["per_asset"])
    # What no implementation that stores the four tables and derives the text signals can beat (with the faster writer).
    with_writes = min(reference["seconds_with_writes"], reference["seconds_with_pyarrow_writes"])
    floor = with_writes + core["signals_text"]
    result = {
        **pipeline,
        "ingest_link_signals_seconds": round(ils, 2),
        "ingest_link_signals_io_seconds": round(sum(pipeline["per_asset"][a]["io_seconds"] for a in INGEST_LINK_SIGNALS if a in pipeline["per_asset"]), 2),
        "duckdb_reference_seconds": reference["seconds"],
        "duckdb_reference": reference,
        "ratio_to_duckdb": round(ils / reference["seconds"], 2),
        "duckdb_reference_with_writes_seconds": reference["seconds_with_writes"],
        "ratio_to_duckdb_with_writes": round(ils / reference["seconds_with_writes"], 2),
        # The whole night in units of the reference run on the same machine: for one size, comparable
        # across machines (and hours) whose speed differs, as absolute seconds are not.
        "night_to_duckdb": round(pipeline["total_seconds"] / reference["seconds"], 2),
        # Each night against the reference run right after it: steady while the machine's speed moves within the hour.
        "night_to_duckdb_runs": [round(run["total_seconds"] / ref["seconds"], 2) for run, ref in zip(runs, references, strict=True)],
        "writes_floor_to_duckdb": round(with_writes / reference["seconds"], 2),
        "ingest_link_signals_floor_seconds": round(floor, 2),
        "floor_to_duckdb": round(floor / reference["seconds"], 2),
        "link_signals_labels_seconds": core["seconds"],
        "link_signals_labels": core,
        "link_signals_labels_dag_seconds": round(sum(pipeline["per_asset"][a]["seconds"] for a in LINK_SIGNALS_LABELS if a in pipeline["per_asset"]), 2),
        "error_modes_seconds": pipeline["per_asset"].get("error_modes", {}).get("seconds"),
        "error_modes_100k_seconds": modes["seconds"],
        "error_modes_100k": modes,
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "fresh_memory_seconds_per_gib": fresh_memory_seconds_per_gib(),
            "free_page_reporting": free_page_reporting(),
            "allocator_settings": allocator_settings(),
        },
    }
    print_run(result)
    return result


def fresh_memory_seconds_per_gib() -> float:
    """Seconds a fresh process takes to fill 1 GiB of new memory. On a virtual machine whose guest
    hands its free pages back to the hypervisor (`free_page_reporting`), each page touched again
    is backed again by the host, up to tens of times slower than memory the guest has kept.
    Every step that allocates anew pays it."""
    code = "import time, numpy; s = time.perf_counter(); numpy.ones(1 << 30, dtype=numpy.uint8); print(time.perf_counter() - s)"
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout), 2)


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def free_page_reporting(parameters: Path = PAGE_REPORTING) -> dict[str, str] | None:
    """The guest kernel's free page reporting settings (how soon freed memory goes back to the
    hypervisor), or None on a kernel without it."""
    if not parameters.is_dir():
        return None
    return {path.name: path.read_text().strip() for path in sorted(parameters.iterdir()) if path.name in ("min_free_ms", "page_reporting_order", "max_waiting_mib")}


def allocator_settings(environ: dict[str, str] = os.environ) -> dict[str, str]:
    """The environment's settings of the allocators a night runs on (Arrow's mimalloc, glibc's
    malloc, Arrow's pool choice): the stages inherit them, and they move its seconds and its peak."""
    return {name: value for name, value in sorted(environ.items()) if name.startswith(ALLOCATOR_PREFIXES)}


ALLOCATOR_PREFIXES = ("MIMALLOC_", "MALLOC_", "GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")


def fresh_workdir(workdir: Path) -> None:
    """An empty `workdir`, with the disk's pending writes flushed first: a night started while the
    kernel still writes back the last night's gigabytes waits on the disk (its first steps took 2.5x
    their CPU time in wall time here) and measures the previous night, not itself."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    os.sync()


def median_run(runs: list[dict]) -> dict:
    """One DAG result from repeated runs: the median seconds (total and per step), the largest peak
    RSS; each run's own figures are kept under `dag_runs`. (This machine's runs of the same code
    differ by up to a sixth in total and a third per step.)"""
    if len(runs) == 1:
        return runs[0]
    per_asset = {}
    for asset, figures in runs[0]["per_asset"].items():
        shared = [name for name in figures if all(name in r["per_asset"][asset] for r in runs)]  # an older revision's runs record fewer
        per_asset[asset] = {name: round((max if name == "peak_rss_mb" else statistics.median)(r["per_asset"][asset][name] for r in runs), 2) for name in shared}
    return {
        **runs[0],
        "success": all(r["success"] for r in runs),
        "total_seconds": round(statistics.median(r["total_seconds"] for r in runs), 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "per_asset": per_asset,
        "dag_runs": runs,
    }


def stage(name: str, *args: str, root: Path = HERE.parent) -> str:
    """Run a stage in a fresh process, with the code of the checkout at `root` (default: this one)."""
    out = subprocess.run([sys.executable, str(root / "bench" / "run.py"), "--stage", name, *args], capture_output=True, text=True, env=code_of(root))
    if out.returncode == -signal.SIGKILL:
        sys.exit(f"the {name} stage was killed (SIGKILL): most likely out of memory; the relabel run holds its whole window (docs/benchmark.md)")
    if out.returncode:
        sys.exit(f"the {name} stage failed with exit code {out.returncode}:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def code_of(root: Path) -> dict[str, str]:
    """The environment in which a script of the checkout at `root` imports that checkout's
    `feedback_loop` (ahead of the one the virtualenv has installed)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def generate_stage(traces: int, landing: Path, days: int) -> None:
    from feedback_loop.sample.generator import GeneratorConfig, generate

    start = time.perf_counter()
    config = GeneratorConfig(
        days=days,
        traces_per_day=traces,
        seed=2026,
        end_date=DAY,
        file_format="parquet",
        bad_response_share=0.15,
        extra_events_per_trace=2.2,
        bad_row_share=0.01,
        prompt_chars=420,
        output_chars=800,
    )
    summary = generate(landing, config)
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - start, 1)}))


SPENT = ("cpu_seconds", "system_seconds", "minor_faults", "iowait_seconds", "steal_seconds")  # what `RssSampler.spent` counts, in sample order


class RssSampler(threading.Thread):
    """Samples, every 20 ms, this process's resident set size, CPU seconds and, of them, system
    seconds (its own and its waited-for children's, as `os.times` counts them), its minor page
    faults (pages it touched anew, from /proc/self/stat), and the machine's iowait and steal seconds
    (all cores, from /proc/stat): time a step waited on the disk, or for the hypervisor to run it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, ...]] = []  # time, RSS MB, CPU s, system s, minor faults, iowait s, steal s
        self.running = True
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while self.running:
            with open("/proc/self/status") as fh:
                rss = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))
            with open("/proc/stat") as fh:
                fields = fh.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
            with open("/proc/self/stat") as fh:
                own = fh.read()
            after_name = own[own.rindex(")") + 2 :].split()  # from field 3 (state) on: minflt is field 10, cminflt 11
            faults = int(after_name[7]) + int(after_name[8])
            times = os.times()
            system = times.system + times.children_system
            cpu = times.user + times.children_user + system
            self.samples.append((time.time(), rss, cpu, system, faults, int(fields[5]) / self.tick, int(fields[8]) / self.tick))
            time.sleep(0.02)

    def peak(self, start: float, end: float) -> float:
        inside = [sample[1] for sample in self.samples if start <= sample[0] <= end]
        return max(inside, default=0.0)

    def spent(self, start: float, end: float) -> dict[str, float]:
        """CPU, system, iowait and steal seconds and minor page faults between the first and the last
        sample taken from `start` to `end`."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if not inside:
            return dict.fromkeys(SPENT, 0.0)
        first, last = inside[0], inside[-1]
        return {name: round(last[i] - first[i], 2) for i, name in enumerate(SPENT, start=2)}


def bench_environment(landing: Path, workdir: Path) -> None:
    """The pipeline's settings for a benchmark run, and a Dagster home under `workdir`."""
    os.environ.update(
        FEEDBACK_LOOP_LANDING=str(landing),
        FEEDBACK_LOOP_WAREHOUSE=str(workdir / "warehouse"),
        FEEDBACK_LOOP_DATASETS=str(workdir / "datasets"),
        FEEDBACK_LOOP_STATE=str(workdir / "state"),
        FEEDBACK_LOOP_USER_HASH_KEY="benchmark",
        FEEDBACK_LOOP_START_DATE="2026-11-01",
    )
    (workdir / "home").mkdir(exist_ok=True)
    (workdir / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def earlier_days_stage(landing: Path, workdir: Path, days: int) -> None:
    """The nights before the benchmarked one, ingested only (the timed relabel run recomputes their trace days)."""
    bench_environment(landing, workdir)
    import dagster as dg

    from feedback_loop.pipeline import ingest_job

    with dg.DagsterInstance.from_config(str(workdir / "home")) as instance:
        for earlier in range(days - 1, 0, -1):
            partition = (DAY - dt.timedelta(days=earlier)).isoformat()
            with dg.execute_job(dg.reconstructable(ingest_job), instance=instance, tags={"dagster/partition": partition}) as result:
                assert result.success, f"ingest of {partition} failed"


def pipeline_stage(landing: Path, workdir: Path, days: int) -> None:
    # The earlier nights in a process of their own: the timed night starts in a fresh process, as a
    # launched run does, not in one that has already run (and kept the memory of) days of ingests.
    if days > 1:
        subprocess.run([sys.executable, __file__, "--stage", "earlier_days", "--landing", str(landing), "--workdir", str(workdir), "--days", str(days)], check=True)
    bench_environment(landing, workdir)
    import dagster as dg
    import pyarrow.parquet as pq

    from feedback_loop.defs.jobs import relabel_window
    from feedback_loop.pipeline import run_nightly

    clock = warehouse_clock()
    sampler = RssSampler()
    sampler.start()
    with dg.DagsterInstance.from_config(str(workdir / "home")) as instance:
        start = time.time()
        report = run_nightly(DAY.isoformat(), instance)  # the code location's own jobs, run as a launched run runs them
        end = time.time()
        per_asset = {}
        for run in report.runs:
            steps: dict[str, list] = {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is not None and event.step_key and not event.event_type_value.endswith("_PLANNED"):
                    steps.setdefault(event.step_key, []).append((entry.timestamp, event.event_type_value))
            starts = {step: next(t for t, kind in events if kind == "STEP_START") for step, events in steps.items()}
            for step, events in sorted(steps.items(), key=lambda item: starts[item[0]]):
                step_start = starts[step]
                step_end = next(t for t, kind in events if kind in ("STEP_SUCCESS", "STEP_FAILURE"))
                per_asset[step] = {
                    "seconds": round(step_end - step_start, 2),
                    "peak_rss_mb": round(sampler.peak(step_start, step_end), 0),
                    **sampler.spent(step_start, step_end),
                    "io_seconds": round(clock.seconds(step_start, step_end), 2),
                }
        materializations = {m.asset_key.to_user_string(): m.metadata for m in report.materializations()}
    sampler.running = False
    first, last = (dt.date.fromisoformat(day) for day in relabel_window(DAY.isoformat()))
    window = [first + dt.timedelta(days=d) for d in range((last - first).days + 1)]
    files = [workdir / "warehouse" / "raw_traces" / f"{day.isoformat()}.parquet" for day in window]
    window_traces = sum(pq.ParquetFile(path).metadata.num_rows for path in files if path.exists())
    negatives = materializations.get("negative_traces", {}).get("dagster/row_count")
    events = materializations.get("raw_feedback_events", {}).get("records_read")
    traces = materializations.get("raw_traces", {}).get("records_read")
    print(
        json.dumps(
            {
                "success": report.success,
                "traces": traces.value if traces else None,
                "days": days,
                "window_traces": window_traces,
                "window_days": len(window),
                "events": events.value if events else None,
                "negatives": negatives.value if negatives else None,
                "total_seconds": round(end - start, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
                "per_asset": per_asset,
            }
        )
    )


class SpanClock:
    """Spans of wall time spent inside the functions it wraps, on any thread of this process;
    `seconds` is their union within an interval (a step's, say)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def wrap(self, owner, names: tuple[str, ...], patch=setattr) -> None:
        """Replaces each of `owner`'s functions `names` (a class's methods, static or not, or a module's functions) with a timed one."""
        for name in names:
            static = isinstance(inspect.getattr_static(owner, name), staticmethod)
            timed = self.timed(getattr(owner, name))
            patch(owner, name, staticmethod(timed) if static else timed)

    def timed(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                self.spans.append((start, time.time()))

        return wrapper

    def seconds(self, start: float, end: float) -> float:
        """Wall seconds from `start` to `end` during which some wrapped function was running."""
        total, reached = 0.0, start
        for span_start, span_end in sorted(self.spans):
            span_start, span_end = max(span_start, reached), min(span_end, end)
            if span_end > span_start:
                total += span_end - span_start
                reached = span_end
        return total


def warehouse_clock(patch=setattr) -> SpanClock:
    """A clock of the warehouse's Parquet reads and writes: `WarehouseIOManager.load_input` (inputs
    read before the step runs) and `_write` (every partition file written, whenever the IO manager
    writes it), and `PartitionedTable.read` and `row_count` (lazy inputs, read while the step runs).
    (Timing the event log's input and output events instead counts the computation of an output
    made as it is written, `PartitionFrames`, as IO.)"""
    from feedback_loop.resources.warehouse import PartitionedTable, WarehouseIOManager

    clock = SpanClock()
    clock.wrap(WarehouseIOManager, ("load_input", "_write"), patch)
    clock.wrap(PartitionedTable, ("read", "row_count"), patch)
    return clock


def reference_stage(landing: Path) -> None:
    """Ingest + dedupe + link + per-trace signal aggregation, in DuckDB SQL; then, timed on top, the
    four tables written as Parquet (our steps write theirs; the target compares without the writes)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    day = DAY.isoformat()
    traces_glob, feedback_glob = str(landing / "traces" / "*.parquet"), str(landing / "feedback" / "*.parquet")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE traces AS
        SELECT * FROM (
            SELECT trace_id, coalesce(span_id, trace_id) AS span_id, session_id, user_id, TRY_CAST(timestamp AS TIMESTAMPTZ) AS ts,
                   model, prompt_version, input, output, latency_ms,
                   row_number() OVER (PARTITION BY trace_id, coalesce(span_id, trace_id) ORDER BY timestamp) AS n
            FROM read_parquet('{traces_glob}', union_by_name = true)
        ) WHERE n = 1 AND ts IS NOT NULL AND strftime(ts, '%Y-%m-%d') = '{day}'
    """)
    con.execute(f"""
        CREATE TEMP TABLE events AS
        SELECT * FROM (
            SELECT event_id, trace_id, span_id, session_id, user_id, TRY_CAST(timestamp AS TIMESTAMPTZ) AS ts, lower(type) AS type,
                   value, reason, comment, row_number() OVER (PARTITION BY event_id ORDER BY timestamp) AS n
            FROM read_parquet('{feedback_glob}', union_by_name = true)
        ) WHERE n = 1 AND ts IS NOT NULL AND strftime(ts, '%Y-%m-%d') = '{day}'
    """)
    con.execute("""
        CREATE TEMP TABLE linked AS
        SELECT e.*, t.trace_id AS linked_trace
        FROM (SELECT * FROM events WHERE trace_id IS NOT NULL) e LEFT JOIN traces t ON t.trace_id = e.trace_id
        UNION ALL
        SELECT e.*, s.trace_id AS linked_trace
        FROM (SELECT * FROM events WHERE trace_id IS NULL) e ASOF LEFT JOIN traces s ON s.session_id = e.session_id AND e.ts >= s.ts
    """)
    con.execute("""
        CREATE TEMP TABLE signals AS
            SELECT t.trace_id,
                   count(*) FILTER (WHERE l.type = 'thumbs_up') AS thumbs_up,
                   count(*) FILTER (WHERE l.type = 'thumbs_down') AS thumbs_down,
                   count(*) FILTER (WHERE l.type = 'copy') AS copies,
                   max(length(l.value) / greatest(length(t.output), 1)) FILTER (WHERE l.type = 'copy') AS copied_share,
                   count(*) FILTER (WHERE l.type = 'regenerate') AS regenerations,
                   count(*) FILTER (WHERE l.type = 'abandon') AS abandons,
                   arg_max(l.value, l.ts) FILTER (WHERE l.type IN ('edit', 'correction')) AS edit_text,
                   avg(TRY_CAST(l.value AS DOUBLE)) FILTER (WHERE l.type = 'rating') AS rating,
                   min(l.ts) - max(t.ts) AS dwell
            FROM traces t LEFT JOIN linked l ON l.linked_trace = t.trace_id
            GROUP BY t.trace_id
    """)
    seconds = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    # What our steps also do and the reference does not: write each table, as the assets are written;
    # by DuckDB's own writer, and (as our warehouse writes) handed to Arrow and written by pyarrow.
    with_writes = {}
    for writer, write in {"duckdb": _duckdb_write, "pyarrow": _pyarrow_write}.items():
        with tempfile.TemporaryDirectory() as out:
            begin = time.perf_counter()
            for table in ("traces", "events", "linked", "signals"):
                write(con, table, f"{out}/{table}.parquet")
            with_writes[writer] = seconds + time.perf_counter() - begin
    signals = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    linked = con.execute("SELECT count(*) FILTER (WHERE linked_trace IS NOT NULL), count(*) FROM linked").fetchone()
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "seconds_with_writes": round(with_writes["duckdb"], 2),
                "seconds_with_pyarrow_writes": round(with_writes["pyarrow"], 2),
                "system_seconds": round(used.ru_stime - usage.ru_stime, 2),
                "minor_faults": used.ru_minflt - usage.ru_minflt,
                "traces_with_signals": signals,
                "linked_events": linked[0],
                "events": linked[1],
            }
        )
    )


def _duckdb_write(con, table: str, path: str) -> None:
    """Write a table of `con` as Parquet by DuckDB's own writer."""
    con.execute(f"COPY {table} TO '{path}' (FORMAT parquet)")


def _pyarrow_write(con, table: str, path: str) -> None:
    """Write a table of `con` as our warehouse writes a frame: as an Arrow table, by `pq.write_table`
    (the dwell, a DuckDB interval that Parquet has no type for, in seconds)."""
    import pyarrow.parquet as pq

    dwell = " REPLACE (epoch(dwell) AS dwell)" if table == "signals" else ""
    pq.write_table(con.sql(f"SELECT *{dwell} FROM {table}").to_arrow_table(), path)


def link_signals_labels_stage(workdir: Path) -> None:
    """Linking, implicit signals and labels of the run's partition, as the plain functions, in memory."""
    import pandas as pd

    from feedback_loop.lib import signals as signal_functions
    from feedback_loop.lib.columns import one_chunk
    from feedback_loop.lib.labels import label_traces
    from feedback_loop.lib.linking import TRACE_KEYS, link_feedback
    from feedback_loop.lib.params import LabelWeights, LinkingParams, SignalParams
    from feedback_loop.lib.signals import RESPONSE_COLUMNS, implicit_signals

    # The signals' text work, which the DuckDB reference does not do: prompt keys, edit distances, rephrase similarity.
    text_clock = SpanClock()
    text_clock.wrap(signal_functions, ("normalize_prompt", "classify_edits", "_rephrases"))
    day = DAY.isoformat()
    events = one_chunk(pd.read_parquet(workdir / "warehouse" / "raw_feedback_events" / f"{day}.parquet"))
    traces = one_chunk(pd.read_parquet(workdir / "warehouse" / "raw_traces" / f"{day}.parquet", columns=RESPONSE_COLUMNS))
    marks = [time.time()]
    linked = link_feedback(events, traces[TRACE_KEYS], pd.Timedelta(minutes=LinkingParams().session_max_gap_minutes)).linked
    marks.append(time.time())
    signals = implicit_signals(traces, linked, SignalParams())
    marks.append(time.time())
    labels = label_traces(signals, linked, LabelWeights())
    marks.append(time.time())
    seconds = {name: round(end - start, 2) for name, start, end in zip(("link", "signals", "labels"), marks[:-1], marks[1:], strict=True)}
    text = round(text_clock.seconds(marks[1], marks[2]), 2)
    print(
        json.dumps({"seconds": round(marks[-1] - marks[0], 2), **seconds, "signals_text": text, "traces": len(traces), "events": len(events), "labelled": int((labels["label"] != "unlabeled").sum())})
    )


def error_modes_stage(workdir: Path) -> None:
    """Error-mode assignment on 100,000 negative traces drawn from the run's negatives."""
    import pandas as pd

    from feedback_loop.lib.error_modes.assign import assign_error_modes

    negatives = pd.concat(pd.read_parquet(p) for p in (workdir / "warehouse" / "negative_traces").glob("*.parquet"))
    sample = negatives.sample(n=100_000, replace=len(negatives) < 100_000, random_state=0).reset_index(drop=True)
    sample["trace_id"] = sample["trace_id"] + "-" + sample.index.astype(str)
    start = time.perf_counter()
    modes, validation = assign_error_modes(sample, seed=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 2), "negatives": len(sample), "distinct_negatives": len(negatives), "classifier_holdout_macro_f1": validation.macro_f1}))


def print_run(result: dict) -> None:
    print(f"\n{result['traces']:,} traces, {result['events']:,} feedback events, {result['negatives']:,} negatives in the window")
    if result["days"] > 1:
        print(f"steady state: {result['days']} landing days; the relabel run's window of {result['window_days']} days holds {result['window_traces']:,} traces")
    width = max(len(asset) for asset in [*result["per_asset"], "total (2 runs, wall)"]) + 2
    print(f"{'asset or check':<{width}}{'seconds':>10}{'of which IO':>13}{'CPU s':>9}{'system s':>10}{'faults k':>10}{'iowait s':>10}{'steal s':>9}{'peak RSS MB':>14}")
    for asset, figures in result["per_asset"].items():
        print(
            f"{asset:<{width}}{figures['seconds']:>10.2f}{figures['io_seconds']:>13.2f}{figures['cpu_seconds']:>9.1f}"
            f"{figures['system_seconds']:>10.1f}{figures['minor_faults'] / 1000:>10,.0f}"
            f"{figures['iowait_seconds']:>10.1f}{figures['steal_seconds']:>9.1f}{figures['peak_rss_mb']:>14,.0f}"
        )
    print(f"{'total (2 runs, wall)':<{width}}{result['total_seconds']:>10.2f}{'':>13}{'':>9}{'':>10}{'':>10}{'':>10}{'':>9}{result['peak_rss_mb']:>14,.0f}")
    print("(system s and faults: the CPU seconds spent in the kernel, and the pages touched anew (minor faults), by the step's process)")
    print("(iowait and steal: the machine's, over both cores: time waiting on the disk, or for the hypervisor)")
    steps, reference, core = result["per_asset"].values(), result["duckdb_reference"], result["link_signals_labels"]
    print(
        f"in the kernel: the night's steps {sum(f['system_seconds'] for f in steps):.1f}s for "
        f"{sum(f['minor_faults'] for f in steps) / 1e6:.1f}M pages touched anew; the DuckDB reference "
        f"{reference['system_seconds']:.1f}s for {reference['minor_faults'] / 1e6:.1f}M"
    )
    print(f"the night took {result['night_to_duckdb']:.1f}x the DuckDB reference's time on this machine (comparable across machines at one size, unlike seconds)")
    if "dag_runs" in result:
        totals = ", ".join(f"{r['total_seconds']:.1f}" for r in result["dag_runs"])
        print(f"(medians of {len(result['dag_runs'])} DAG runs, whose totals were {totals} s)")
        ratios = ", ".join(f"{r:.1f}" for r in result["night_to_duckdb_runs"])
        references = ", ".join(f"{r:.2f}" for r in reference["runs_seconds"])
        print(f"(each night against the reference run after it, {references} s: {ratios}x)")
    print(
        f"ingest + link + signals: {result['ingest_link_signals_seconds']:.2f}s ({result['ingest_link_signals_io_seconds']:.2f}s of it reading and "
        f"writing the warehouse's Parquet); DuckDB reference: {result['duckdb_reference_seconds']:.2f}s; ratio {result['ratio_to_duckdb']:.2f}"
    )
    print(
        f"the DuckDB reference writing its four tables as Parquet, as our steps do: {result['duckdb_reference_with_writes_seconds']:.2f}s "
        f"(by pyarrow, as our warehouse writes: {reference['seconds_with_pyarrow_writes']:.2f}s); "
        f"ratio {result['ratio_to_duckdb_with_writes']:.2f}; its writes alone (by the faster writer) make it {result['writes_floor_to_duckdb']:.2f}x itself"
    )
    print(
        f"a floor for ingest + link + signals: the reference with its faster writes plus the signals' text work it does not do "
        f"(prompt keys, edit distances, rephrase similarity: {core['signals_text']:.2f}s in memory) = "
        f"{result['ingest_link_signals_floor_seconds']:.2f}s, {result['floor_to_duckdb']:.2f}x the reference"
    )
    print(
        f"link + signals + labels: {result['link_signals_labels_seconds']:.2f}s in memory (link {core['link']:.2f}, signals {core['signals']:.2f}, "
        f"labels {core['labels']:.2f}); {result['link_signals_labels_dag_seconds']:.2f}s as Dagster steps (with their Parquet reads and writes)"
    )
    machine = result["machine"]
    reporting = machine.get("free_page_reporting")
    settings = ", ".join(f"{k}={v}" for k, v in reporting.items()) if reporting else "none"
    allocators = ", ".join(f"{k}={v}" for k, v in machine["allocator_settings"].items()) or "the defaults"
    print(f"fresh memory: {machine['fresh_memory_seconds_per_gib']:.2f}s per GiB touched (free page reporting to the hypervisor: {settings}); allocators: {allocators}")
    print(f"error modes: {result['error_modes_seconds']:.2f}s in the DAG ({result['negatives']:,} negatives); {result['error_modes_100k_seconds']:.2f}s for 100,000 negatives")


def compare_stage(rev: str, traces: int, days: int, repeat: int) -> None:
    """Nights of the code at `rev` (base) and of the working tree (head), alternating; see the module docstring."""
    _, landing = landing_of(traces, days)
    repo = HERE.parent
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True, check=True).stdout.strip()
    base = CACHE / f"worktree-{sha[:12]}"
    if not base.exists():
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(base), sha], check=True, capture_output=True)
    roots = {"base": base, "head": repo}
    for side, root in roots.items():  # a script's own folder leads sys.path, as in `stage`
        imported = subprocess.run(
            [sys.executable, "-c", "import feedback_loop; print(feedback_loop.__file__)"], capture_output=True, text=True, env=code_of(root), cwd=root / "bench", check=True
        ).stdout.strip()
        if Path(imported).parent != root / "feedback_loop":
            sys.exit(f"the {side} side would run {imported}, not the code at {root}")
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    order = [side for n in range(repeat) for side in (("base", "head") if n % 2 == 0 else ("head", "base"))]
    for n, side in enumerate(order, 1):
        workdir = CACHE / f"compare-{side}"
        fresh_workdir(workdir)
        print(f"night {n}/{len(order)}: {side} ...", flush=True)
        runs[side].append(json.loads(stage("pipeline", "--landing", str(landing), "--workdir", str(workdir), "--days", str(days), root=roots[side])))
    differences = output_differences(CACHE / "compare-base", CACHE / "compare-head")
    medians = {side: median_run(side_runs) for side, side_runs in runs.items()}
    head = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    result = {"base": sha, "head": head, "traces": traces, "days": days, "order": order, "sides": medians, "output_differences": differences}
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{stamp}-compare.json").write_text(json.dumps(result, indent=2))
    print_comparison(result)
    print(f"-> bench/results/{stamp}-compare.json")


def output_differences(base: Path, head: Path) -> list[str]:
    """What differs between two runs' outputs: each warehouse table (Arrow equality of its data and
    schema), and each dataset's manifest but for when it was created (it holds every file's digest)."""
    import pyarrow.parquet as pq

    found = []
    tables = {path.relative_to(base / "warehouse") for path in (base / "warehouse").rglob("*.parquet")}
    tables |= {path.relative_to(head / "warehouse") for path in (head / "warehouse").rglob("*.parquet")}
    for table in sorted(tables):
        a, b = base / "warehouse" / table, head / "warehouse" / table
        if not (a.exists() and b.exists()):
            found.append(f"warehouse/{table}: only in {'base' if a.exists() else 'head'}")
        elif not pq.read_table(a).equals(pq.read_table(b)):
            found.append(f"warehouse/{table}: different rows or schema")
    for dataset in sorted({p.parent.name for p in (base / "datasets").glob("*/LATEST")} | {p.parent.name for p in (head / "datasets").glob("*/LATEST")}):
        manifests = []
        for root in (base, head):
            latest = root / "datasets" / dataset / "LATEST"
            manifest = json.loads((root / "datasets" / dataset / latest.read_text().strip() / "manifest.json").read_text()) if latest.exists() else {}
            manifest.pop("created_at", None)
            manifests.append(manifest)
        if manifests[0] != manifests[1]:
            keys = sorted(k for k in manifests[0].keys() | manifests[1].keys() if manifests[0].get(k) != manifests[1].get(k))
            found.append(f"datasets/{dataset}: manifests differ in {', '.join(keys)}")
    return found


def print_comparison(result: dict) -> None:
    base, head = result["sides"]["base"], result["sides"]["head"]
    print(f"\nbase {result['base'][:12]} against head {result['head']}, {result['traces']:,} traces, nights in the order {', '.join(result['order'])}")
    width = max(len(step) for step in [*head["per_asset"], "total (2 runs, wall)"]) + 2
    print(f"{'asset or check':<{width}}{'base s':>9}{'head s':>9}{'change':>9}{'base CPU s':>12}{'head CPU s':>12}")
    for step, new in head["per_asset"].items():
        old = base["per_asset"].get(step)
        if old is None:
            print(f"{step:<{width}}{'-':>9}{new['seconds']:>9.2f}{'':>9}{'-':>12}{new['cpu_seconds']:>12.1f}")
        else:
            print(f"{step:<{width}}{old['seconds']:>9.2f}{new['seconds']:>9.2f}{new['seconds'] - old['seconds']:>+9.2f}{old['cpu_seconds']:>12.1f}{new['cpu_seconds']:>12.1f}")
    print(f"{'total (2 runs, wall)':<{width}}{base['total_seconds']:>9.2f}{head['total_seconds']:>9.2f}{head['total_seconds'] - base['total_seconds']:>+9.2f}")
    for side, figures in (("base", base), ("head", head)):
        totals = ", ".join(f"{r['total_seconds']:.1f}" for r in figures.get("dag_runs", [figures]))
        print(f"{side} nights: {totals} s; peak RSS {figures['peak_rss_mb']:,.0f} MB")
    print("outputs: identical warehouse tables and datasets" if not result["output_differences"] else "outputs differ:\n  " + "\n  ".join(result["output_differences"]))


def scaling(results: list[dict]) -> list[dict]:
    base = results[0]
    return [
        {"traces": r["traces"], "total_seconds": r["total_seconds"], "time_ratio": round(r["total_seconds"] / base["total_seconds"], 2), "size_ratio": round(r["traces"] / base["traces"], 2)}
        for r in results
    ]


TARGET_TRACES = 1_000_000  # the size the night, memory and ratio targets are set for
TARGET_PEAK_MB = 6e9 / 2**20  # 6 GB; the sampler's MB are MiB


def targets(result: dict) -> list[dict]:
    """The benchmark's targets that this result measures, each with its limit, the measured figure
    and whether it is met. The night, its peak and the ratio to the reference are set for a first
    night of TARGET_TRACES traces (the peak for any window at that size); error modes for a sample
    of 100,000 negatives; growth for a run with `--scaling`."""
    rows = []
    at_size = result["traces"] == TARGET_TRACES
    if at_size and result["days"] == 1:
        rows.append(("nightly DAG wall seconds", 90.0, result["total_seconds"]))
        rows.append(("ingest + link + signals / DuckDB reference", 1.5, result["ratio_to_duckdb"]))
    if at_size:
        rows.append(("peak RSS MB (6 GB)", TARGET_PEAK_MB, result["peak_rss_mb"]))
    if result["error_modes_100k"]["negatives"] == 100_000:
        rows.append(("error-mode assignment seconds, 100k negatives", 15.0, result["error_modes_100k_seconds"]))
    grown = [row for row in result.get("scaling", []) if row["size_ratio"] == 10.0]
    if grown:
        rows.append(("time ratio for 10x the traces", 11.0, grown[0]["time_ratio"]))
    return [{"target": name, "limit": limit, "measured": measured, "met": measured <= limit} for name, limit, measured in rows]


def print_targets(rows: list[dict]) -> None:
    print("\ntargets:" if rows else "\ntargets: none measured at this size")
    for row in rows:
        print(f"  {row['target']:<48} {row['measured']:>9,.2f} <= {row['limit']:<9,g} {'met' if row['met'] else 'NOT MET'}")


def print_scaling(results: list[dict]) -> None:
    print("\nscaling (time grows with size):")
    for row in scaling(results):
        print(f"  {row['traces']:>9,} traces: {row['total_seconds']:7.1f}s  ({row['size_ratio']:.1f}x the data, {row['time_ratio']:.2f}x the time)")


if __name__ == "__main__":
    main()
