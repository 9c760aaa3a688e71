"""The canonical input contract: column names, dtypes, event types and reason tags.

Every landing source is normalized into these frames; every later step reads them.
Timestamps are timezone-aware UTC; free-form objects (`input`, `metadata`) are JSON text
so that they survive Parquet unchanged whatever their shape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EVENT_TYPES: tuple[str, ...] = (
    "thumbs_up",
    "thumbs_down",
    "rating",
    "comment",
    "correction",
    "edit",
    "copy",
    "regenerate",
    "abandon",
)

REASON_TAGS: tuple[str, ...] = (
    "not_factual",
    "refusal",
    "formatting",
    "too_long",
    "too_short",
    "incomplete",
    "harmful",
    "other",
)

TIMESTAMP = "datetime64[us, UTC]"
STR = "string"

TRACE_COLUMNS: dict[str, str] = {
    "trace_id": STR,
    "span_id": STR,
    "parent_span_id": STR,
    "session_id": STR,
    "user_id": STR,
    "timestamp": TIMESTAMP,
    "model": STR,
    "prompt_version": STR,
    "input": STR,  # JSON list of {role, content}
    "prompt": STR,  # the last user message: the question this response answers
    "output": STR,
    "latency_ms": "float64",
    "input_tokens": "Int64",
    "output_tokens": "Int64",
    "metadata": STR,  # JSON object, unknown fields included
    "partition_date": STR,
}

FEEDBACK_COLUMNS: dict[str, str] = {
    "event_id": STR,
    "trace_id": STR,
    "span_id": STR,
    "session_id": STR,
    "user_id": STR,
    "timestamp": TIMESTAMP,
    "type": STR,
    "value": STR,  # text of the value (rating number, edited / corrected / copied text)
    "value_num": "float64",  # the value when it is a number (ratings)
    "reason": STR,
    "comment": STR,
    "metadata": STR,
    "partition_date": STR,
}

# The columns that identify a trace in every per-trace table downstream of ingest.
TRACE_IDENTITY: dict[str, str] = {
    "trace_id": STR,
    "span_id": STR,
    "session_id": STR,
    "user_id": STR,
    "timestamp": TIMESTAMP,
    "model": STR,
    "prompt_version": STR,
}

QUARANTINE_COLUMNS: dict[str, str] = {
    "kind": STR,  # trace | feedback
    "source": STR,  # file the row came from
    "line": "Int64",  # 1-based line in that file, when known
    "record_id": STR,  # trace_id / event_id when it could be read
    "reason": STR,
    "raw": STR,  # the offending record, truncated
    "partition_date": STR,
}


def last_per_trace(traces: pd.DataFrame) -> pd.DataFrame:
    """One row per trace_id, its last span (the response); the frame itself when ids are unique."""
    last = ~traces["trace_id"].duplicated(keep="last").to_numpy()
    return traces if last.all() else traces[last]


def utc_array(values: pd.Series) -> np.ndarray:
    """Tz-aware timestamps as naive UTC datetime64[us] (NaT kept), without a Python object per value."""
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty frame with the given columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Return `df` with exactly `columns` (missing ones added empty), cast to their dtypes.

    Columns beyond the contract are kept after the contract's columns.
    """
    out = df.copy(deep=False) if len(df.columns) else empty_frame(columns)  # copy-on-write: `df` is never changed
    for name, dtype in columns.items():
        if name not in out.columns:
            out[name] = pd.Series(pd.NA if dtype != TIMESTAMP else pd.NaT, index=out.index, dtype=dtype)
        elif str(out[name].dtype) != dtype:
            out[name] = out[name].astype(dtype)
    extra = [c for c in out.columns if c not in columns]
    return out[list(columns) + extra]
