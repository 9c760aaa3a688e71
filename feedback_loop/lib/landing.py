"""Read one UTC day of records from a landing folder of JSONL and Parquet files.

JSONL files are read in blocks of whole lines (a line ends at LF only: a bare CR inside a record
is part of it) and parsed by DuckDB, so a malformed line, a non-UTF-8 byte or a value whose type
changes between rows never aborts the read; Parquet files are read by DuckDB one at a time, and
one that cannot be read becomes a single unreadable record. Each record comes back as text
columns plus what is needed to quarantine it: `_source`, `_line`, `_raw`, `_problem` (why it
cannot be used at all) and `_unknown` (a JSON object of the fields outside the contract, later
merged into `metadata`). File names and column names are quoted, values bound.

A record belongs to the UTC day of its `timestamp` when that is an ISO-8601 timestamp no earlier
than the first partition and no later than the day after its file was written. Any other record
(unreadable, no timestamp, an impossible one) is attributed to its file's day (the ISO date in
the file name, else the day the file was written; never before the first partition), so that it
is quarantined exactly once, in a partition that runs.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from feedback_loop.lib.columns import ONE_BATCH, replaced
from feedback_loop.lib.lines import line_blocks
from feedback_loop.lib.sql import identifier, literal

Kind = Literal["traces", "feedback"]
SCALAR_FIELDS: dict[Kind, tuple[str, ...]] = {
    "traces": (
        "trace_id",
        "span_id",
        "parent_span_id",
        "session_id",
        "user_id",
        "timestamp",
        "model",
        "prompt_version",
        "output",
        "latency_ms",
        "input_tokens",
        "output_tokens",
    ),
    "feedback": (
        "event_id",
        "trace_id",
        "span_id",
        "session_id",
        "user_id",
        "timestamp",
        "type",
        "value",
        "reason",
        "comment",
    ),
}
JSON_FIELDS: dict[Kind, tuple[str, ...]] = {"traces": ("input", "metadata"), "feedback": ("metadata",)}
RAW_CHARS = 2000
MAX_NESTING = 100  # deeper JSON is quarantined: Python's parser (and most readers downstream) recurse per level
FIRST_DAY = "0001-01-01"  # no first partition given: every day counts
# ISO-8601 date, optional time with fraction, optional offset; no offset means UTC.
ISO_TIMESTAMP = r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)?\s*$"
ROWS_PER_SCAN_BATCH = 65_536  # a block is handed to DuckDB in batches it can scan on several threads
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class LandingFile:
    path: str
    home: str  # the day its records without a usable timestamp are attributed to
    latest: str  # the last day a record of this file can be on: the day after it was written


def list_landing_files(root: str, kind: Kind, first_day: str = FIRST_DAY) -> list[LandingFile]:
    """The JSONL and Parquet files under `<root>/<kind>/`, sorted by path."""
    folder = UPath(root) / kind
    if not folder.exists():
        return []
    files = []
    for path in sorted(folder.rglob("*"), key=str):
        if not path.is_file() or not (path.name.endswith(".jsonl") or path.name.endswith(".parquet")):
            continue
        written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()
        named = _date_in(path.name) or written
        home = max(min(named, written).isoformat(), first_day)
        latest = (max(named, written) + dt.timedelta(days=1)).isoformat()
        files.append(LandingFile(path=path.as_posix() if path.protocol in ("", "file") else str(path), home=home, latest=latest))
    return files


def _date_in(name: str) -> dt.date | None:
    for match in _DATE.finditer(name):
        try:
            return dt.date.fromisoformat(match.group(1))
        except ValueError:
            continue
    return None


def landing_folder_exists(root: str, kind: Kind) -> bool:
    return (UPath(root) / kind).is_dir()


def read_landing_day(root: str, kind: Kind, day: str, first_day: str = FIRST_DAY) -> pd.DataFrame:
    """Every record of `kind` in the landing folder that belongs to UTC day `day` (YYYY-MM-DD);
    `first_day` is the first partition (records before it are quarantined)."""
    files = list_landing_files(root, kind, first_day)
    frames = []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET arrow_large_buffer_size = true")  # 64-bit offsets: one batch may hold more than 2 GB of text
        _register_filesystem(con, root)
        for file in files:
            read = _read_jsonl if file.path.endswith(".jsonl") else _read_parquet
            frames.extend(f for f in read(con, kind, file, day, first_day) if len(f))
    return finish_records(kind, frames)


def finish_records(kind: Kind, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of records as one, in source order, with too-deep JSON flagged and the unknown fields
    picked out."""
    if not frames:
        return _empty_records(kind)
    # Columns stay in one chunk per file: normalizing takes the rows it keeps once, which joins them.
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    out = _nested_too_deep(out, kind)
    out["_unknown"] = _unknown_fields(out, kind)
    return out if _in_file_order(out) else _file_order(out)


