"""Shared by the end-to-end source tests: the same generated data landed as files and served by a
store, run night by night both ways, compared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from feedback_loop.lib.landing import read_landing_day
from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.datasets import DatasetStoreResource
from feedback_loop.resources.sources import LandingFolder
from feedback_loop.resources.warehouse import WarehouseIOManager
from feedback_loop.sample.generator import GeneratorConfig, generate
from feedback_loop_tests.conftest import END, defs_with, resources_in

DAYS = [(END - pd.Timedelta(days=n)).isoformat() for n in (1, 0)]
EXPLICIT = {"thumbs_up", "thumbs_down", "rating", "comment", "correction"}


@dataclass
class Landed:
    """Generated days as the pipeline reads them from files: the clean traces, the explicit
    feedback on them (what a store holds as scores or annotations), and the rest."""

    root: Path
    traces: pd.DataFrame
    explicit: pd.DataFrame
    implicit: pd.DataFrame


def landed(root: Path, traces_per_day: int, seed: int) -> Landed:
    generate(root, GeneratorConfig(days=len(DAYS), traces_per_day=traces_per_day, seed=seed, end_date=END))
    traces = pd.concat([normalize_traces(read_landing_day(str(root), "traces", d), d).clean for d in DAYS], ignore_index=True)
    events = pd.concat([normalize_feedback(read_landing_day(str(root), "feedback", d), d).clean for d in DAYS], ignore_index=True)
    explicit = events[events["type"].isin(EXPLICIT) & events["trace_id"].isin(traces["trace_id"])]
    return Landed(root, traces, explicit, events[~events["event_id"].isin(explicit["event_id"])])


def write_events(events: pd.DataFrame, root: Path, ids: Callable[[str, int], str] | None = None) -> Path:
    """The events as a landing feedback folder (the app's own log of what a store does not hold);
    `ids(id, size)` maps trace and span ids as the store spells them."""
    events = events.copy()
    if ids is not None:
        events["trace_id"] = events["trace_id"].map(lambda t: ids(t, 16) if isinstance(t, str) else None)
        events["span_id"] = events["span_id"].map(lambda s: ids(s, 8) if isinstance(s, str) else None)
    (root / "feedback").mkdir(parents=True)
    events.assign(timestamp=events["timestamp"].map(pd.Timestamp.isoformat)).drop(columns=["partition_date", "value_num"]).to_json(root / "feedback" / "events.jsonl", orient="records", lines=True)
    return root


@dataclass
class Nights:
    warehouse: Path
    feedback_sources: dict  # the last night's `raw_feedback_events` metadata `sources`


def run_nights(tmp_path: Path, resources: dict, name: str, sources: dict, days: list[str] = DAYS) -> Nights:
    """Every day of `days` run as the schedule runs it, with `sources`, into `warehouse-<name>` and
    `datasets-<name>`."""
    setup = {**resources, **sources, "io_manager": WarehouseIOManager(root=str(tmp_path / f"warehouse-{name}")), "dataset_store": DatasetStoreResource(root=str(tmp_path / f"datasets-{name}"))}
    with dg.instance_for_test() as instance:
        for day in days:
            assert run_nightly(day, instance, defs_with(setup)).success
        last = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_feedback_events"), asset_partitions=[days[-1]]), limit=1).records[0]
    return Nights(tmp_path / f"warehouse-{name}", last.asset_materialization.metadata["sources"].value)


def table(warehouse: Path, asset: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(warehouse / asset / f"{d}.parquet") for d in DAYS], ignore_index=True)


@dataclass
class FilesRun:
    """The generated data and what the nights made of it read from files: the reference."""

    data: Landed
    root: Path  # holds warehouse-files/ and datasets-files/


def files_run(root: Path) -> FilesRun:
    data = landed(root / "landing", traces_per_day=60, seed=11)
    run_nights(root, resources_in(root, data.root), "files", {"landing": LandingFolder(root=str(data.root))})
    return FilesRun(data, root)


def assert_same_as_files(tmp_path: Path, reference: FilesRun, name: str, trace_id: Callable[[str], str] = str) -> None:
    """The store's run (`warehouse-<name>`, `datasets-<name>` under `tmp_path`) labels every trace
    as the run on the landed files did, and publishes the same dataset versions with as many suite
    cases."""
    data = reference.data
    theirs = table(reference.root / "warehouse-files", "trace_labels").assign(trace_id=lambda t: t["trace_id"].map(trace_id))
    labels = table(tmp_path / f"warehouse-{name}", "trace_labels").merge(theirs, on="trace_id", suffixes=("_store", "_files"))
    assert len(labels) == len(data.traces) and (labels["label_store"] == labels["label_files"]).all(), labels.loc[labels["label_store"] != labels["label_files"]]
    assert set(labels["label_store"]) >= {"positive", "negative"}
    stores = {name: tmp_path / f"datasets-{name}", "files": reference.root / "datasets-files"}
    for dataset in ("regression_suite", "preference_dataset"):
        versions = {store: sorted(p.parent.name for p in (folder / dataset).glob("*/manifest.json")) for store, folder in stores.items()}
        assert versions[name] == versions["files"] == [f"{d}.1" for d in DAYS]
    cases = {store: (folder / "regression_suite" / f"{DAYS[-1]}.1" / "cases.jsonl").read_text().count("\n") for store, folder in stores.items()}
    assert cases[name] == cases["files"] > 0
