"""Implicit signals per trace, derived from user behaviour around the response.

Vectorized: events are aggregated onto integer trace codes, text distances come from rapidfuzz's
batch `cpdist` (one C++ call per signal, all cores). Definitions (thresholds in `SignalParams`):

- edit: the latest `edit` or `correction` text against the output. `edit_distance` is the
  normalized Indel distance (0 = same, 1 = nothing shared); `edit_class` is `trivial` when the texts
  differ only in case, white space or punctuation (identical included), `addition` when the edit
  keeps the whole answer and only adds a line or a name (a sign-off swapped), else `minor` (distance ≤
  `edit_minor_max`), `major` (≤ `edit_major_max`) or `rewrite`. `edit_length_ratio` is
  len(edit) / len(output): below 1 the user shortened the answer.
- copy: number of copy events, and the largest copied share of the output (a copy event without
  text copied the whole answer); `copy_kind` is `full` at or above `full_copy_min_share`, else `snippet`.
- regenerate: regenerate events linked to the trace, and the chain: consecutive traces of a
  session with the same prompt. Each trace gets `chain_id` (its first trace), `chain_position`,
  `chain_length`, `regenerated_by` (the next trace of the chain) and `chain_accepted` (the chain's
  final response was not regenerated again nor thumbed down).
- rephrase: the user's next prompt in the session is not the same prompt but at least
  `rephrase_min_similarity` similar to this one (rapidfuzz partial ratio: the best-aligned substring,
  so a short reworded question matches the longer original): the answer missed.
  `rephrase_similarity` is that score, or 0 below the threshold (scoring stops early there).
- dwell: seconds from the end of the response to the user's next action (a feedback event on it,
  or the session's next prompt).
- abandon: an explicit `abandon` event, or inferred: the session's last response, no positive
  signal (thumbs up, copy, rating ≥ 4), and the data shows at least `abandon_idle_minutes` of
  silence after it.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel

from feedback_loop.lib.columns import is_in, large_text, one_chunk, positions, replaced, rows_kept, sort_order
from feedback_loop.lib.contract import TRACE_IDENTITY, empty_frame, utc_array
from feedback_loop.lib.linking import events_about_day
from feedback_loop.lib.params import SignalParams
from feedback_loop.lib.tables import Table
from feedback_loop.lib.text import lowered, matches, text_length

# Characters a `trivial` edit may change: white space and punctuation (ASCII and common Unicode).
_IGNORED = string.whitespace + string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u00b7\u2022"
TRIVIAL_TABLE = str.maketrans("", "", _IGNORED)
# White space that is not a single inner space: Unicode White_Space other than U+0020, or a space
# that is doubled, leading or trailing (RE2 has no White_Space class).
IRREGULAR_SPACE = r"[\t\n\v\f\r\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]|  |^ | $"

SIGNAL_COLUMNS: dict[str, str] = {
    **TRACE_IDENTITY,
    "edit_type": "string",
    "edit_text": "string",
    "edit_distance": "float64",
    "edit_class": "string",
    "edit_length_ratio": "float64",
    "copy_count": "int64",
    "copied_share": "float64",
    "copy_kind": "string",
    "regenerate_count": "int64",
    "chain_id": "string",
    "chain_position": "int64",
    "chain_length": "int64",
    "regenerated_by": "string",
    "chain_accepted": "boolean",
    "rephrased": "bool",
    "rephrase_similarity": "float64",
    "dwell_s": "float64",
    "abandoned": "bool",
    "abandon_source": "string",
    "thumbs_up": "int64",
    "thumbs_down": "int64",
    "rating_mean": "float64",
    "partition_date": "string",
}


def implicit_signals(traces: pd.DataFrame, linked: pd.DataFrame, params: SignalParams, horizon: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per trace of `traces` with its implicit signals (see the module docstring).

    `traces` may include the days before and after for session context; `linked` holds the linked
    feedback events of every day that can carry feedback on them. `horizon` is the latest moment the
    data covers (default: the latest timestamp seen), used to decide that a session went silent.
    """
    t = _responses(traces)
    ev = events_on(t["trace_id"], linked)
    n = len(t)
    out = t[list(TRACE_IDENTITY)]  # a new frame (copy-on-write): adding columns leaves `t` as it is
    counts = {etype: np.bincount(ev.loc[ev["type"] == etype, "_code"], minlength=n) for etype in ("copy", "regenerate", "thumbs_up", "thumbs_down", "abandon")}
    out["thumbs_up"] = counts["thumbs_up"]
    out["thumbs_down"] = counts["thumbs_down"]
    ratings = ev[ev["type"] == "rating"]
    rating_sum = np.bincount(ratings["_code"], weights=ratings["value_num"].to_numpy(dtype=float), minlength=n)
    rating_n = np.bincount(ratings["_code"], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rating_mean"] = np.where(rating_n > 0, rating_sum / np.maximum(rating_n, 1), np.nan)
    _edits(out, traces, t, ev, params)
    _copies(out, traces, t, ev, counts["copy"], params)
    _chains(out, t, counts["regenerate"], counts["thumbs_down"])
    _rephrases(out, t, params)
    _dwell_and_abandon(out, t, ev, counts, params, horizon if horizon is not None else _latest(t, ev))
    out["partition_date"] = t["partition_date"]
    return out.astype(SIGNAL_COLUMNS)[list(SIGNAL_COLUMNS)].reset_index(drop=True)


def session_context(traces: pd.DataFrame, before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """A day's `traces` with the traces of the day `before` and `after` that belong to the same
    sessions (a session may cross midnight either way), in one chunk per column."""
    sessions = traces["session_id"].dropna()
    parts = [before[is_in(before["session_id"], sessions)], traces, after[is_in(after["session_id"], sessions)]]
    return one_chunk(pd.concat([part for part in parts if len(part)], ignore_index=True)) if len(traces) else traces


def signals_of_day(day: str, context: pd.DataFrame, linked: pd.DataFrame, params: SignalParams, horizon: pd.Timestamp) -> pd.DataFrame:
    """`implicit_signals` of the traces of `day` in `context` (their `session_context`): the same rows
    as over a whole range of days, with one day's texts in memory at a time."""
    signals = implicit_signals(context, linked, params, horizon)
    return signals[(signals["partition_date"] == day).to_numpy()].reset_index(drop=True)


def signals_by_day(days: list[str], traces: Table, linked: Table, params: SignalParams, horizon: Callable[[str], pd.Timestamp]) -> Iterator[tuple[str, pd.DataFrame]]:
    """`implicit_signals` of the traces of each of `days` (`signals_of_day`), yielded a day at a time
    as made: each day's traces read from `traces`, with the traces of the days around it in the same
    sessions as context, and the events about them from `linked` (`events_about_day`). One day's
    texts and slices of its neighbours', the events about two days' traces and a slice of a third's
    are held at once. `horizon` gives each day's horizon."""
    previous: tuple[str, pd.DataFrame] | None = None  # (day, the day's traces in the next day's sessions)
    events: dict[str, pd.DataFrame] = {}
    for day in days:
        before, after = _shifted(day, -1), _shifted(day, 1)
        today = traces.read(partitions=[day])
        if today.empty:
            previous = None
            yield day, empty_frame(SIGNAL_COLUMNS)
            continue
        sessions = today["session_id"].dropna()
        earlier = previous[1] if previous is not None and previous[0] == before else traces.read(partitions=[before], rows_where=("session_id", sessions))
        later = traces.read(partitions=[after], rows_where=("session_id", sessions))
        events = {d: events[d] if d in events else events_about_day(linked, d, SIGNAL_EVENT_COLUMNS) for d in (before, day, after)}
        context = session_context(today, earlier, later)
        # All the next day takes of this one: its traces in the next day's sessions (as `earlier`).
        previous = (day, today[is_in(today["session_id"], later["session_id"].dropna())])
        del today, earlier
        # The day's events, and those of the days around it that are about its sessions' traces.
        around = [part[is_in(part["trace_id"], context["trace_id"])] for part in (events[before], events[after])]
        yield day, signals_of_day(day, context, pd.concat([events[day], *around], ignore_index=True), params, horizon(day))
        del context, around  # before the next day's texts are read
        # All the next day takes of this day's events: those about its traces in the next day's sessions.
        events[day] = events[day][is_in(events[day]["trace_id"], previous[1]["trace_id"])]


def _shifted(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def knowledge_horizon(day: str, last_day: str, late_days: int) -> pd.Timestamp:
    """The `horizon` of the signals of trace day `day`: the end of the last trace day ingested
    (`last_day`: the data covers every day up to its end), but never later than the end of the last
    night that relabels `day` (`late_days` after it). A rerun of any night then computes each day with
    the horizon that day's last relabel had, whatever has been ingested since."""
    until = min(last_day, (dt.date.fromisoformat(day) + dt.timedelta(days=late_days)).isoformat())
    return pd.Timestamp(until, tz="UTC") + pd.Timedelta(days=1)


def events_on(trace_ids: pd.Series, linked: pd.DataFrame) -> pd.DataFrame:
    """The linked events about these traces, with `_code`: the row of their trace in `trace_ids`."""
    code = positions(linked["trace_id"], trace_ids)
    return linked.assign(_code=code)[code >= 0]


ADDITION_MAX_CHARS = 200


def _only_adds(output: str, edit: str) -> bool:
    """The edit keeps the whole answer (its last short line, a sign-off, may be replaced) and only
    adds a little: a name, a signature, a "prepared by" line. The user used the answer as it was."""
    kept = " ".join(output.split())
    lines = output.rstrip().splitlines()
    without_last = " ".join(" ".join(lines[:-1]).split()) if len(lines) > 1 and len(lines[-1]) <= 60 else kept
    text = " ".join(edit.split())
    return len(kept) >= 40 and 0 < len(text) - len(without_last) <= ADDITION_MAX_CHARS and (kept in text or (len(without_last) >= 40 and without_last in text))


def classify_edits(outputs: pd.Series, edits: pd.Series, params: SignalParams) -> pd.DataFrame:
    """Distance, class and length ratio of each (output, edit) pair."""
    outputs = outputs.fillna("").astype(str).reset_index(drop=True)
    edits = edits.fillna("").astype(str).reset_index(drop=True)
    distance = process.cpdist(outputs.tolist(), edits.tolist(), scorer=Indel.normalized_distance, workers=-1) if len(outputs) else np.array([])
    # A loop over the edits only (~5 % of traces): faster than an RE2 replace of the ignored characters.
    trivial = np.array([o.lower().translate(TRIVIAL_TABLE) == e.lower().translate(TRIVIAL_TABLE) for o, e in zip(outputs, edits, strict=True)], dtype=bool)
    addition = np.array([_only_adds(o, e) for o, e in zip(outputs, edits, strict=True)], dtype=bool) & ~trivial
    edit_class = np.select(
        [trivial, addition, distance <= params.edit_minor_max, distance <= params.edit_major_max],
        ["trivial", "addition", "minor", "major"],
        default="rewrite",
    )
    out_len = outputs.str.len().to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(out_len > 0, edits.str.len().to_numpy(dtype=float) / np.maximum(out_len, 1), np.nan)
    return pd.DataFrame({"edit_distance": distance, "edit_class": edit_class, "edit_length_ratio": ratio})


def normalize_prompt(prompt: pd.Series) -> pd.Series:
    """Case- and white-space-insensitive prompt key (regenerations repeat the prompt); missing: ""."""
    key = lowered(prompt)
    irregular = matches(key, IRREGULAR_SPACE)  # splitting every text on white space costs ~4x a scan
    if irregular.any():
        words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(key.filter(pa.array(irregular))))  # trimmed: no empty edge words
        key = pc.replace_with_mask(key, pa.array(irregular), pc.binary_join(words, pa.scalar(" ", pa.large_string())))
    return pd.Series(key, index=prompt.index, dtype="string")


SIGNAL_EVENT_COLUMNS = ["trace_id", "timestamp", "type", "value", "value_num"]  # what the signals read of linked feedback
RESPONSE_COLUMNS = ["trace_id", "span_id", "session_id", "user_id", "timestamp", "latency_ms", "model", "prompt_version", "prompt", "output", "partition_date"]


def _responses(traces: pd.DataFrame) -> pd.DataFrame:
    """One row per trace (its last span), in session order, without the texts: `_row` is the trace's
    row in `traces`, where `_text` finds its prompt or output (only the few rows that need one)."""
    keys = _last_spans(traces[["trace_id", "session_id", "timestamp"]])
    keys["_session"] = keys["session_id"].fillna("__no_session__" + keys["trace_id"])
    keys = keys.iloc[sort_order(keys, ["_session", "timestamp", "trace_id"])]
    rows_in_traces = keys.index.to_numpy()
    t = traces[[c for c in RESPONSE_COLUMNS if c not in TEXT_COLUMNS]].iloc[rows_in_traces].reset_index(drop=True)
    t["_row"] = rows_in_traces
    t["_session"] = keys["_session"].to_numpy()
    t["_end"] = _response_end(t)
    same_session_next = (t["_session"].shift(-1) == t["_session"]).fillna(False).to_numpy(dtype=bool)
    t["_next_idx"] = np.where(same_session_next, np.arange(len(t)) + 1, -1)
    # Prompt keys matter only where a session continues: compute them there.
    involved = same_session_next | np.roll(same_session_next, 1) if len(t) else same_session_next
    rows = np.flatnonzero(involved)
    prompts = _text(traces, "prompt", t, rows)
    t["_prompt_key"] = replaced(pd.Series(pd.NA, index=t.index, dtype="string"), rows, normalize_prompt(prompts))
    return t


TEXT_COLUMNS = ("prompt", "output")


def _last_spans(keys: pd.DataFrame) -> pd.DataFrame:
    """The row of each trace's latest span among `keys` (`trace_id`, `timestamp`, …), indexed by
    its position in `keys`."""
    keys = keys.reset_index(drop=True)
    return keys.iloc[sort_order(keys, ["timestamp"])].drop_duplicates("trace_id", keep="last")


def _response_end(spans: pd.DataFrame) -> pd.Series:
    """When each span's response ended: its start plus its latency (none given: 0)."""
    return spans["timestamp"] + pd.to_timedelta(spans["latency_ms"].fillna(0.0), unit="ms")


def _text(traces: pd.DataFrame, column: str, t: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """`column` of the responses at positions `rows` of `t`, taken from `traces`."""
    return traces[column].iloc[t["_row"].to_numpy()[rows]].reset_index(drop=True)


def _edits(out: pd.DataFrame, traces: pd.DataFrame, t: pd.DataFrame, ev: pd.DataFrame, params: SignalParams) -> None:
    edits = ev.loc[is_in(ev["type"], ["edit", "correction"]) & ev["value"].notna().to_numpy(), ["_code", "type", "value", "timestamp"]]
    latest = edits.sort_values("timestamp", kind="stable").drop_duplicates("_code", keep="last")
    out["edit_type"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["edit_text"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["edit_distance"] = np.nan
    out["edit_class"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["edit_length_ratio"] = np.nan
    if latest.empty:
        return
    rows = latest["_code"].to_numpy()
    classified = classify_edits(_text(traces, "output", t, rows), latest["value"], params)
    out.loc[rows, "edit_type"] = latest["type"].to_numpy()
    out.loc[rows, "edit_text"] = latest["value"].to_numpy()
    for column in ("edit_distance", "edit_class", "edit_length_ratio"):
        out.loc[rows, column] = classified[column].to_numpy()


def _copies(out: pd.DataFrame, traces: pd.DataFrame, t: pd.DataFrame, ev: pd.DataFrame, copy_count: np.ndarray, params: SignalParams) -> None:
    copies = rows_kept(ev[["_code", "value"]], (ev["type"] == "copy").to_numpy(dtype=bool, na_value=False))
    codes = copies["_code"].to_numpy()
    out_len = text_length(traces["output"]).fillna(0).to_numpy(dtype=float)[t["_row"].to_numpy()[codes]]  # counted in place: no take of the texts
    copied_len = text_length(copies["value"]).to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(np.isnan(copied_len), 1.0, np.minimum(copied_len / np.maximum(out_len, 1), 1.0))
    best = np.full(len(out), np.nan)
    if len(codes):
        order = np.argsort(share, kind="stable")
        best[codes[order]] = share[order]  # the last write per code is its largest share
    out["copy_count"] = copy_count
    out["copied_share"] = best
    out["copy_kind"] = pd.Series(np.where(np.isnan(best), None, np.where(best >= params.full_copy_min_share, "full", "snippet")), dtype="string")


def _chains(out: pd.DataFrame, t: pd.DataFrame, regenerate_count: np.ndarray, thumbs_down: np.ndarray) -> None:
    same_as_prev = ((t["_session"] == t["_session"].shift(1)) & (t["_prompt_key"] == t["_prompt_key"].shift(1))).fillna(False).to_numpy(dtype=bool)
    chain_no = np.cumsum(~same_as_prev)
    first = np.flatnonzero(~same_as_prev)
    chain_start = first[chain_no - 1]
    chain_length = np.bincount(chain_no)[chain_no]
    position = np.arange(len(t)) - chain_start + 1
    final = position == chain_length
    final_idx = chain_start + chain_length - 1
    accepted = (regenerate_count[final_idx] == 0) & (thumbs_down[final_idx] == 0)
    next_id = t["trace_id"].shift(-1)
    out["regenerate_count"] = regenerate_count
    out["chain_id"] = t["trace_id"].to_numpy()[chain_start]
    out["chain_position"] = position
    out["chain_length"] = chain_length
    out["regenerated_by"] = next_id.where(~final, pd.NA).astype("string")
    out["chain_accepted"] = pd.array(accepted, dtype="boolean")


def _rephrases(out: pd.DataFrame, t: pd.DataFrame, params: SignalParams) -> None:
    nxt = t["_next_idx"].to_numpy()
    candidates = np.flatnonzero(nxt >= 0)
    similarity = np.full(len(t), np.nan)
    if len(candidates):
        keys = large_text(t["_prompt_key"])
        this_p, next_p = keys.take(candidates), keys.take(nxt[candidates])
        differs = pc.fill_null(pc.not_equal(this_p, next_p), False)
        cand = candidates[differs.to_numpy(zero_copy_only=False)]
        if len(cand):
            cutoff = params.rephrase_min_similarity * 100
            pairs = (this_p.filter(differs).to_pylist(), next_p.filter(differs).to_pylist())
            scores = process.cpdist(*pairs, scorer=fuzz.partial_ratio, score_cutoff=cutoff, workers=-1)
            similarity[cand] = scores / 100.0
    out["rephrase_similarity"] = similarity
    out["rephrased"] = np.nan_to_num(similarity, nan=0.0) >= params.rephrase_min_similarity


def _dwell_and_abandon(out: pd.DataFrame, t: pd.DataFrame, ev: pd.DataFrame, counts: dict[str, np.ndarray], params: SignalParams, horizon: pd.Timestamp) -> None:
    nxt = t["_next_idx"].to_numpy()
    end = utc_array(t["_end"])
    ts = utc_array(t["timestamp"])
    next_prompt = np.where(nxt >= 0, ts[np.maximum(nxt, 0)], np.datetime64("NaT", "us"))
    first_event = np.full(len(t), np.datetime64("NaT", "us"))
    last_event = np.full(len(t), np.datetime64("NaT", "us"))
    if len(ev):
        grouped = ev.groupby("_code")["timestamp"]
        firsts, lasts = grouped.min(), grouped.max()
        first_event[firsts.index.to_numpy()] = utc_array(firsts)
        last_event[lasts.index.to_numpy()] = utc_array(lasts)
    next_action = np.fmin(next_prompt, first_event)
    out["dwell_s"] = (next_action - end) / np.timedelta64(1, "s")
    positive = (counts["thumbs_up"] > 0) | (counts["copy"] > 0) | (np.nan_to_num(out["rating_mean"].to_numpy(), nan=0) >= 4)
    last_activity = np.fmax(end, last_event)
    idle = np.timedelta64(int(params.abandon_idle_minutes * 60e6), "us")
    silent = (nxt < 0) & (np.datetime64(horizon.tz_convert("UTC").tz_localize(None), "us") - last_activity >= idle)
    explicit = counts["abandon"] > 0
    inferred = ~explicit & silent & ~positive
    out["abandoned"] = explicit | inferred
    out["abandon_source"] = pd.Series(np.where(explicit, "explicit", np.where(inferred, "inferred", None)), dtype="string")


def _latest(t: pd.DataFrame, ev: pd.DataFrame) -> pd.Timestamp:
    latest = t["_end"].max() if len(t) else pd.Timestamp.min.tz_localize("UTC")
    if len(ev):
        latest = max(latest, ev["timestamp"].max())
    return latest