def _file_order(records: pd.DataFrame) -> pd.DataFrame:
    return records.sort_values(["_source", "_line"], kind="stable", ignore_index=True)


def _in_file_order(records: pd.DataFrame) -> bool:
    """Whether the records are already sorted by (source, line): then sorting (a take of every text column) is skipped."""
    source, _ = pd.factorize(records["_source"], sort=True)
    line = records["_line"].to_numpy(dtype=np.int64, na_value=0)
    same = source[1:] == source[:-1]
    return bool((source[1:] >= source[:-1]).all() and (line[1:][same] > line[:-1][same]).all())


def _register_filesystem(con: duckdb.DuckDBPyConnection, root: str) -> None:
    path = UPath(root)
    if path.protocol not in ("", "file"):
        con.register_filesystem(path.fs)


def _input_exprs(input_json: str) -> dict[str, str]:
    """SQL for the input's JSON type and the prompt text: the input itself, or the last user message."""
    roles = f"json_extract_string({input_json}, '$[*].role')"
    last_user = f"len({roles}) - list_position(list_reverse({roles}), 'user')"
    return {
        "_input_type": f"json_type({input_json})",
        "_prompt": f"""CASE json_type({input_json})
            WHEN 'VARCHAR' THEN json_extract_string({input_json}, '$')
            WHEN 'ARRAY' THEN coalesce(
                json_extract_string({input_json}, '$[' || ({last_user})::VARCHAR || '].content'),
                json_extract_string({input_json}, '$[#-1].content'))
            END""",
    }


def _message_list_exprs(messages: str) -> dict[str, str]:
    """`_input_exprs` for a Parquet column typed as a list of {role, content} text structs (no JSON to parse)."""
    return {
        "_input_type": f"CASE WHEN {messages} IS NOT NULL THEN 'ARRAY' END",
        "_prompt": f"coalesce(list_filter({messages}, lambda m: m.role = 'user')[-1].content, {messages}[-1].content)",
    }


def _select_list(expr: dict[str, str]) -> str:
    return ",\n".join(f"{sql} AS {name}" for name, sql in expr.items())


def _dated(records: str, timestamp: str, problem: str) -> str:
    """SQL over `records` (which has `timestamp` as text and an earlier `problem`) adding `_timestamp`,
    `_problem_found` and `_day`; parameters $first_day, $latest, $home (ISO dates)."""
    return f"""
        WITH stamped AS (
            SELECT *, CASE WHEN regexp_full_match({timestamp}, '{ISO_TIMESTAMP}') THEN TRY_CAST({timestamp} AS TIMESTAMPTZ) END AS _ts
            FROM {records}
        ), days AS (
            SELECT *, _ts::DATE AS _ts_day, {problem} IS NULL AND _ts::DATE BETWEEN $first_day::DATE AND $latest::DATE AS _in_range FROM stamped
        )
        SELECT *,
               CASE WHEN _in_range THEN _ts END AS _timestamp,
               coalesce({problem},
                        CASE WHEN _ts_day < $first_day::DATE THEN 'timestamp ' || {timestamp} || ' is before the first partition, ' || $first_day
                             WHEN _ts_day > $latest::DATE THEN 'timestamp ' || {timestamp} || ' is later than its file was written' END) AS _problem_found,
               CASE WHEN _in_range THEN _ts_day ELSE $home::DATE END AS _day
        FROM days
    """


