"""`feedback-loop`: generate sample data, run the demo, run one nightly date. Thin wrappers over Dagster."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

from feedback_loop.lib.generator import GeneratorConfig, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feedback-loop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write sample traces and feedback in the landing format")
    _generator_args(gen, days=7, traces=200)
    gen.add_argument("--out", default=os.environ.get("FEEDBACK_LOOP_LANDING", "data/landing"))

    demo = sub.add_parser("demo", help="generate a week of data, then run every nightly date on the embedded default")
    _generator_args(demo, days=7, traces=200)

    run = sub.add_parser("run", help="run for one date exactly what the nightly schedule runs")
    run.add_argument("--date", required=True, type=dt.date.fromisoformat)

    args = parser.parse_args(argv)
    if args.command == "generate":
        summary = generate(args.out, _config(args))
        print(f"wrote {summary['traces']} traces and {summary['feedback']} feedback events "
              f"(+{summary['bad_rows']} bad rows) for {summary['days'][0]}..{summary['days'][-1]} to {args.out}")
        return 0
    if args.command == "demo":
        return _demo(args)
    return _run_dates([args.date.isoformat()])


def _generator_args(parser: argparse.ArgumentParser, days: int, traces: int) -> None:
    parser.add_argument("--days", type=int, default=days)
    parser.add_argument("--traces-per-day", type=int, default=traces)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=None, help="last day (default: yesterday, UTC)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")


def _config(args: argparse.Namespace) -> GeneratorConfig:
    return GeneratorConfig(
        days=args.days, traces_per_day=args.traces_per_day, seed=args.seed, end_date=args.end_date, file_format=args.format
    )


def _demo(args: argparse.Namespace) -> int:
    landing = Path(os.environ.setdefault("FEEDBACK_LOOP_LANDING", "data/landing"))
    if landing.exists():
        shutil.rmtree(landing)
    summary = generate(landing, _config(args))
    print(f"generated {summary['traces']} traces, {summary['feedback']} feedback events, "
          f"{summary['bad_rows']} bad rows in {landing}/")
    return _run_dates(summary["days"])


def _run_dates(days: list[str]) -> int:
    _default_dagster_home()
    if not os.environ.get("FEEDBACK_LOOP_USER_HASH_KEY"):
        from feedback_loop.resources.datasets import local_hash_key

        os.environ["FEEDBACK_LOOP_USER_HASH_KEY"] = local_hash_key(os.environ.get("FEEDBACK_LOOP_STATE", "data/state"))
    import dagster as dg

    from feedback_loop.pipeline import run_nightly

    with dg.DagsterInstance.get() as instance:
        for day in days:
            report = run_nightly(day, instance)
            print(report.summary_line())
            if not report.success:
                return 1
    warehouse = os.environ.get("FEEDBACK_LOOP_WAREHOUSE", "data/warehouse")
    datasets = os.environ.get("FEEDBACK_LOOP_DATASETS", "data/datasets")
    print(f"\nwarehouse tables: {warehouse}/<asset>/<date>.parquet")
    print(f"datasets:         {datasets}/<dataset>/<version>/ (newest: {datasets}/<dataset>/LATEST)")
    print(f"dagster runs:     {os.environ['DAGSTER_HOME']} (open the UI with: DAGSTER_HOME={os.environ['DAGSTER_HOME']} dg dev)")
    return 0


def _default_dagster_home() -> None:
    """Use $DAGSTER_HOME, else this folder when it holds the project's dagster.yaml, else ./data/dagster_home."""
    if os.environ.get("DAGSTER_HOME"):
        return
    home = Path.cwd() if (Path.cwd() / "dagster.yaml").exists() else Path("data/dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)


if __name__ == "__main__":
    sys.exit(main())
