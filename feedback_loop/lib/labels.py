"""One label per trace, weighing explicit feedback against implicit signals.

Explicit evidence (each user's latest thumb, ratings, corrections) is averaged into
`explicit_score`; implicit evidence (edits, copies, regenerations, rephrases, abandonment,
acceptance after a regenerate) is summed and clipped into `implicit_score`. Weights live in
`LabelWeights`. With explicit evidence the score is `explicit_share * explicit + (1 -
explicit_share) * implicit`, so explicit feedback outweighs implicit; without it, the implicit score.

- `label`: `positive` (score ≥ `positive_min_score`), `negative` (≤ `negative_max_score`),
  `neutral` in between, `unlabeled` when there is no evidence at all.
- `confidence` in [0, 1]: 1 - exp(-strength), where strength sums the absolute weights of the
  evidence (explicit evidence counts double); halved when explicit and implicit evidence disagree.
- `disagreement`: both kinds present with opposite signs (each at least 0.1 from zero).
- `evidence`: the evidence items, `; `-separated, e.g. `thumbs_down(not_factual); edit:major; regenerated`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.contract import TRACE_IDENTITY
from feedback_loop.lib.params import LabelWeights
from feedback_loop.lib.signals import events_on

LABEL_COLUMNS: dict[str, str] = {
    **TRACE_IDENTITY,
    "label": "string",
    "score": "float64",
    "confidence": "float64",
    "explicit_score": "float64",
    "implicit_score": "float64",
    "disagreement": "bool",
    "evidence": "string",
    "reason_tags": "string",
    "comments": "string",
    "edit_text": "string",
    "edit_class": "string",
    "partition_date": "string",
}
MIN_SIGN = 0.1


def label_traces(signals: pd.DataFrame, linked: pd.DataFrame, weights: LabelWeights) -> pd.DataFrame:
    """Label every trace of `signals`; `linked` supplies the explicit feedback events."""
    s = signals.reset_index(drop=True)
    n = len(s)
    ev = events_on(s["trace_id"], linked)

    explicit_sum = np.zeros(n)
    explicit_n = np.zeros(n)
    pieces: list[pd.Series] = []
    thumbs = ev[ev["type"].isin(["thumbs_up", "thumbs_down"])].sort_values("timestamp", kind="stable")
    latest_thumbs = thumbs.drop_duplicates(["_code", "user_id"], keep="last")  # a user may change their mind
    for kind, weight in (("thumbs_up", weights.thumbs_up), ("thumbs_down", weights.thumbs_down)):
        rows = latest_thumbs[latest_thumbs["type"] == kind]
        k = np.bincount(rows["_code"], minlength=n)
        explicit_sum += k * weight
        explicit_n += k
        tag = rows.groupby("_code")["reason"].last()
        text = pd.Series(np.where(k > 0, kind, ""), dtype="string")
        with_tag = tag.dropna()
        text[with_tag.index] = kind + "(" + with_tag.astype("string") + ")"
        pieces.append(text)
    ratings = ev[ev["type"] == "rating"]
    rating_values = (ratings["value_num"].to_numpy(dtype=float) - 3.0) / 2.0 * weights.rating_1_to_5
    explicit_sum += np.bincount(ratings["_code"], weights=rating_values, minlength=n)
    k = np.bincount(ratings["_code"], minlength=n)
    explicit_n += k
    mean_rating = s["rating_mean"].round(1).astype("string")
    pieces.append(pd.Series(np.where(k > 0, "rating:" + mean_rating.fillna(""), ""), dtype="string"))
    corrected = (s["edit_type"] == "correction").fillna(False).to_numpy()
    explicit_sum += corrected * weights.correction
    explicit_n += corrected
    pieces.append(_flag(corrected, "correction"))
    with np.errstate(invalid="ignore", divide="ignore"):
        explicit = np.where(explicit_n > 0, explicit_sum / np.maximum(explicit_n, 1), np.nan)

    edit_weight = s["edit_class"].map({"minor": weights.edit_minor, "major": weights.edit_major, "rewrite": weights.edit_rewrite}).astype("float64").fillna(0.0).to_numpy()
    edit_weight = np.where(corrected, 0.0, edit_weight)  # a correction already counted as explicit
    copy_weight = s["copy_kind"].map({"full": weights.copy_full, "snippet": weights.copy_snippet}).astype("float64").fillna(0.0).to_numpy()
    regenerated = (s["regenerate_count"].to_numpy() > 0) | s["regenerated_by"].notna().to_numpy()
    rephrased = s["rephrased"].to_numpy(dtype=bool)
    explicit_abandon = (s["abandon_source"] == "explicit").fillna(False).to_numpy()
    inferred_abandon = (s["abandon_source"] == "inferred").fillna(False).to_numpy()
    accepted = ((s["chain_length"] > 1) & s["regenerated_by"].isna() & s["chain_accepted"].fillna(False)).to_numpy()
    implicit_items = [
        (edit_weight, pd.Series(np.where(edit_weight != 0, "edit:" + s["edit_class"].fillna(""), ""), dtype="string")),
        (copy_weight, pd.Series(np.where(copy_weight != 0, "copy:" + s["copy_kind"].fillna(""), ""), dtype="string")),
        (regenerated * weights.regenerated, _flag(regenerated, "regenerated")),
        (rephrased * weights.rephrased, _flag(rephrased, "rephrased")),
        (explicit_abandon * weights.abandoned_explicit, _flag(explicit_abandon, "abandoned")),
        (inferred_abandon * weights.abandoned_inferred, _flag(inferred_abandon, "abandoned:inferred")),
        (accepted * weights.accepted_after_regenerate, _flag(accepted, "accepted_after_regenerate")),
    ]
    implicit_raw = np.sum([w for w, _ in implicit_items], axis=0) if n else np.zeros(0)
    implicit_strength = np.sum([np.abs(w) for w, _ in implicit_items], axis=0) if n else np.zeros(0)
    has_implicit = implicit_strength > 0
    implicit = np.where(has_implicit, np.clip(implicit_raw, -1, 1), np.nan)
    pieces += [text for _, text in implicit_items]

    has_explicit = explicit_n > 0
    share = weights.explicit_share
    score = np.where(
        has_explicit,
        share * np.nan_to_num(explicit) + (1 - share) * np.nan_to_num(implicit),
        np.nan_to_num(implicit),
    )
    disagreement = has_explicit & has_implicit & (np.abs(np.nan_to_num(explicit)) >= MIN_SIGN) & (np.abs(np.nan_to_num(implicit)) >= MIN_SIGN) & (np.sign(np.nan_to_num(explicit)) != np.sign(np.nan_to_num(implicit)))
    strength = 2 * np.abs(np.nan_to_num(explicit)) * np.minimum(explicit_n, 3) + implicit_strength
    confidence = (1 - np.exp(-strength)) * np.where(disagreement, 0.5, 1.0)
    label = np.select(
        [~has_explicit & ~has_implicit, score >= weights.positive_min_score, score <= weights.negative_max_score],
        ["unlabeled", "positive", "negative"],
        default="neutral",
    )
    reasons = ev.dropna(subset=["reason"]).groupby("_code")["reason"].agg(lambda r: ",".join(sorted(set(r))))
    comments = ev.dropna(subset=["comment"]).groupby("_code")["comment"].agg(" | ".join)
    out = pd.DataFrame(
        {
            **{c: s[c] for c in TRACE_IDENTITY},
            "label": label,
            "score": np.round(score, 4),
            "confidence": np.round(np.where(label == "unlabeled", 0.0, confidence), 4),
            "explicit_score": explicit,
            "implicit_score": implicit,
            "disagreement": disagreement,
            "evidence": _join(pieces, n),
            "reason_tags": pd.Series(reasons, index=range(n), dtype="string") if len(reasons) else pd.Series(pd.NA, index=range(n), dtype="string"),
            "comments": pd.Series(comments, index=range(n), dtype="string") if len(comments) else pd.Series(pd.NA, index=range(n), dtype="string"),
            "edit_text": s["edit_text"],
            "edit_class": s["edit_class"],
            "partition_date": s["partition_date"],
        }
    )
    return out.astype(LABEL_COLUMNS)[list(LABEL_COLUMNS)]


def agreement_rate(labels: pd.DataFrame) -> tuple[float | None, int]:
    """Share of traces with both explicit and implicit evidence whose signs agree, and how many there are."""
    both = labels.dropna(subset=["explicit_score", "implicit_score"])
    both = both[(both["explicit_score"].abs() >= MIN_SIGN) & (both["implicit_score"].abs() >= MIN_SIGN)]
    if both.empty:
        return None, 0
    agree = np.sign(both["explicit_score"]) == np.sign(both["implicit_score"])
    return float(agree.mean()), len(both)


def _flag(mask: np.ndarray, text: str) -> pd.Series:
    return pd.Series(np.where(mask, text, ""), dtype="string")


def _join(pieces: list[pd.Series], n: int) -> pd.Series:
    """`; `-join the non-empty evidence strings of each row (one Arrow pass)."""
    if not n:
        return pd.Series([], dtype="string")
    columns = [pa.array(piece.reset_index(drop=True).replace("", pd.NA).astype("string"), type=pa.large_string()) for piece in pieces]
    # A leading empty column: pyarrow drops the rows whose values are all null when skipping nulls.
    lead = pa.array(np.full(n, ""), type=pa.large_string())
    joined = pc.binary_join_element_wise(lead, *columns, pa.array(np.full(n, "; "), type=pa.large_string()), null_handling="skip")
    return pd.Series(pc.utf8_slice_codeunits(joined, 2), dtype="string")
