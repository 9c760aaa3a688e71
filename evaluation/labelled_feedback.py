"""Score error modes and labels on a hand-labelled feedback set in the landing format.

    python evaluation/labelled_feedback.py --landing <set>/landing --labels <set>/labels.jsonl

Runs `feedback-loop run` over every day the set's traces and events fall on, in a temporary working
folder with the default (offline) configuration, then compares the warehouse with the labels
(`trace_id`, `label` positive/negative, `mode`, `evidence_kind`). Prints per-mode precision, recall
and F1 end to end (a missed negative counts against its mode's recall, a flagged positive against
the predicted mode's precision), macro-F1, negatives found, positives flagged, and the accuracy
per evidence kind. docs/evaluation.md quotes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

MODES = ["hallucination", "format", "refusal", "length", "other"]


def days_of(landing: Path) -> list[str]:
    stamps = []
    for path in sorted(landing.rglob("*.jsonl")):
        stamps += [json.loads(line).get("timestamp") for line in path.read_text().splitlines() if line.strip()]
    found = sorted({str(pd.Timestamp(s).tz_convert("UTC").date()) if pd.Timestamp(s).tzinfo else str(pd.Timestamp(s).date()) for s in stamps if s})
    first, last = dt.date.fromisoformat(found[0]), dt.date.fromisoformat(found[-1])
    return [str(first + dt.timedelta(days=i)) for i in range((last - first).days + 1)]


def run_pipeline(landing: Path, work: Path) -> Path:
    days = days_of(landing)
    start = str(dt.date.fromisoformat(days[0]) - dt.timedelta(days=1))
    env = {**os.environ, "FEEDBACK_LOOP_LANDING": str(landing), "FEEDBACK_LOOP_START_DATE": start, "FEEDBACK_LOOP_ALLOW_EMPTY_DAY": "true"}
    env.pop("DAGSTER_HOME", None)
    cli = Path(sys.executable).with_name("feedback-loop")
    for day in days:
        subprocess.run([str(cli), "run", "--date", day], cwd=work, env=env, check=True, capture_output=True)
    return work / "data" / "warehouse"


def read_table(folder: Path, columns: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(f, columns=columns) for f in sorted(glob.glob(str(folder / "*.parquet")))]
    return pd.concat(frames, ignore_index=True).drop_duplicates("trace_id", keep="last") if frames else pd.DataFrame(columns=columns)


def score(gold: pd.DataFrame, modes: pd.DataFrame, labels: pd.DataFrame) -> str:
    df = gold.set_index("trace_id")
    df["predicted_label"] = labels.set_index("trace_id")["label"].reindex(df.index).fillna("missing")
    df["predicted"] = modes.set_index("trace_id")["mode"].reindex(df.index).fillna("none")
    df["truth"] = df["mode"].fillna("positive")
    lines = ["| mode | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    f1s = []
    for mode in MODES:
        tp = int(((df["truth"] == mode) & (df["predicted"] == mode)).sum())
        fp = int(((df["truth"] != mode) & (df["predicted"] == mode)).sum())
        fn = int(((df["truth"] == mode) & (df["predicted"] != mode)).sum())
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        lines.append(f"| {mode} | {p:.3f} | {r:.3f} | {f1s[-1]:.3f} | {int((df['truth'] == mode).sum())} |")
    negative, positive = df[df["label"] == "negative"], df[df["label"] == "positive"]
    lines += [
        f"| **macro-F1** | | | **{sum(f1s) / len(f1s):.3f}** | |",
        "",
        f"- negatives found (labelled negative): {int((negative['predicted_label'] == 'negative').sum())} / {len(negative)}",
        f"- positives flagged (labelled negative or given a mode): {int(((positive['predicted_label'] == 'negative') | (positive['predicted'] != 'none')).sum())} / {len(positive)}",
        "",
        "| label | evidence kind | traces | right |",
        "|---|---|---|---|",
    ]
    for (label, kind), group in df.groupby(["label", "evidence_kind"]):
        right = group["predicted"] == group["mode"] if label == "negative" else (group["predicted_label"] != "negative") & (group["predicted"] == "none")
        lines.append(f"| {label} | {kind} | {len(group)} | {right.mean():.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    args = parser.parse_args()
    gold = pd.read_json(args.labels, lines=True, dtype={"mode": "string"})
    with tempfile.TemporaryDirectory() as folder:
        warehouse = run_pipeline(args.landing.resolve(), Path(folder))
        modes = read_table(warehouse / "error_modes", ["trace_id", "mode"])
        labels = read_table(warehouse / "trace_labels", ["trace_id", "label"])
        print(f"### Error modes on a hand-labelled feedback set ({len(gold)} traces)\n")
        print(score(gold, modes, labels))


if __name__ == "__main__":
    main()
