"""Run OASST trees and LAMP edits through the pipeline and report the labels and signals.

    python evaluation/real_data_signals.py [--real-data ../shared/data/real]

Writes the landing files to a temporary folder, runs the nightly jobs for the day through Dagster
on an ephemeral instance, and prints a markdown report (docs/evaluation.md quotes it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from feedback_loop.definitions import defs
from feedback_loop.lib.adapters.lamp import lamp_to_landing
from feedback_loop.lib.adapters.oasst import oasst_to_landing
from feedback_loop.lib.datasets.preference import dpo_pairs, kto_examples
from feedback_loop.lib.params import DatasetParams
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.sources import LandingFolder
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import WarehouseIOManager

DAY = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)


def run_dataset(name: str, traces: list[dict], events: list[dict], workdir: Path) -> dict[str, pd.DataFrame]:
    landing = workdir / name / "landing"
    for kind, rows in (("traces", traces), ("feedback", events)):
        (landing / kind).mkdir(parents=True)
        (landing / kind / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    warehouse = WarehouseIOManager(root=str(workdir / name / "warehouse"))
    from dagster._record import replace

    store = DatasetStoreResource(root=str(workdir / name / "datasets"))
    run_defs = replace(
        defs,
        resources={
            **defs.resources,
            "io_manager": warehouse,
            "landing": LandingFolder(root=str(landing)),
            "settings": FeedbackLoopSettings(),
            "dataset_store": store,
            "privacy": Privacy(user_hash_key="evaluation", opt_out_path=None),
            "cluster_registry": ClusterRegistry(folder=str(workdir / name / "clusters")),
        },
    )
    day = DAY.date().isoformat()
    report = run_nightly(day, dg.DagsterInstance.ephemeral(), run_defs)
    assert report.success, f"pipeline failed on {name}"
    out = {asset: pd.read_parquet(warehouse.path_for(dg.AssetKey(asset), day).path) for asset in ("raw_traces", "linked_feedback", "linked_feedback_orphans", "implicit_signals", "trace_labels")}
    published = store.store()
    out["manifests"] = {d: published.manifest(d, published.latest(d)) for d in ("regression_suite", "preference_dataset")}
    return out


def preference_report(name: str, out: dict) -> str:
    """DPO pairs the builder makes from the pipeline's outputs (quality gates applied), and what was published."""
    pairs, dropped = dpo_pairs(out["raw_traces"], out["implicit_signals"], out["trace_labels"], DatasetParams())
    examples = kto_examples(out["raw_traces"], out["trace_labels"])
    edits = out["implicit_signals"]["edit_text"].notna().sum()
    kept_edits = pairs["source"].isin(["edit", "correction"]).sum()
    manifest = out["manifests"]["preference_dataset"]
    suite = out["manifests"]["regression_suite"]
    lines = [
        f"- DPO pairs built: {len(pairs)} ({', '.join(f'{k} {v}' for k, v in pairs['source'].value_counts().items()) or 'none'}); quality gates dropped: {dropped}",
        f"- KTO examples: {len(examples)} ({int(examples['label'].sum())} desirable)",
        f"- published (after decontamination against a {suite['row_counts']['total']}-case regression suite built from the same traces): "
        f"{manifest['row_counts']['dpo_pairs']} DPO pairs, {manifest['row_counts']['kto_examples']} KTO examples; removed as suite near-duplicates: "
        f"{manifest['decontamination']['dpo_pairs_removed']} pairs, {manifest['decontamination']['kto_examples_removed']} examples",
    ]
    if edits:
        lines.insert(0, f"- edits kept as DPO pairs: {kept_edits} of {edits} ({kept_edits / edits:.0%})")
    return "\n".join(lines)


def report(name: str, out: dict[str, pd.DataFrame]) -> str:
    labels, signals = out["trace_labels"], out["implicit_signals"]
    lines = [f"### {name}", "", f"- traces: {len(out['raw_traces'])}, linked events: {len(out['linked_feedback'])}, orphans: {len(out['linked_feedback_orphans'])}"]
    lines.append("- labels: " + ", ".join(f"{k} {v}" for k, v in labels["label"].value_counts().items()))
    lines.append(
        f"- signals: edited {signals['edit_class'].notna().sum()}, regenerated {signals['regenerated_by'].notna().sum()}, "
        f"chains > 1: {(signals.drop_duplicates('chain_id')['chain_length'] > 1).sum()}, rephrased {int(signals['rephrased'].sum())}, "
        f"abandoned {int(signals['abandoned'].sum())} (explicit {int((signals['abandon_source'] == 'explicit').sum())})"
    )
    classes = signals["edit_class"].value_counts()
    if len(classes):
        lines.append("- edit classes: " + ", ".join(f"{k} {v}" for k, v in classes.items()))
        edited = signals.dropna(subset=["edit_class"])
        lines.append(
            f"- edit distance: median {edited['edit_distance'].median():.3f} (min {edited['edit_distance'].min():.3f}, max {edited['edit_distance'].max():.3f}); "
            f"length ratio median {edited['edit_length_ratio'].median():.2f}"
        )
    both = labels.dropna(subset=["explicit_score", "implicit_score"])
    if len(both):
        agree = (both["explicit_score"] * both["implicit_score"] > 0).mean()
        lines.append(f"- explicit vs implicit agreement: {agree:.1%} of {len(both)} traces with both; disagreements flagged: {int(labels['disagreement'].sum())}")
    return "\n".join(lines)


def oasst_rank_check(out: dict[str, pd.DataFrame]) -> str:
    """How the labels order OASST's human ranking of sibling replies."""
    traces = out["raw_traces"][["trace_id", "metadata"]].copy()
    traces["rank"] = traces["metadata"].map(lambda m: json.loads(m).get("rank"))
    merged = out["trace_labels"].merge(traces, on="trace_id")
    ranked = merged.dropna(subset=["rank"])
    by_rank = ranked.groupby(ranked["rank"].clip(upper=2))["score"].mean()
    return "- mean label score by human rank (0 = best, 2 = third or worse): " + ", ".join(f"{int(r)}: {s:+.3f}" for r, s in by_rank.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real-data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    args = parser.parse_args()
    real = Path(args.real_data)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        oasst = run_dataset("oasst", *oasst_to_landing(real / "oasst_en_100_tree.jsonl", DAY + dt.timedelta(hours=1)), workdir)
        lamp = run_dataset("lamp", *lamp_to_landing(sorted((real / "lamp").glob("*_edits.json")), DAY + dt.timedelta(hours=1)), workdir)
    print(report("OASST (100 trees)", oasst))
    print(oasst_rank_check(oasst))
    print(preference_report("OASST", oasst))
    print()
    print(report("LAMP (writer edits)", lamp))
    trivial = (lamp["implicit_signals"]["edit_class"] == "trivial").sum()
    print(f"- LAMP edits classed trivial: {trivial}")
    print(preference_report("LAMP", lamp))


if __name__ == "__main__":
    main()
