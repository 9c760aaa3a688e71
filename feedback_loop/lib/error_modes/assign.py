"""Assign every negative trace one error mode, with a confidence and the evidence that decided it.

Evidence is taken strongest first: the user's reason tag, their comment, their edit, the response
itself (refusal, a requested format or length it breaks, a length outlier). Traces no rule explains
are labelled by the classifier trained on the rest when it is confident enough, else `other`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feedback_loop.lib.columns import is_in
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.error_modes.classifier import (
    Validation,
    classifier_text,
    fit_and_predict,
)
from feedback_loop.lib.error_modes.rules import (
    comment_mode,
    edit_mode,
    reason_tag_mode,
    response_mode,
)
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1, Taxonomy
from feedback_loop.lib.text import text_length

SOURCE_CONFIDENCE = {"reason_tag": 0.95, "comment": 0.85, "edit": 0.8, "response": 0.8}
CLASSIFIER_MIN_PROBABILITY = 0.6
NO_EVIDENCE_CONFIDENCE = 0.3

ERROR_MODE_COLUMNS: dict[str, str] = {
    "trace_id": "string",
    "mode": "string",
    "mode_id": "string",
    "confidence": "float64",
    "evidence": "string",
    "evidence_source": "string",
    "taxonomy_version": "string",
    "model": "string",
    "prompt_version": "string",
    "partition_date": "string",
}


def assign_error_modes(negatives: pd.DataFrame, seed: int = 0, taxonomy: Taxonomy = TAXONOMY_V1) -> tuple[pd.DataFrame, Validation]:
    """One row per negative trace: mode, mode_id, confidence, evidence (see the module docstring)."""
    df = negatives.reset_index(drop=True)
    mode = pd.Series(pd.NA, index=df.index, dtype="string")
    evidence = pd.Series(pd.NA, index=df.index, dtype="string")
    source = pd.Series(pd.NA, index=df.index, dtype="string")
    stages = (
        ("reason_tag", lambda: reason_tag_mode(df["reason_tags"])),
        ("comment", lambda: comment_mode(df["comments"])),
        ("edit", lambda: edit_mode(df["output"], df["edit_text"])),
        ("response", lambda: response_mode(df["prompt"], df["output"], df["peer_length_ratio"], df["peer_length_outlier"])),
    )
    for name, stage in stages:
        if not mode.isna().any():
            break
        found, why = stage()
        take = mode.isna() & found.notna()
        mode[take], evidence[take], source[take] = found[take], why[take], name
    confidence = source.map(SOURCE_CONFIDENCE).astype("float64")

    unexplained = mode.isna()
    text = classifier_text(df)
    predicted, probability, validation = fit_and_predict(text[~unexplained], mode[~unexplained], text[unexplained], seed)
    sure = predicted.notna().to_numpy() & (probability >= CLASSIFIER_MIN_PROBABILITY)
    if sure.any():
        rows = predicted.index[sure]
        mode.loc[rows] = predicted.loc[rows]
        confidence.loc[rows] = np.round(probability[sure] * 0.8, 4)
        evidence.loc[rows] = "classifier p=" + pd.Series(probability[sure], index=rows).round(2).astype("string")
        source.loc[rows] = "classifier"
    rest = mode.isna()
    mode[rest], confidence[rest], evidence[rest], source[rest] = "other", NO_EVIDENCE_CONFIDENCE, "no specific evidence", "none"

    out = pd.DataFrame(
        {
            "trace_id": df["trace_id"],
            "mode": mode,
            "mode_id": mode.map(taxonomy.ids()),
            "confidence": confidence,
            "evidence": evidence,
            "evidence_source": source,
            "taxonomy_version": taxonomy.version,
            "model": df["model"],
            "prompt_version": df["prompt_version"],
            "partition_date": df["partition_date"],
        }
    )
    return out.astype(ERROR_MODE_COLUMNS), validation


def negative_traces(labels: pd.DataFrame, traces: pd.DataFrame, lengths: pd.DataFrame | None = None) -> pd.DataFrame:
    """The negatively labelled traces with their prompt, output and length relative to their peers.

    Peers are the traces of the same model and prompt version among all `traces` given:
    `peer_length_ratio` is the output length over the peers' median, and `peer_length_outlier` marks
    a far-out length (above Q3 + 3 IQR, Tukey's fence). `lengths` (`trace_id`, `model`,
    `prompt_version`, `output_length`, one row per span as in `traces`) stands for every trace when
    `traces` holds the texts of the negatives' rows only.
    """
    if lengths is None:
        lengths = traces[["trace_id", "model", "prompt_version"]].assign(output_length=text_length(traces["output"]))
    peers = last_per_trace(lengths)
    length = peers["output_length"].fillna(0).astype("float64")
    groups = length.groupby([peers["model"].fillna(""), peers["prompt_version"].fillna("")])
    median, q1, q3 = groups.transform("median"), groups.transform(lambda x: x.quantile(0.25)), groups.transform(lambda x: x.quantile(0.75))
    ratios = pd.DataFrame(
        {
            "trace_id": peers["trace_id"],
            "peer_length_ratio": (length / median.where(median > 0)).astype("float64"),
            "peer_length_outlier": (length > q3 + 3 * (q3 - q1)) & (groups.transform("size") >= 20),
        }
    )
    negative = labels[labels["label"] == "negative"]
    t = last_per_trace(traces)
    # Only the negatives' rows take part in the joins: their texts are all that is copied.
    t = t.loc[is_in(t["trace_id"], negative["trace_id"]), ["trace_id", "input", "prompt", "output"]]
    t = t.merge(ratios[is_in(ratios["trace_id"], negative["trace_id"])], on="trace_id", how="left", validate="one_to_one")
    out = negative.merge(t, on="trace_id", how="left", validate="one_to_one")
    return out.reset_index(drop=True)
