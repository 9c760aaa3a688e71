"""Assign every negative trace one error mode, with a confidence and the evidence that decided it.

Each piece of evidence votes for a mode: the user's reason tag, their comment, their edit, and the
response itself (a refusal, another language, each instruction it breaks, a length outlier). Traces no rule explains
are labelled by the classifier trained on the rest when it is confident enough, else `other`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feedback_loop.lib.columns import is_in
from feedback_loop.lib.comments import MODE_ORDER
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.days import days_ending
from feedback_loop.lib.error_modes.classifier import (
    Validation,
    classifier_text,
    fit_and_predict,
)
from feedback_loop.lib.error_modes.rules import (
    comment_mode,
    edit_mode,
    reason_tag_mode,
    response_votes,
)
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1, Taxonomy
from feedback_loop.lib.text import text_length

SOURCE_CONFIDENCE = {"reason_tag": 0.95, "comment": 0.85, "edit": 0.8, "response": 0.8}
STAGE_STRENGTH = {"reason_tag": 3.0, "comment": 2.0, "edit": 2.0}
CLASSIFIER_MIN_PROBABILITY = 0.6
CLASSIFIER_MIN_VALIDATION_F1 = 0.7
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
    """One row per negative trace: mode, mode_id, confidence, evidence (see the module docstring);
    the classifier is trained on every rule-labelled row of `negatives`."""
    df = negatives.reset_index(drop=True)
    decided = rule_modes(df)
    everyone = np.ones(len(df), dtype=bool)
    validation = _classify(classifier_text(df), decided, decided["mode"].notna().to_numpy(dtype=bool), everyone, everyone, seed)
    return _modes_table(df, decided, taxonomy), validation


def assign_error_modes_by_day(negatives: pd.DataFrame, days: list[str], span: int, seed: int = 0, taxonomy: Taxonomy = TAXONOMY_V1) -> tuple[pd.DataFrame, dict[str, Validation]]:
    """The modes of the negatives of `days`, each day's by a classifier trained on the rule-labelled
    negatives of the `span` + 1 trace days ending on it (`negatives` holds them, by `partition_date`).

    A day's modes then depend on its own window only, not on which run computes them: a rerun of
    an older night, or one backfill run over many days, gives each day what its nightly run gave.
    """
    df = negatives.reset_index(drop=True)
    decided = rule_modes(df)
    day_of = df["partition_date"].astype("string")
    text = classifier_text(df)
    explained = decided["mode"].notna().to_numpy(dtype=bool)  # by a rule: the classifier's own labels never train it
    validations = {}
    for day in days:
        validations[day] = _classify(text, decided, explained, day_of.isin(days_ending(day, span)).to_numpy(dtype=bool), (day_of == day).to_numpy(dtype=bool), seed)
    wanted = day_of.isin(days).to_numpy(dtype=bool)
    return _modes_table(df[wanted].reset_index(drop=True), decided[wanted].reset_index(drop=True), taxonomy), validations


def rule_modes(df: pd.DataFrame) -> pd.DataFrame:
    """mode, evidence, source and confidence of each row some evidence explains (NA elsewhere).

    Every piece of evidence votes for a mode with a strength (`STAGE_STRENGTH`, `RESPONSE_STRENGTH`,
    `instructions.py`); a row takes the mode with the largest sum, ties broken in `MODE_ORDER`.
    Users click the nearest reason tag, so a countable check of the response (a refusal, another
    language, a broken JSON or item count) outweighs a tag; the label follows the response.
    """
    votes = [response_votes(df["input"], df["prompt"], df["output"], df["peer_length_ratio"], df["peer_length_outlier"]).assign(source="response")]
    for name, (found, why) in (
        ("reason_tag", reason_tag_mode(df["reason_tags"])),
        ("comment", comment_mode(df["comments"])),
        ("edit", edit_mode(df["output"], df["edit_text"])),
    ):
        rows = np.flatnonzero(found.notna().to_numpy())
        votes.append(pd.DataFrame({"row": rows, "mode": found.iloc[rows].to_numpy(), "strength": STAGE_STRENGTH[name], "evidence": why.iloc[rows].to_numpy(), "source": name}))
    v = pd.concat(votes, ignore_index=True).astype({"row": "int64", "mode": "string", "strength": "float64", "evidence": "string", "source": "string"})
    totals = v.groupby(["row", "mode"], as_index=False)["strength"].sum()
    totals["order"] = totals["mode"].map({m: i for i, m in enumerate(MODE_ORDER)})
    best = totals.sort_values(["row", "strength", "order"], ascending=[True, False, True], kind="stable").drop_duplicates("row")
    winning = v.merge(best[["row", "mode"]], on=["row", "mode"]).sort_values(["row", "strength"], ascending=[True, False], kind="stable")
    evidence = winning.groupby("row")["evidence"].agg("; ".join)
    source = winning.drop_duplicates("row").set_index("row")["source"]
    mode = pd.Series(pd.NA, index=df.index, dtype="string")
    mode.iloc[best["row"].to_numpy()] = best["mode"].to_numpy()
    out = pd.DataFrame({"mode": mode, "evidence": pd.Series(pd.NA, index=df.index, dtype="string"), "source": pd.Series(pd.NA, index=df.index, dtype="string")})
    out.iloc[evidence.index.to_numpy(), 1] = evidence.to_numpy()
    out.iloc[source.index.to_numpy(), 2] = source.to_numpy()
    # Confidence: the deciding source's, scaled by the winner's share of all votes cast on the row.
    share = (best.set_index("row")["strength"] / totals.groupby("row")["strength"].sum()).reindex(range(len(df)))
    out["confidence"] = (out["source"].map(SOURCE_CONFIDENCE).astype("float64") * share.to_numpy()).round(4)
    return out


def _classify(text: pd.Series, decided: pd.DataFrame, explained: np.ndarray, train: np.ndarray, predict: np.ndarray, seed: int) -> Validation:
    """Fill in `decided` for the unexplained rows among `predict`, by a classifier trained on the
    `explained` rows among `train`; the rest of `predict`'s unexplained rows become `other`."""
    fit_rows, guess_rows = train & explained, predict & ~explained
    predicted, probability, validation = fit_and_predict(text[fit_rows], decided["mode"][fit_rows], text[guess_rows], seed)
    # A classifier that cannot predict its own held-out rule labels is not trusted with the rest.
    trusted = validation.macro_f1 is not None and validation.macro_f1 >= CLASSIFIER_MIN_VALIDATION_F1
    sure = predicted.notna().to_numpy() & (probability >= CLASSIFIER_MIN_PROBABILITY) & trusted
    if sure.any():
        rows = predicted.index[sure]
        decided.loc[rows, "mode"] = predicted.loc[rows]
        decided.loc[rows, "confidence"] = np.round(probability[sure] * 0.8, 4)
        decided.loc[rows, "evidence"] = "classifier p=" + pd.Series(probability[sure], index=rows).round(2).astype("string")
        decided.loc[rows, "source"] = "classifier"
    rest = decided.index[guess_rows][decided["mode"][guess_rows].isna().to_numpy()]
    decided.loc[rest, ["mode", "evidence", "source"]] = ["other", "no specific evidence", "none"]
    decided.loc[rest, "confidence"] = NO_EVIDENCE_CONFIDENCE
    return validation


