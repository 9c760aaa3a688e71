"""`feedback-loop`: generate sample data, run the demo, run one nightly date, erase users. Thin wrappers over Dagster."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
from pathlib import Path

import feedback_loop
from feedback_loop.lib.datasets.opt_out import DEFAULT_OPT_OUT
from feedback_loop.sample.generator import GeneratorConfig, generate

DEMO_LANDING = Path("data/demo-landing")
DEMO_MARKER = ".feedback-loop-demo"  # in a folder the demo made: only such a folder is ever replaced
UI_SETTINGS = ("FEEDBACK_LOOP_START_DATE", "FEEDBACK_LOOP_LATE_FEEDBACK_DAYS", "FEEDBACK_LOOP_TOO_LATE_LOOKBACK_DAYS", "FEEDBACK_LOOP_ALLOW_EMPTY_DAY", "FEEDBACK_LOOP_NER_MODEL")
PATH_SETTINGS = {  # the settings that name places, with the defaults the definitions use
    "FEEDBACK_LOOP_LANDING": "data/landing",
    "FEEDBACK_LOOP_WAREHOUSE": "data/warehouse",
    "FEEDBACK_LOOP_DATASETS": "data/datasets",
    "FEEDBACK_LOOP_STATE": "data/state",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feedback-loop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write sample traces and feedback in the landing format")
    _generator_args(gen, days=7, traces=200)
    gen.add_argument("--out", default=os.environ.get("FEEDBACK_LOOP_LANDING", PATH_SETTINGS["FEEDBACK_LOOP_LANDING"]))

    demo = sub.add_parser("demo", help=f"generate a week of data into {DEMO_LANDING}/, then run every nightly date on the embedded default")
    _generator_args(demo, days=7, traces=200)

    run = sub.add_parser("run", help="run for one date exactly what the nightly schedule runs")
    run.add_argument("--date", required=True, type=dt.date.fromisoformat)

    forget = sub.add_parser("forget", help="erase users from every published dataset version: each version holding their data is rewritten as a new one and its files deleted")
    forget.add_argument("--user", action="append", required=True, help="a user id as the product logs it (repeat for several)")

    args = parser.parse_args(argv)
    if args.command == "forget":
        return _forget(args.user)
    if args.command == "generate":
        summary = generate(args.out, _config(args))
        print(f"wrote {summary['traces']} traces and {summary['feedback']} feedback events (+{summary['bad_rows']} bad rows) for {summary['days'][0]}..{summary['days'][-1]} to {args.out}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if problem := _not_runnable(args.date):
        print(f"feedback-loop run: {problem}", file=sys.stderr)
        return 2
    return _run_dates([args.date.isoformat()])


def _not_runnable(day: dt.date) -> str | None:
    """Why `day` cannot be run now, if it cannot: it is not over yet, or it is before the first partition."""
    from feedback_loop.defs.partitions import FIRST_DAY

    today = dt.datetime.now(dt.UTC).date()
    if day >= today:
        return f"{day} is not over yet (UTC): a night runs the day before it; the latest date to run is {today - dt.timedelta(days=1)}"
    if day.isoformat() < FIRST_DAY:
        return f"{day} is before the first partition, {FIRST_DAY} (set FEEDBACK_LOOP_START_DATE to run earlier days)"
    return None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _generator_args(parser: argparse.ArgumentParser, days: int, traces: int) -> None:
    parser.add_argument("--days", type=_positive, default=days)
    parser.add_argument("--traces-per-day", type=_positive, default=traces)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=None, help="last day (default: yesterday, UTC)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")


def _config(args: argparse.Namespace) -> GeneratorConfig:
    return GeneratorConfig(days=args.days, traces_per_day=args.traces_per_day, seed=args.seed, end_date=args.end_date, file_format=args.format)


def _demo(args: argparse.Namespace) -> int:
    landing = DEMO_LANDING
    if landing.exists() and not (landing / DEMO_MARKER).exists():
        print(f"{landing}/ exists and was not made by the demo: move it away, the demo would replace it", file=sys.stderr)
        return 2
    if landing.exists():
        shutil.rmtree(landing)
    summary = generate(landing, _config(args))
    (landing / DEMO_MARKER).write_text("made by `feedback-loop demo`, which replaces this folder on its next run\n")
    os.environ["FEEDBACK_LOOP_LANDING"] = str(landing)
    print(f"generated {summary['traces']} traces, {summary['feedback']} feedback events, {summary['bad_rows']} bad rows in {landing}/")
    return _run_dates(summary["days"])


def _forget(users: list[str]) -> int:
    """Erase the users from every published version (the Dagster job `erase_users_job` does the same)."""
    from feedback_loop.defs.datasets.erasure import warehouse_table
    from feedback_loop.lib.datasets.forget import erase_users
    from feedback_loop.lib.datasets.opt_out import read_opt_out, user_key
    from feedback_loop.lib.datasets.store import DatasetStore
    from feedback_loop.resources.warehouse import WarehouseIOManager

    _hash_key()
    warehouse = WarehouseIOManager(root=os.environ.get("FEEDBACK_LOOP_WAREHOUSE", PATH_SETTINGS["FEEDBACK_LOOP_WAREHOUSE"]))
    store = DatasetStore(os.environ.get("FEEDBACK_LOOP_DATASETS", PATH_SETTINGS["FEEDBACK_LOOP_DATASETS"]))
    rewrites = erase_users(store, warehouse_table(warehouse, "raw_traces"), warehouse_table(warehouse, "linked_feedback"), set(users), os.environ["FEEDBACK_LOOP_USER_HASH_KEY"])
    for rewrite in rewrites:
        removed = ", ".join(f"{n} {what}" for what, n in rewrite.rows_removed.items() if n)
        print(f"{rewrite.dataset} {rewrite.replaced} -> {rewrite.version}: removed {removed}")
    print(f"{len(rewrites)} versions rewritten" if rewrites else "no published version holds these users' data")
    opted_out = read_opt_out(os.environ.get("FEEDBACK_LOOP_OPT_OUT") or None)
    if missing := sorted(user for user in users if user_key(user) not in opted_out):
        print(f"add {', '.join(missing)} to the opt-out list, or the next night publishes their data again", file=sys.stderr)
    return 0


def _hash_key() -> Path | None:
    """Set FEEDBACK_LOOP_USER_HASH_KEY to the embedded default's local key when it is not set; the key's file, if so."""
    if os.environ.get("FEEDBACK_LOOP_USER_HASH_KEY"):
        return None
    from feedback_loop.resources.datasets import local_hash_key

    state = os.environ.get("FEEDBACK_LOOP_STATE", PATH_SETTINGS["FEEDBACK_LOOP_STATE"])
    os.environ["FEEDBACK_LOOP_USER_HASH_KEY"] = local_hash_key(state)
    return Path(state, "user_hash_key").resolve()


def _run_dates(days: list[str]) -> int:
    _default_dagster_home()
    key_file = _hash_key()
    import dagster as dg

    from feedback_loop.defs.runs import fail_dead_runs
    from feedback_loop.pipeline import run_nightly

    with dg.DagsterInstance.get() as instance:
        if dead := fail_dead_runs(instance):
            print(f"marked {len(dead)} runs whose process had died as failed: {', '.join(dead)}")
        for day in days:
            print(f"{day}:", file=sys.stderr, flush=True)
            report = run_nightly(day, instance, progress=True)
            print(report.summary_line())
            if not report.success:
                return 1
    warehouse = os.environ.get("FEEDBACK_LOOP_WAREHOUSE", PATH_SETTINGS["FEEDBACK_LOOP_WAREHOUSE"])
    datasets = os.environ.get("FEEDBACK_LOOP_DATASETS", PATH_SETTINGS["FEEDBACK_LOOP_DATASETS"])
    print(f"\nwarehouse tables: {warehouse}/<asset>/<date>.parquet")
    print(f"datasets:         {datasets}/<dataset>/<version>/ (newest: {datasets}/<dataset>/LATEST)")
    print(f"open the UI:      {ui_command(key_file)}")
    return 0


def ui_command(key_file: Path | None) -> str:
    """A shell command that opens the Dagster UI on what this process ran, from any folder: in the
    project's folder (where `dg` finds its definitions), with this run's instance and places as
    absolute paths, the user-hash key read from its file (never printed), and `dg` from the
    virtualenv that runs this CLI."""
    env = {"DAGSTER_HOME": str(Path(os.environ["DAGSTER_HOME"]).resolve())}
    for name, default in PATH_SETTINGS.items():
        value = os.environ.get(name, default)
        env[name] = value if "://" in value else str(Path(value).resolve())
    # The opt-out list: as configured, else the default file of this folder when there is one (a
    # path that is set must exist, so an absent default is not passed on).
    opt_out = os.environ.get("FEEDBACK_LOOP_OPT_OUT") or (DEFAULT_OPT_OUT if Path(DEFAULT_OPT_OUT).is_file() else None)
    if opt_out:
        env["FEEDBACK_LOOP_OPT_OUT"] = opt_out if "://" in opt_out else str(Path(opt_out).resolve())
    if sources := os.environ.get("FEEDBACK_LOOP_SOURCES"):
        env["FEEDBACK_LOOP_SOURCES"] = str(Path(sources).resolve())
    for name in UI_SETTINGS:  # settings that are not places, passed on as they are
        if name in os.environ:
            env[name] = os.environ[name]
    assignments = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
    if key_file is not None:
        assignments.append(f'FEEDBACK_LOOP_USER_HASH_KEY="$(cat {shlex.quote(str(key_file))})"')
    project = Path(feedback_loop.__file__).resolve().parent.parent
    dg_command = Path(sys.executable).parent / "dg"
    return f"cd {shlex.quote(str(project))} && {' '.join(assignments)} {shlex.quote(str(dg_command))} dev"


def _default_dagster_home() -> None:
    """Use $DAGSTER_HOME, else this folder when it holds the project's dagster.yaml, else ./data/dagster_home."""
    if os.environ.get("DAGSTER_HOME"):
        return
    home = Path.cwd() if (Path.cwd() / "dagster.yaml").exists() else Path("data/dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    nux = home / ".nux" / "nux.yaml"  # the UI's "Join the community" dialog, shown once per home, would cover the first page
    if not nux.exists():
        nux.parent.mkdir(exist_ok=True)
        nux.write_text("seen: 1\n")
    os.environ["DAGSTER_HOME"] = str(home)


if __name__ == "__main__":
    sys.exit(main())