def _lines_query(kind: Kind, native: bool = False) -> str:
    """SQL over the registered table `block` (`_line`, `b`: one JSON record per row as bytes) giving
    the records of the days $accept_from..$day; with `native`, `block` also has `_native_raw` and
    `_native_problem` (what a source read and why it could not map it), which take precedence."""
    known = list(SCALAR_FIELDS[kind]) + list(JSON_FIELDS[kind])
    fields = {name: f"json_extract_string(obj, {literal('$.' + json.dumps(name))})" for name in SCALAR_FIELDS[kind]}
    fields |= {name: f"json_extract(obj, {literal('$.' + json.dumps(name))})::VARCHAR" for name in JSON_FIELDS[kind]}
    if kind == "traces":
        fields |= _input_exprs("json_extract(obj, '$.input')")
    known_sql = ", ".join(literal(k) for k in known)
    native_problem = "_native_problem" if native else "NULL"
    raw = f"left(_native_raw, {RAW_CHARS})" if native else f"coalesce(left(line, {RAW_CHARS}), left(b::VARCHAR, {RAW_CHARS}))"
    # Each stage only hands valid JSON on: DuckDB evaluates CASE branches eagerly.
    records = f"""(
        WITH decoded AS (
            SELECT *, rtrim(try(decode(b)), chr(13)) AS line FROM block
        ), valid AS (
            SELECT *, CASE WHEN json_valid(line) THEN line END AS json_line FROM decoded
            WHERE line IS NULL OR trim(line) <> ''
        ), objects AS (
            SELECT *, CASE WHEN json_type(json_line) = 'OBJECT' THEN json_line END AS obj FROM valid
        )
        SELECT *, json_extract_string(obj, '$.timestamp') AS _ts_text,
               CASE WHEN {native_problem} IS NOT NULL THEN {native_problem}
                    WHEN line IS NULL THEN 'not valid UTF-8'
                    WHEN json_line IS NULL THEN 'malformed JSON'
                    WHEN obj IS NULL THEN 'record is not a JSON object' END AS _unreadable
        FROM objects
    )"""
    return f"""
        SELECT $source AS _source, _line, {raw} AS _raw,
               _problem_found AS _problem,
               CASE WHEN len(list_filter(json_keys(obj), lambda k: NOT list_contains([{known_sql}], k))) > 0 THEN obj END AS _unknown,
               {_select_list(fields)},
               _timestamp, coalesce({_brackets("obj")} > {MAX_NESTING}, false) AS _maybe_deep
        FROM ({_dated(records, "_ts_text", "_unreadable")})
        WHERE _day BETWEEN $accept_from::DATE AND $day::DATE
    """


def _read_jsonl(con: duckdb.DuckDBPyConnection, kind: Kind, file: LandingFile, day: str, first_day: str) -> list[pd.DataFrame]:
    """The file's records of `day`, a block of whole lines at a time."""
    query = _lines_query(kind)
    params = {"source": file.path, "first_day": first_day, "latest": file.latest, "home": file.home, "day": day, "accept_from": day}
    frames = []
    first_line = 1
    with UPath(file.path).open("rb") as fh:
        for data in line_blocks(fh):
            block = _line_table(data, first_line)
            first_line += len(block)
            con.register("block", block)
            frames.append(_frame(con, query, params))
            con.unregister("block")
    return frames


@dataclass(frozen=True)
class PulledRecord:
    """One record a source pulled: its fields in the input contract, or why it could not be mapped."""

    source: str  # where it came from, as the quarantine names it: "phoenix project 'chat' spans"
    position: int  # its place in that source's listing, 1-based (the quarantine's `line`)
    raw: str  # the record as the source gave it
    fields: dict | None = None  # contract fields; None when it could not be mapped
    problem: str | None = None  # why it could not be mapped


def read_pulled_records(kind: Kind, pulled: list[PulledRecord], day: str, accept_from: str, first_day: str = FIRST_DAY) -> pd.DataFrame:
    """The records a source pulled, in the shape `read_landing_day` returns: those timestamped on
    the days `accept_from`..`day` (a record pulled again in the window's overlap is dropped later as
    a duplicate of the day that holds it), and every one that cannot be used, attributed to `day`."""
    query = _lines_query(kind, native=True)
    frames = []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for source in dict.fromkeys(r.source for r in pulled):
            rows = [r for r in pulled if r.source == source]
            block = pa.table(
                {
                    "_line": pa.array([r.position for r in rows], pa.int64()),
                    "b": pa.array([json.dumps(r.fields, ensure_ascii=False, default=str).encode() if r.fields is not None else b"{}" for r in rows], pa.large_binary()),
                    "_native_raw": pa.array([r.raw for r in rows], pa.large_string()),
                    "_native_problem": pa.array([r.problem if r.problem or r.fields is not None else "record could not be mapped" for r in rows], pa.large_string()),
                }
            )
            con.register("block", block)
            params = {"source": source, "first_day": first_day, "latest": "9999-12-31", "home": day, "day": day, "accept_from": accept_from}
            frames.append(_frame(con, query, params))
            con.unregister("block")
    return finish_records(kind, [f for f in frames if len(f)])