def _modes_table(df: pd.DataFrame, decided: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "trace_id": df["trace_id"],
            "mode": decided["mode"],
            "mode_id": decided["mode"].map(taxonomy.ids()),
            "confidence": decided["confidence"],
            "evidence": decided["evidence"],
            "evidence_source": decided["source"],
            "taxonomy_version": taxonomy.version,
            "model": df["model"],
            "prompt_version": df["prompt_version"],
            "partition_date": df["partition_date"],
        }
    )
    return out.astype(ERROR_MODE_COLUMNS)


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


def negative_traces_by_day(labels: pd.DataFrame, traces: pd.DataFrame, lengths: pd.DataFrame, days: list[str], span: int) -> pd.DataFrame:
    """`negative_traces` of each of `days`, its peers being the traces of the `span` + 1 trace days
    ending on it (`lengths` holds them, with `partition_date`): a day's figures do not depend on
    which run computes them."""
    label_day, length_day = labels["partition_date"].astype("string"), lengths["partition_date"].astype("string")
    frames = [negative_traces(labels[label_day == day], traces, lengths[length_day.isin(days_ending(day, span))]) for day in days]
    return pd.concat(frames, ignore_index=True) if frames else negative_traces(labels.iloc[:0], traces.iloc[:0], lengths.iloc[:0])
