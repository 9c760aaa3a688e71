"""Link every feedback event to the trace/span whose response it is about.

In order of trust:
1. `by_span`: the event's `span_id` is a known span;
2. `by_trace`: the event's `trace_id` is a known trace (its last span is the response);
3. `by_session_time`: no id, so the latest trace of the event's session at or before the event,
   at most `session_max_gap_minutes` earlier.

A `regenerate` event belongs to the response it replaced. A client that attaches it to the new
response (a trace that started after the click) is re-pointed to the session's previous trace
(`by_trace_regenerate_previous`). What cannot be linked is returned as orphans with a reason;
an event that names an id that is unknown is never guessed onto another trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feedback_loop.lib.columns import positions, rows_kept, sort_order
from feedback_loop.lib.contract import FEEDBACK_COLUMNS, conform, utc_array
from feedback_loop.lib.tables import Table

TRACE_KEY_TYPES: dict[str, str] = {
    "trace_id": "string",
    "span_id": "string",
    "session_id": "string",
    "timestamp": "datetime64[us, UTC]",
    "partition_date": "string",
}
TRACE_KEYS = list(TRACE_KEY_TYPES)
LINK_COLUMNS: dict[str, str] = {
    **{k: v for k, v in FEEDBACK_COLUMNS.items() if k != "partition_date"},
    "trace_date": "string",
    "trace_timestamp": "datetime64[us, UTC]",
    "link_method": "string",
    "partition_date": "string",  # the event's day
}
ORPHAN_COLUMNS: dict[str, str] = {**FEEDBACK_COLUMNS, "orphan_reason": "string"}


@dataclass(frozen=True)
class Linked:
    linked: pd.DataFrame
    orphans: pd.DataFrame


def link_feedback(events: pd.DataFrame, traces: pd.DataFrame, session_max_gap: pd.Timedelta) -> Linked:
    """Resolve each event to a trace; see the module docstring for the rules."""
    events = conform(events, FEEDBACK_COLUMNS).reset_index(drop=True)
    spans = conform(traces, TRACE_KEY_TYPES)[TRACE_KEYS]
    spans = spans.iloc[sort_order(spans, ["timestamp"])].drop_duplicates("span_id", keep="last").reset_index(drop=True)
    last_span = spans.drop_duplicates("trace_id", keep="last")
    n = len(events)
    pos = np.full(n, -1)  # the linked span's row in `spans`
    method = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)

    has_span = events["span_id"].notna().to_numpy()
    by_span = _lookup(spans["span_id"], events["span_id"], has_span)
    pos[by_span >= 0] = by_span[by_span >= 0]
    method[by_span >= 0] = "by_span"

    has_trace = events["trace_id"].notna().to_numpy() & (pos < 0)
    by_trace = _lookup(last_span["trace_id"], events["trace_id"], has_trace)
    hit = by_trace >= 0
    pos[hit] = last_span.index.to_numpy()[by_trace[hit]]
    method[hit] = "by_trace"
    reason[has_trace & ~hit] = "trace_id not found among traces of the linking window"
    reason[has_span & (pos < 0) & events["trace_id"].isna().to_numpy()] = "span_id not found among traces of the linking window"

    event_ts = utc_array(events["timestamp"]).astype(np.int64)  # microseconds
    span_ts = utc_array(spans["timestamp"]).astype(np.int64)
    # A regenerate attached to the response that replaced the one it judges.
    regen_forward = (events["type"] == "regenerate").fillna(False).to_numpy() & (pos >= 0)
    regen_forward[regen_forward] = span_ts[pos[regen_forward]] > event_ts[regen_forward]
    by_time = ((pos < 0) & (reason == None) & events["session_id"].notna().to_numpy()) | regen_forward  # noqa: E711
    if by_time.any():
        rows = np.flatnonzero(by_time)
        session = events["session_id"].iloc[rows].to_numpy(dtype=object, na_value=None)
        regen_rows = regen_forward[rows]
        session[regen_rows] = spans["session_id"].iloc[pos[rows[regen_rows]]].to_numpy(dtype=object, na_value=None)
        found = _latest_at_or_before(session, event_ts[rows], spans, span_ts, session_max_gap)
        ok = found >= 0
        pos[rows[ok]] = found[ok]
        pos[rows[~ok]] = -1
        method[rows[ok]] = np.where(regen_forward[rows[ok]], "by_trace_regenerate_previous", "by_session_time")
        missed = rows[~ok]
        known_session = positions(session[~ok], spans["session_id"].dropna().unique()) >= 0
        reason[missed] = np.where(
            regen_forward[missed],
            "regenerate with no earlier trace in the session",
            np.where(known_session, "no trace of the session at or before the event within the gap", "session_id not found among traces of the linking window"),
        )
    linked_mask = pos >= 0
    linked = rows_kept(events, linked_mask)  # a new frame: adding columns leaves `events` as it is
    target = spans[["trace_id", "span_id", "partition_date", "timestamp"]].iloc[pos[linked_mask]]
    for column, source in (("trace_id", "trace_id"), ("span_id", "span_id"), ("trace_date", "partition_date"), ("trace_timestamp", "timestamp")):
        linked[column] = target[source].array
    linked["link_method"] = method[linked_mask]
    orphans = rows_kept(events, ~linked_mask)
    orphans["orphan_reason"] = pd.Series(reason[~linked_mask], index=orphans.index, dtype="string").fillna("no trace_id, span_id or session_id to link by")
    return Linked(
        linked=conform(linked, LINK_COLUMNS).reset_index(drop=True),
        orphans=conform(orphans, ORPHAN_COLUMNS).reset_index(drop=True),
    )


TOO_LATE = "too late: its trace is of {day}, before the late-feedback window; that label is not updated"


def too_late(orphans: pd.DataFrame, older: pd.DataFrame) -> pd.DataFrame:
    """`orphans` with the reason of those whose span or trace is among the `older` traces (of the
    days before the linking window; at least those sharing an id) set to TOO_LATE."""
    if orphans.empty or older.empty:
        return orphans
    latest = older.iloc[sort_order(older, ["partition_date"])]
    day = pd.Series(pd.NA, index=orphans.index, dtype="string")
    for column in ("span_id", "trace_id"):
        known = latest.drop_duplicates(column, keep="last")
        at = positions(orphans[column], known[column])
        hit = (at >= 0) & day.isna().to_numpy()
        day[hit] = known["partition_date"].to_numpy()[at[hit]]
    found = day.notna().to_numpy()
    if not found.any():
        return orphans
    prefix, suffix = TOO_LATE.split("{day}")
    out = orphans.copy()
    out.loc[found, "orphan_reason"] = prefix + day[found] + suffix
    return out


def events_about_day(linked: Table, day: str, columns: list[str]) -> pd.DataFrame:
    """The linked events about the traces of `day` (`trace_date`), with `columns`, in the table's
    order. Only the partitions from `day` on are read: an event is linked to a trace of its own
    day or of an earlier one, never a later one."""
    later = [partition for partition in linked.partitions if partition >= day]
    events = linked.read(partitions=later, columns=columns, rows_where=("trace_date", pd.Series([day], dtype="string")))
    return conform(events, {name: LINK_COLUMNS[name] for name in columns})


def _lookup(index: pd.Series, keys: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Position of each key among the values of `index`, looked up only where `rows` is set (-1 elsewhere and when absent)."""
    out = np.full(len(keys), -1)
    if rows.any():
        out[rows] = positions(keys[rows], index)
    return out


def _latest_at_or_before(session: np.ndarray, event_ts: np.ndarray, spans: pd.DataFrame, span_ts: np.ndarray, max_gap: pd.Timedelta) -> np.ndarray:
    """For each (session, time), the row in `spans` of the session's latest span at or before it (-1: none)."""
    sessions = spans["session_id"].dropna().unique()
    left = pd.DataFrame({"_row": np.arange(len(session)), "_s": positions(session, sessions), "_t": event_ts})
    left = left[left["_s"] >= 0].sort_values("_t", kind="stable")
    right = pd.DataFrame({"_s": positions(spans["session_id"], sessions), "_t": span_ts, "_pos": np.arange(len(spans))})
    right = right[right["_s"] >= 0].sort_values("_t", kind="stable")
    merged = pd.merge_asof(left, right, on="_t", by="_s", direction="backward", tolerance=max_gap // pd.Timedelta(microseconds=1), allow_exact_matches=True)
    out = np.full(len(session), -1)
    found = merged["_pos"].notna().to_numpy()
    out[merged["_row"].to_numpy()[found]] = merged["_pos"].to_numpy()[found].astype(int)
    return out