def _line_table(data: bytes, first_line: int) -> pa.Table:
    """The block's lines as bytes without their line feed, numbered from `first_line`, in batches."""
    if not data.endswith(b"\n"):
        data += b"\n"
    offsets = np.concatenate([[0], np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")) + 1]).astype(np.int64)
    with_feeds = pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    numbers = pa.array(np.arange(first_line, first_line + len(with_feeds), dtype=np.int64))
    table = pa.table({"_line": numbers, "b": pc.binary_slice(with_feeds, 0, -1)})
    return pa.Table.from_batches(table.to_batches(ROWS_PER_SCAN_BATCH))


def _read_parquet(con: duckdb.DuckDBPyConnection, kind: Kind, file: LandingFile, day: str, first_day: str) -> list[pd.DataFrame]:
    """The file's records of `day`; a file DuckDB cannot read is one unreadable record of its home day."""
    try:
        return [_parquet_records(con, kind, file, day, first_day)]
    except duckdb.Error as err:
        if file.home != day:
            return []
        reason = "unreadable Parquet file: " + str(err).splitlines()[0][:300]
        row = _empty_records(kind).reindex([0])
        row["_source"], row["_line"], row["_problem"] = file.path, 1, reason
        row["_raw"] = f"{UPath(file.path).name} ({UPath(file.path).stat().st_size} bytes)"
        return [row]


def _parquet_records(con: duckdb.DuckDBPyConnection, kind: Kind, file: LandingFile, day: str, first_day: str) -> pd.DataFrame:
    source = literal(file.path)
    schema = con.sql(f"DESCRIBE SELECT * FROM read_parquet({source})").fetchall()
    types = {row[0]: row[1] for row in schema}
    exprs: dict[str, str] = {}
    for name in SCALAR_FIELDS[kind]:
        column = identifier(name)
        if name not in types:
            exprs[name] = "NULL::VARCHAR"
        elif types[name].startswith(("STRUCT", "MAP")) or types[name].endswith("[]"):
            exprs[name] = f"to_json({column})::VARCHAR"
        elif name == "timestamp" and types[name].startswith("TIMESTAMP"):
            exprs[name] = f"strftime({column}::TIMESTAMPTZ, '%Y-%m-%dT%H:%M:%S.%f+00:00')"
        else:
            exprs[name] = f"{column}::VARCHAR"
    for name in JSON_FIELDS[kind]:
        column = identifier(name)
        if name not in types:
            exprs[name] = "NULL::VARCHAR"
        elif types[name] == "VARCHAR" and name == "metadata":  # JSON text, or text that is taken as a JSON string
            exprs[name] = f"CASE WHEN json_valid({column}) THEN {column} ELSE to_json({column})::VARCHAR END"
        else:
            exprs[name] = f"to_json({column})::VARCHAR"
    if kind == "traces":
        typed_messages = re.fullmatch(r'STRUCT\((?=.*"?role"? VARCHAR)(?=.*"?content"? VARCHAR).*\)\[\]', types.get("input", ""))
        if typed_messages:
            exprs |= _message_list_exprs(identifier("input"))
        elif "input" in types:
            exprs |= _input_exprs(exprs["input"] + "::JSON")
        else:
            exprs |= {"_input_type": "NULL::VARCHAR", "_prompt": "NULL::VARCHAR"}
    unknown = [c for c in types if c not in SCALAR_FIELDS[kind] and c not in JSON_FIELDS[kind]]
    any_unknown = " OR ".join(f"{identifier(c)} IS NOT NULL" for c in unknown)
    pairs = ", ".join(f"{identifier(c)} := {identifier(c)}" for c in unknown)
    unknown_sql = f"CASE WHEN {any_unknown} THEN to_json(struct_pack({pairs}))::VARCHAR END" if unknown else "NULL::VARCHAR"
    # Nesting: a JSON text column may nest any depth, a typed column as deep as its type.
    nested = [c for c in types if c in JSON_FIELDS[kind] or c in unknown]
    json_text = [f"{_brackets(identifier(c))} > {MAX_NESTING}" for c in nested if types[c] == "VARCHAR" and c in JSON_FIELDS[kind]]
    deep_typed = [f"{identifier(c)} IS NOT NULL" for c in nested if types[c] != "VARCHAR" and _type_depth(types[c]) > MAX_NESTING]
    maybe_deep = " OR ".join([*json_text, *deep_typed]) or "false"
    records = f"""(SELECT file_row_number + 1 AS _line, {unknown_sql} AS _unknown_fields, {_select_list(exprs)}, NULL::VARCHAR AS _unreadable,
                          coalesce({maybe_deep}, false) AS _maybe_deep
                   FROM read_parquet({source}, file_row_number=true))"""
    query = f"""
        SELECT $source AS _source, _line, NULL::VARCHAR AS _raw, _problem_found AS _problem, _unknown_fields AS _unknown,
               {", ".join(exprs)}, _timestamp, _maybe_deep
        FROM ({_dated(records, identifier("timestamp"), "_unreadable")})
        WHERE _day = $day::DATE
    """
    return _frame(con, query, {"source": file.path, "first_day": first_day, "latest": file.latest, "home": file.home, "day": day})


def _brackets(text_sql: str) -> str:
    """SQL: how many `{` and `[` the text holds (an upper bound of its nesting depth)."""
    return f"(length({text_sql}) - length(replace(replace({text_sql}, '{{', ''), '[', '')))"


def _type_depth(type_name: str) -> int:
    """How deeply a DuckDB type nests (STRUCT, MAP, lists)."""
    return type_name.count("(") + type_name.count("[]")


def _nested_too_deep(records: pd.DataFrame, kind: Kind) -> pd.DataFrame:
    """`records` with a problem set where a JSON field or the unknown fields nest deeper than
    MAX_NESTING; only the rows the read flagged (`_maybe_deep`: more brackets than that) are parsed."""
    candidates = np.flatnonzero(records.pop("_maybe_deep").to_numpy(dtype=bool, na_value=False))
    deep = np.zeros(len(records), dtype=bool)
    for row in candidates:
        deep[row] = any(json_nesting(text) > MAX_NESTING for column in [*JSON_FIELDS[kind], "_unknown"] if isinstance(text := records[column].iloc[row], str))
    rows = deep & records["_problem"].isna().to_numpy()
    if rows.any():
        records = records.copy()
        records.loc[rows, "_problem"] = f"JSON nested deeper than {MAX_NESTING} levels"
    return records


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_nesting(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    skeleton = np.frombuffer(_JSON_STRING.sub("", text).encode(), dtype=np.uint8)
    step = (skeleton == ord("{")).astype(np.int64) + (skeleton == ord("[")) - (skeleton == ord("}")) - (skeleton == ord("]"))
    return int(np.cumsum(step).max(initial=0))


def _unknown_fields(records: pd.DataFrame, kind: Kind) -> pd.Series:
    """JSON of the fields outside the contract, for the few usable rows that have any."""
    known = set(SCALAR_FIELDS[kind]) | set(JSON_FIELDS[kind])
    rows = np.flatnonzero((records["_unknown"].notna() & records["_problem"].isna()).to_numpy(dtype=bool))
    fields = [json.dumps({k: v for k, v in json.loads(raw).items() if k not in known}, ensure_ascii=False) for raw in records["_unknown"].iloc[rows]]
    # Set at once: setting an Arrow-backed value one at a time copies the column each time.
    return replaced(pd.Series(pd.NA, index=records.index, dtype="string"), rows, fields)


def _empty_records(kind: Kind) -> pd.DataFrame:
    extra = ["_input_type", "_prompt"] if kind == "traces" else []
    cols = ["_source", "_line", "_raw", "_problem", "_unknown", *SCALAR_FIELDS[kind], *JSON_FIELDS[kind], *extra, "_timestamp"]
    df = pd.DataFrame({c: pd.Series(dtype="string") for c in cols})
    df["_line"] = df["_line"].astype("Int64")
    df["_maybe_deep"] = pd.Series(dtype="bool")
    df["_timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def _frame(con: duckdb.DuckDBPyConnection, query: str, params: dict) -> pd.DataFrame:
    """A query result as pandas with Arrow-backed strings (no Python object per value), each column
    in one chunk: DuckDB's batches would otherwise be concatenated later, a copy of every column."""
    return con.sql(query, params=params).to_arrow_table(batch_size=ONE_BATCH).to_pandas()
