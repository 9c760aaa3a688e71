"""Normalize landing records into the canonical frames, quarantining what breaks the contract.

Pure functions over DataFrames: `records` is what `landing.read_landing_day` returns.
Each returns the clean frame, the quarantine (one row per rejected record, with a reason),
and the number of duplicate ids dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.columns import large_text, repeats, replaced, rows_kept
from feedback_loop.lib.contract import (
    EVENT_TYPES,
    FEEDBACK_COLUMNS,
    QUARANTINE_COLUMNS,
    TRACE_COLUMNS,
    conform,
    empty_frame,
)


@dataclass(frozen=True)
class Normalized:
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: int  # records dropped as copies of a clean one: of the same day, or of an earlier day
    duplicates_of_other_days: int = 0  # of them, records another day of the window holds
    quarantined_by_other_days: int = 0  # bad records left out: another day of the window quarantined them


def without_held(result: Normalized, held: pd.DataFrame, key: list[str]) -> Normalized:
    """`result` without the clean records whose key another day already holds (`held`: the key
    columns of those days' clean records, at least those sharing a first key column), counted as
    duplicates."""
    if held.empty or result.clean.empty:
        return result
    both = pd.concat([held[key], result.clean[key]], ignore_index=True)
    again = repeats(both)[len(held) :]
    if not again.any():
        return result
    clean = rows_kept(result.clean, ~again).reset_index(drop=True)
    dropped = int(again.sum())
    return Normalized(clean=clean, quarantine=result.quarantine, duplicates=result.duplicates + dropped, duplicates_of_other_days=dropped, quarantined_by_other_days=result.quarantined_by_other_days)


def without_quarantined(result: Normalized, held: pd.DataFrame) -> Normalized:
    """`result` without the quarantine rows another day already holds (`held`: those days'
    quarantine rows, `reason` and `raw`): a bad record a pull window reads again is counted once."""
    if held.empty or result.quarantine.empty:
        return result
    both = pd.concat([held[["reason", "raw"]], result.quarantine[["reason", "raw"]]], ignore_index=True)
    again = repeats(both)[len(held) :]
    if not again.any():
        return result
    quarantine = rows_kept(result.quarantine, ~again).reset_index(drop=True)
    return Normalized(result.clean, quarantine, result.duplicates, result.duplicates_of_other_days, result.quarantined_by_other_days + int(again.sum()))


# The frame schemas check each value. Keys are unique by construction, not checked here: `_finish`
# keeps the first readable row of each key before it validates, and a second hash of every key is
# the slowest check pandera would run.
TRACE_SCHEMA = pandera.DataFrameSchema(
    {
        "trace_id": pandera.Column("string", pandera.Check.str_length(min_value=1), nullable=False),
        "span_id": pandera.Column("string", pandera.Check.str_length(min_value=1), nullable=False),
        "timestamp": pandera.Column("datetime64[us, UTC]", nullable=False),
        "latency_ms": pandera.Column("float64", pandera.Check.ge(0), nullable=True),
        "input_tokens": pandera.Column("Int64", pandera.Check.ge(0), nullable=True),
        "output_tokens": pandera.Column("Int64", pandera.Check.ge(0), nullable=True),
    }
)

FEEDBACK_SCHEMA = pandera.DataFrameSchema(
    {
        "event_id": pandera.Column("string", pandera.Check.str_length(min_value=1), nullable=False),
        "timestamp": pandera.Column("datetime64[us, UTC]", nullable=False),
        "type": pandera.Column("string", pandera.Check.isin(EVENT_TYPES), nullable=False),
        "value_num": pandera.Column("float64", nullable=True),
    }
)


def normalize_traces(records: pd.DataFrame, day: str) -> Normalized:
    """Canonical traces of `day` from landing records; bad rows quarantined with a reason."""
    df = records.reset_index(drop=True)
    reason = _base_reasons(df, id_column="trace_id")
    bad_input = df["_input_type"].notna() & ~df["_input_type"].isin(["VARCHAR", "ARRAY", "NULL"])
    reason = reason.mask(reason.isna() & bad_input, "input is neither text nor a list of messages")
    numbers = {}
    for column, largest in MEASURE_MAX.items():
        numbers[column] = numbers_in(df[column])
        unreadable = df[column].notna() & numbers[column].isna()
        reason = reason.mask(reason.isna() & unreadable, f"{column} is not a number")
        reason = reason.mask(reason.isna() & (numbers[column] < 0), f"{column} is negative")
        reason = reason.mask(reason.isna() & (numbers[column] > largest), f"{column} is larger than {largest:.0e}")
        numbers[column] = numbers[column].where(reason.isna().to_numpy())  # out-of-range values are never cast
    clean = pd.DataFrame(
        {
            "trace_id": df["trace_id"],
            "span_id": df["span_id"].fillna(df["trace_id"]),
            "parent_span_id": df["parent_span_id"],
            "session_id": df["session_id"],
            "user_id": df["user_id"],
            "timestamp": df["_timestamp"],
            "model": df["model"],
            "prompt_version": df["prompt_version"],
            "input": df["input"],
            "prompt": df["_prompt"],
            "output": df["output"],
            "latency_ms": numbers["latency_ms"].astype("float64"),
            "input_tokens": numbers["input_tokens"].round().astype("Int64"),
            "output_tokens": numbers["output_tokens"].round().astype("Int64"),
            "metadata": _merge_metadata(df["metadata"], df["_unknown"]),
            "partition_date": day,
        }
    )
    return _finish(df, clean, reason, "trace", ["trace_id", "span_id"], TRACE_COLUMNS, TRACE_SCHEMA)


def normalize_feedback(records: pd.DataFrame, day: str) -> Normalized:
    """Canonical feedback events of `day` from landing records; bad rows quarantined with a reason."""
    df = records.reset_index(drop=True)
    reason = _base_reasons(df, id_column="event_id")
    event_type = df["type"].str.strip().str.lower()
    reason = reason.mask(reason.isna() & event_type.isna(), "missing type")
    unknown = event_type.notna() & ~event_type.isin(EVENT_TYPES)
    reason = _reason_with_value(reason, unknown, "unknown event type '{}'", df["type"])
    value_num = numbers_in(df["value"])
    rating_bad = (event_type == "rating") & value_num.isna()
    reason = reason.mask(reason.isna() & rating_bad, "rating value is not a number")
    no_link = df["trace_id"].isna() & df["span_id"].isna() & df["session_id"].isna()
    reason = reason.mask(reason.isna() & no_link, "no trace_id, span_id or session_id to link by")
    clean = pd.DataFrame(
        {
            "event_id": df["event_id"],
            "trace_id": df["trace_id"],
            "span_id": df["span_id"],
            "session_id": df["session_id"],
            "user_id": df["user_id"],
            "timestamp": df["_timestamp"],
            "type": event_type,
            "value": df["value"],
            "value_num": value_num.astype("float64"),
            "reason": df["reason"].str.strip().str.lower(),
            # a comment event may carry its text in `value` only (the contract allows both)
            "comment": df["comment"].where(df["comment"].notna() | (event_type != "comment"), df["value"]),
            "metadata": _merge_metadata(df["metadata"], df["_unknown"]),
            "partition_date": day,
        }
    )
    return _finish(df, clean, reason, "feedback", ["event_id"], FEEDBACK_COLUMNS, FEEDBACK_SCHEMA)


NUMBER_MAX_CHARS = 64
# Largest plausible values: far above any real call, far below what the casts and time arithmetic
# downstream overflow on (int64 tokens, latency added to a timestamp).
MEASURE_MAX = {"latency_ms": 1e10, "input_tokens": 1e12, "output_tokens": 1e12}


def numbers_in(values: pd.Series) -> pd.Series:
    """Each value as a number where it is a decimal number (signed, with a fraction or exponent,
    white space around it allowed), else NaN; values longer than NUMBER_MAX_CHARS (edited and
    copied texts) are not parsed."""
    text = large_text(values)
    short = pc.fill_null(pc.less_equal(pc.utf8_length(text), NUMBER_MAX_CHARS), False)
    candidates = pc.utf8_trim_whitespace(text.filter(short))
    number = pc.match_substring_regex(candidates, DECIMAL)
    out = np.full(len(values), np.nan)
    out[short.to_numpy(zero_copy_only=False)] = pc.cast(pc.if_else(number, candidates, pa.scalar(None, pa.large_string())), pa.float64()).to_numpy(zero_copy_only=False)
    return pd.Series(out, index=values.index, dtype="float64")


DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _base_reasons(df: pd.DataFrame, id_column: str) -> pd.Series:
    """Reasons every record kind shares: unreadable, no id, no or bad timestamp."""
    reason = df["_problem"].astype("string")
    missing_id = df[id_column].isna() | (df[id_column].astype("string").str.strip() == "")
    reason = reason.mask(reason.isna() & missing_id, f"missing {id_column}")
    reason = reason.mask(reason.isna() & df["timestamp"].isna(), "missing timestamp")
    return _reason_with_value(reason, df["_timestamp"].isna(), "timestamp is not ISO-8601: {}", df["timestamp"])


def _reason_with_value(reason: pd.Series, where: pd.Series, template: str, values: pd.Series) -> pd.Series:
    """`reason` with `template` filled with the row's value where `where` holds and no reason is set
    yet; the messages are built for those rows only."""
    rows = np.flatnonzero(reason.isna().to_numpy() & where.fillna(False).to_numpy(dtype=bool))
    if not len(rows):
        return reason
    prefix, suffix = template.split("{}")
    return replaced(reason, rows, prefix + values.iloc[rows].fillna("").astype("string") + suffix)


def _merge_metadata(metadata: pd.Series, unknown: pd.Series) -> pd.Series:
    """The record's `metadata` object with its fields outside the contract merged in."""
    out = metadata.astype("string")
    rows = unknown.index[unknown.notna()]
    merged = []
    for base, extra in zip(metadata[rows].tolist(), unknown[rows].tolist(), strict=True):
        fields = {k: v for k, v in json.loads(extra).items() if v is not None}
        merged.append(json.dumps({**_as_object(base), **fields}, ensure_ascii=False, sort_keys=True))
    if len(rows):
        out[rows] = merged  # one assignment: each one copies the Arrow column
    return out


def _as_object(text: object) -> dict:
    if text is None or text is pd.NA or (isinstance(text, float) and np.isnan(text)):
        return {}
    value = json.loads(str(text))
    return value if isinstance(value, dict) else {"metadata": value}


def _finish(
    records: pd.DataFrame,
    clean: pd.DataFrame,
    reason: pd.Series,
    kind: str,
    key: list[str],
    columns: dict[str, str],
    schema: pandera.DataFrameSchema,
) -> Normalized:
    day = clean["partition_date"].iloc[0] if len(clean) else ""
    readable = reason.isna().to_numpy()
    # The schema first, on the readable rows of the columns it checks: a duplicate counts as dropped
    # only when the copy kept is clean.
    checked = {name: columns[name] for name in schema.columns}
    failures = _schema_failures(conform(clean[list(checked)], checked), schema)
    failures = failures[readable[failures.index.to_numpy(dtype=np.int64)]]  # an unreadable row keeps its own reason
    if len(failures):
        reason = reason.copy()
        reason[failures.index] = failures
    keep = reason.isna().to_numpy(copy=True)
    rows = np.flatnonzero(keep)
    repeated = repeats(clean[key].iloc[rows])  # the first clean row of an id is kept
    duplicates = int(repeated.sum())
    keep[rows[repeated]] = False
    good = conform(clean if keep.all() else rows_kept(clean, keep), columns)  # one filter of every column
    quarantine = quarantine_rows(records, reason, kind, clean[key[0]], day)
    return Normalized(clean=good.reset_index(drop=True), quarantine=quarantine, duplicates=duplicates)


def _schema_failures(good: pd.DataFrame, schema: pandera.DataFrameSchema) -> pd.Series:
    """Row position -> pandera failure message, for rows that break the frame schema."""
    try:
        schema.validate(good, lazy=True)
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases.dropna(subset=["index"])
        messages = "schema: " + cases["column"].astype(str) + " fails " + cases["check"].astype(str)
        return messages.groupby(cases["index"].astype(int)).first().astype("string")
    return pd.Series(dtype="string")


def quarantine_rows(records: pd.DataFrame, reason: pd.Series, kind: str, record_id: pd.Series, day: str) -> pd.DataFrame:
    """Quarantine frame for the records that have a reason."""
    bad = np.flatnonzero(reason.notna().to_numpy())
    if not len(bad):
        return empty_frame(QUARANTINE_COLUMNS)
    rows = records.iloc[bad]  # positions, not a mask: a mask filters every column of every record (~5x slower)
    raw = rows["_raw"].astype("string")
    missing_raw = raw.isna()
    if missing_raw.any():
        fields = [c for c in rows.columns if not c.startswith("_")]
        raw[missing_raw] = rows.loc[missing_raw, fields].astype("string").to_json(orient="records", lines=True).splitlines()
    out = pd.DataFrame(
        {
            "kind": kind,
            "source": rows["_source"],
            "line": rows["_line"],
            "record_id": record_id.iloc[bad],
            "reason": reason.iloc[bad],
            "raw": raw,
            "partition_date": day,
        }
    )
    return conform(out, QUARANTINE_COLUMNS).reset_index(drop=True)
