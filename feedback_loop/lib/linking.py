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

from feedback_loop.lib.contract import FEEDBACK_COLUMNS, conform

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
    spans = spans.sort_values("timestamp", kind="stable")
    trace_id = pd.Series(pd.NA, index=events.index, dtype="string")
    span_id = pd.Series(pd.NA, index=events.index, dtype="string")
    method = pd.Series(pd.NA, index=events.index, dtype="string")
    reason = pd.Series(pd.NA, index=events.index, dtype="string")

    by_span = spans.drop_duplicates("span_id", keep="last").set_index("span_id")
    has_span = events["span_id"].notna()
    span_hit = has_span & events["span_id"].isin(by_span.index)
    trace_id[span_hit] = by_span["trace_id"].reindex(events.loc[span_hit, "span_id"]).to_numpy()
    span_id[span_hit] = events.loc[span_hit, "span_id"]
    method[span_hit] = "by_span"

    last_span = spans.drop_duplicates("trace_id", keep="last").set_index("trace_id")
    has_trace = events["trace_id"].notna() & method.isna()
    trace_hit = has_trace & events["trace_id"].isin(last_span.index)
    trace_id[trace_hit] = events.loc[trace_hit, "trace_id"]
    span_id[trace_hit] = last_span["span_id"].reindex(events.loc[trace_hit, "trace_id"]).to_numpy()
    method[trace_hit] = "by_trace"

    reason[has_trace & ~trace_hit] = "trace_id not found among traces of the linking window"
    reason[has_span & ~span_hit & events["trace_id"].isna()] = "span_id not found among traces of the linking window"

    # A regenerate attached to the response that replaced the one it judges.
    start = spans.drop_duplicates("span_id", keep="last").set_index("span_id")["timestamp"]
    linked_start = start.reindex(span_id.fillna("")).to_numpy()
    regen_forward = (events["type"] == "regenerate").to_numpy() & method.notna().to_numpy() & (linked_start > events["timestamp"].to_numpy())
    by_time = (method.isna() & reason.isna() & events["session_id"].notna()).to_numpy() | regen_forward
    if by_time.any():
        lookup = events.loc[by_time, ["session_id", "timestamp"]].copy()
        span_session = spans.drop_duplicates("span_id", keep="last").set_index("span_id")["session_id"]
        forward = regen_forward[by_time]
        lookup.loc[forward, "session_id"] = span_session.reindex(span_id[by_time][forward]).to_numpy()
        found = _latest_at_or_before(lookup, spans, session_max_gap)
        hit = found["trace_id"].notna().to_numpy()
        regen = regen_forward[by_time]
        idx = events.index[by_time]
        trace_id[idx[hit]] = found.loc[hit, "trace_id"].to_numpy()
        span_id[idx[hit]] = found.loc[hit, "span_id"].to_numpy()
        method[idx[hit]] = np.where(regen[hit], "by_trace_regenerate_previous", "by_session_time")
        missed = idx[~hit]
        method[missed] = pd.NA
        reason[missed] = np.where(
            regen[~hit],
            "regenerate with no earlier trace in the session",
            np.where(
                events.loc[missed, "session_id"].isin(spans["session_id"]),
                "no trace of the session at or before the event within the gap",
                "session_id not found among traces of the linking window",
            ),
        )
    linked_mask = method.notna()
    trace_info = spans.drop_duplicates("span_id", keep="last").set_index("span_id")
    linked = events[linked_mask].copy()
    linked["trace_id"] = trace_id[linked_mask]
    linked["span_id"] = span_id[linked_mask]
    linked["trace_date"] = trace_info["partition_date"].reindex(linked["span_id"]).to_numpy()
    linked["trace_timestamp"] = trace_info["timestamp"].reindex(linked["span_id"]).to_numpy()
    linked["link_method"] = method[linked_mask]
    orphans = events[~linked_mask].copy()
    orphans["orphan_reason"] = reason[~linked_mask].fillna("no trace_id, span_id or session_id to link by")
    return Linked(linked=conform(linked, LINK_COLUMNS).reset_index(drop=True), orphans=conform(orphans, ORPHAN_COLUMNS).reset_index(drop=True))


def _latest_at_or_before(events: pd.DataFrame, spans: pd.DataFrame, max_gap: pd.Timedelta) -> pd.DataFrame:
    """For each event, the latest span of its session at or before it, at most `max_gap` earlier."""
    left = pd.DataFrame(
        {"_row": np.arange(len(events)), "session_id": events["session_id"].array, "timestamp": events["timestamp"].array}
    )
    left = left.dropna(subset=["session_id"]).sort_values("timestamp", kind="stable")
    right = spans.dropna(subset=["session_id"])[["session_id", "timestamp", "trace_id", "span_id"]]
    merged = pd.merge_asof(
        left, right, on="timestamp", by="session_id", direction="backward", tolerance=max_gap, allow_exact_matches=True
    )
    out = pd.DataFrame({"trace_id": pd.Series(pd.NA, index=range(len(events)), dtype="string")})
    out["span_id"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out.loc[merged["_row"].to_numpy(), "trace_id"] = merged["trace_id"].to_numpy()
    out.loc[merged["_row"].to_numpy(), "span_id"] = merged["span_id"].to_numpy()
    return out
