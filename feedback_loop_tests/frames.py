"""Hand-built canonical frames for unit tests."""

import pandas as pd

from feedback_loop.lib.contract import FEEDBACK_COLUMNS, TRACE_COLUMNS, conform

T0 = pd.Timestamp("2026-11-20T10:00:00Z")


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def traces(*rows: dict) -> pd.DataFrame:
    """Trace rows; `t` is seconds after T0. Defaults: one session, prompt 'q', output 'answer'."""
    records = []
    for row in rows:
        row = dict(row)
        ts = at(row.pop("t", 0))
        records.append(
            {
                "span_id": row.get("trace_id"),
                "session_id": "s1",
                "user_id": "u1",
                "timestamp": ts,
                "model": "m",
                "prompt_version": "v1",
                "prompt": "q",
                "output": "answer",
                "latency_ms": 1000.0,
                "partition_date": ts.strftime("%Y-%m-%d"),
                **row,
            }
        )
    return conform(pd.DataFrame(records), TRACE_COLUMNS)


def events(*rows: dict) -> pd.DataFrame:
    """Feedback rows; `t` is seconds after T0; event ids default to e0, e1, ..."""
    records = []
    for i, row in enumerate(rows):
        row = dict(row)
        ts = at(row.pop("t", 0))
        value = row.pop("value", None)
        records.append(
            {
                "event_id": f"e{i}",
                "user_id": "u1",
                "timestamp": ts,
                "value": None if value is None else str(value),
                "value_num": pd.to_numeric(value, errors="coerce") if value is not None else None,
                "partition_date": ts.strftime("%Y-%m-%d"),
                **row,
            }
        )
    return conform(pd.DataFrame(records), FEEDBACK_COLUMNS)
