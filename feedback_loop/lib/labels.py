"""One label per trace, weighing explicit feedback against implicit signals.

Explicit evidence (each user's latest thumb, ratings, corrections, comments that complain or
praise: `comments.py`) is averaged into
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

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.columns import is_in, large_text, positions, sort_order
from feedback_loop.lib.comments import comment_polarity
from feedback_loop.lib.contract import TRACE_IDENTITY, empty_frame
from feedback_loop.lib.linking import events_about_day
from feedback_loop.lib.params import LabelWeights
from feedback_loop.lib.signals import events_on
from feedback_loop.lib.tables import Table

LABEL_COLUMNS: dict[str, str] = {
    **TRACE_IDENTITY,
    "label": "string",
    "score": "float64",
    "confidence": "float64",
    "explicit_score": "float64",
    "implicit_score": "float64",
    "disagreement": "bool",
    "thumbs_up": "int64",  # users whose latest thumb on the trace is up
    "thumbs_down": "int64",  # users whose latest thumb on the trace is down
    "evidence": "string",
    "reason_tags": "string",
    "comments": "string",
    "edit_text": "string",
    "edit_class": "string",
    "partition_date": "string",
}
LABEL_EVENT_COLUMNS = ["trace_id", "user_id", "timestamp", "type", "value_num", "reason", "comment"]  # what labels read of linked feedback
MIN_SIGN = 0.1


def label_traces(signals: pd.DataFrame, linked: pd.DataFrame, weights: LabelWeights) -> pd.DataFrame:
    """Label every trace of `signals`; `linked` supplies the explicit feedback events."""
    s = signals.reset_index(drop=True)
    n = len(s)
    ev = events_on(s["trace_id"], linked)

    explicit_sum = np.zeros(n)
    explicit_n = np.zeros(n)
    pieces: list[pa.Array] = []  # evidence texts, null where a row has none
    thumb_counts = {}
    thumbs = ev[is_in(ev["type"], ["thumbs_up", "thumbs_down"])]
    thumbs = thumbs.iloc[sort_order(thumbs, ["timestamp"])]
    latest_thumbs = thumbs.drop_duplicates(["_code", "user_id"], keep="last")  # a user may change their mind
    for kind, weight in (("thumbs_up", weights.thumbs_up), ("thumbs_down", weights.thumbs_down)):
        rows = latest_thumbs[latest_thumbs["type"] == kind]
        k = np.bincount(rows["_code"], minlength=n)
        thumb_counts[kind] = k
        explicit_sum += k * weight
        explicit_n += k
        tag = rows[rows["reason"].notna()].drop_duplicates("_code", keep="last")  # the latest reason given
        tags = _spread(n, tag["_code"].to_numpy(), large_text(tag["reason"]))
        pieces.append(pc.coalesce(_concat(kind + "(", tags, ")"), _flag(k > 0, kind)))
    ratings = ev[ev["type"] == "rating"]
    rating_values = (ratings["value_num"].to_numpy(dtype=float) - 3.0) / 2.0 * weights.rating_1_to_5
    explicit_sum += np.bincount(ratings["_code"], weights=rating_values, minlength=n)
    k = np.bincount(ratings["_code"], minlength=n)
    explicit_n += k
    rated = np.flatnonzero(k > 0)
    mean_rating = large_text(s["rating_mean"].iloc[rated].round(1))
    pieces.append(_spread(n, rated, _concat("rating:", mean_rating)))
    commented = ev[ev["comment"].notna()]
    polarity = comment_polarity(commented["comment"]).to_numpy(dtype=float, na_value=np.nan)
    for sign, weight, name in ((-1.0, weights.comment_negative, "comment:negative"), (1.0, weights.comment_positive, "comment:positive")):
        k = np.bincount(commented["_code"][polarity == sign], minlength=n)
        explicit_sum += k * weight
        explicit_n += k
        pieces.append(_flag(k > 0, name))
    corrected = (s["edit_type"] == "correction").fillna(False).to_numpy()
    explicit_sum += corrected * weights.correction
    explicit_n += corrected
    pieces.append(_flag(corrected, "correction"))
    with np.errstate(invalid="ignore", divide="ignore"):
        explicit = np.where(explicit_n > 0, explicit_sum / np.maximum(explicit_n, 1), np.nan)

    edit_weight = _weight_of(s["edit_class"], {"addition": weights.edit_addition, "minor": weights.edit_minor, "major": weights.edit_major, "rewrite": weights.edit_rewrite})
    edit_weight = np.where(corrected, 0.0, edit_weight)  # a correction already counted as explicit
    copy_weight = _weight_of(s["copy_kind"], {"full": weights.copy_full, "snippet": weights.copy_snippet})
    regenerated = (s["regenerate_count"].to_numpy() > 0) | s["regenerated_by"].notna().to_numpy()
    rephrased = s["rephrased"].to_numpy(dtype=bool)
    explicit_abandon = (s["abandon_source"] == "explicit").fillna(False).to_numpy()
    inferred_abandon = (s["abandon_source"] == "inferred").fillna(False).to_numpy()
    accepted = ((s["chain_length"] > 1) & s["regenerated_by"].isna() & s["chain_accepted"].fillna(False)).to_numpy()
    implicit_items = [
        (edit_weight, _where(edit_weight != 0, _concat("edit:", large_text(s["edit_class"])))),
        (copy_weight, _where(copy_weight != 0, _concat("copy:", large_text(s["copy_kind"])))),
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
    disagreement = (
        has_explicit
        & has_implicit
        & (np.abs(np.nan_to_num(explicit)) >= MIN_SIGN)
        & (np.abs(np.nan_to_num(implicit)) >= MIN_SIGN)
        & (np.sign(np.nan_to_num(explicit)) != np.sign(np.nan_to_num(implicit)))
    )
    strength = 2 * np.abs(np.nan_to_num(explicit)) * np.minimum(explicit_n, 3) + implicit_strength
    confidence = (1 - np.exp(-strength)) * np.where(disagreement, 0.5, 1.0)
    label = np.select(
        [~has_explicit & ~has_implicit, score >= weights.positive_min_score, score <= weights.negative_max_score],
        ["unlabeled", "positive", "negative"],
        default="neutral",
    )
    reasons = ev.loc[ev["reason"].notna(), ["_code", "reason"]].drop_duplicates()
    reasons = reasons.iloc[sort_order(reasons, ["_code", "reason"])]
    out = pd.DataFrame(
        {
            **{c: s[c] for c in TRACE_IDENTITY},
            "label": label,
            "score": np.round(score, 4),
            "confidence": np.round(np.where(label == "unlabeled", 0.0, confidence), 4),
            "explicit_score": explicit,
            "implicit_score": implicit,
            "disagreement": disagreement,
            "thumbs_up": thumb_counts["thumbs_up"],
            "thumbs_down": thumb_counts["thumbs_down"],
            "evidence": _join(pieces, n),
            "reason_tags": pd.Series(_joined_per_code(n, reasons, "reason", ","), dtype="string"),
            "comments": pd.Series(_joined_per_code(n, ev[ev["comment"].notna()], "comment", " | "), dtype="string"),
            "edit_text": s["edit_text"],
            "edit_class": s["edit_class"],
            "partition_date": s["partition_date"],
        }
    )
    return out.astype(LABEL_COLUMNS)[list(LABEL_COLUMNS)]


def labels_by_day(days: list[str], signals: Table, linked: Table, weights: LabelWeights) -> Iterator[tuple[str, pd.DataFrame]]:
    """`label_traces` of the signals of each of `days`, yielded a day at a time as made: the same
    rows as over the whole range (a label depends on its trace's signals and events only), with one
    day's signals and the events about them (`events_about_day`) in memory at a time."""
    for day in days:
        day_signals = signals.read(partitions=[day])
        if day_signals.empty:
            yield day, empty_frame(LABEL_COLUMNS)
            continue
        yield day, label_traces(day_signals, events_about_day(linked, day, LABEL_EVENT_COLUMNS), weights)


def agreement(labels: pd.DataFrame) -> tuple[int, int]:
    """How many traces with both explicit and implicit evidence have signs that agree, and how many there are."""
    both = labels.dropna(subset=["explicit_score", "implicit_score"])
    both = both[(both["explicit_score"].abs() >= MIN_SIGN) & (both["implicit_score"].abs() >= MIN_SIGN)]
    agree = np.sign(both["explicit_score"]) == np.sign(both["implicit_score"])
    return int(agree.sum()), len(both)


def _weight_of(values: pd.Series, weights: dict[str, float]) -> np.ndarray:
    """The weight of each value (0 for others and missing values)."""
    return np.append(np.array(list(weights.values()), dtype=float), 0.0)[positions(values, np.array(list(weights), dtype=object))]


def _flag(mask: np.ndarray, text: str) -> pa.Array:
    """`text` where `mask` is set, else null."""
    return _where(mask, pa.scalar(text, type=pa.large_string()))


def _where(mask: np.ndarray, values: pa.Array | pa.Scalar) -> pa.Array:
    return pc.if_else(pa.array(mask, type=pa.bool_()), values, pa.scalar(None, type=pa.large_string()))


def _concat(*parts: str | pa.Array) -> pa.Array:
    """Element-wise concatenation; null where any part is null."""
    values = [pa.scalar(p, type=pa.large_string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*values, pa.scalar("", type=pa.large_string()))


def _spread(n: int, codes: np.ndarray, values: pa.Array) -> pa.Array:
    """A length-`n` array holding `values[i]` at row `codes[i]`, null elsewhere."""
    at = np.full(n, -1)
    at[codes] = np.arange(len(codes))
    return values.take(pa.array(at, mask=at < 0))


def _joined_per_code(n: int, ev: pd.DataFrame, column: str, separator: str) -> pa.Array:
    """Per trace row, the `separator`-join of `column` over its events, in event order (null: none)."""
    table = pa.table({"code": ev["_code"].to_numpy(), "v": large_text(ev[column])})
    groups = table.group_by("code", use_threads=False).aggregate([("v", "list")])  # ordered within a group
    joined = pc.binary_join(groups["v_list"], pa.scalar(separator, type=pa.large_string()))
    return _spread(n, groups["code"].to_numpy(), joined)


def _join(pieces: list[pa.Array], n: int) -> pd.Series:
    """`; `-join the evidence strings of each row, skipping nulls (one Arrow pass)."""
    if not n:
        return pd.Series([], dtype="string")
    # A leading empty column: pyarrow drops the rows whose values are all null when skipping nulls.
    lead = pa.array(np.full(n, ""), type=pa.large_string())
    joined = pc.binary_join_element_wise(lead, *pieces, pa.scalar("; ", type=pa.large_string()), null_handling="skip")
    return pd.Series(pc.utf8_slice_codeunits(joined, 2), dtype="string")
