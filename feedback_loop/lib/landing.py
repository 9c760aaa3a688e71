"""Read one UTC day of records from a landing folder of JSONL and Parquet files.

DuckDB does the scanning: JSONL files are read as raw lines (so a malformed line, a non-UTF-8
byte or a value whose type changes between rows never aborts the read), Parquet files by name
union. Each record comes back as text columns plus what is needed to quarantine it:
`_source`, `_line`, `_raw`, `_problem` (why it cannot be read at all) and `_unknown`
(a JSON object of the fields outside the contract, later merged into `metadata`).

A record is attributed to a day by its `timestamp` in UTC. A record whose timestamp cannot be
read is attributed to the first ISO date found in the line, else in the file name, else to the
file's modification day, so that it is quarantined exactly once.
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
from upath import UPath

from feedback_loop.lib.columns import ONE_BATCH

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
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class LandingFile:
    path: str
    date_hint: str  # the day unreadable records of this file are attributed to


def list_landing_files(root: str, kind: Kind) -> list[LandingFile]:
    """The JSONL and Parquet files under `<root>/<kind>/`, sorted by path."""
    folder = UPath(root) / kind
    if not folder.exists():
        return []
    files = []
    for path in sorted(folder.rglob("*"), key=str):
        if not path.is_file() or not (path.name.endswith(".jsonl") or path.name.endswith(".parquet")):
            continue
        match = _DATE.search(path.name)
        if match:
            hint = match.group(1)
        else:
            mtime = path.stat().st_mtime
            hint = dt.datetime.fromtimestamp(mtime, dt.UTC).date().isoformat()
        files.append(LandingFile(path=path.as_posix() if path.protocol in ("", "file") else str(path), date_hint=hint))
    return files


def read_landing_day(root: str, kind: Kind, day: str) -> pd.DataFrame:
    """Every record of `kind` in the landing folder that belongs to UTC day `day` (YYYY-MM-DD)."""
    files = list_landing_files(root, kind)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET arrow_large_buffer_size = true")  # 64-bit offsets: one batch may hold more than 2 GB of text
    _register_filesystem(con, root)
    hints = pd.DataFrame({"_source": [f.path for f in files], "_hint": [f.date_hint for f in files]})
    con.register("file_hints", hints)
    frames = []
    jsonl = [f.path for f in files if f.path.endswith(".jsonl")]
    parquet = [f.path for f in files if f.path.endswith(".parquet")]
    if jsonl:
        frames.append(_read_jsonl(con, kind, jsonl, day))
    for path in parquet:
        frames.append(_read_parquet(con, kind, path, day))
    if not frames:
        return _empty_records(kind)
    # Sorted by (source, line); each frame on its own first, so that a large one in order is not taken again.
    ordered = sorted((f if _in_file_order(f) else _file_order(f) for f in frames if len(f)), key=lambda f: f["_source"].iloc[0])
    if not ordered:
        return pd.concat(frames, ignore_index=True)
    # Columns stay in one chunk per file: normalizing takes the rows it keeps once, which joins them.
    out = pd.concat(ordered, ignore_index=True) if len(ordered) > 1 else ordered[0]
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


def _select_list(kind: Kind, expr: dict[str, str]) -> str:
    return ",\n".join(f"{sql} AS {name}" for name, sql in expr.items())


def _read_jsonl(con: duckdb.DuckDBPyConnection, kind: Kind, paths: list[str], day: str) -> pd.DataFrame:
    known = list(SCALAR_FIELDS[kind]) + list(JSON_FIELDS[kind])
    fields = {name: f"json_extract_string(obj, '$.\"{name}\"')" for name in SCALAR_FIELDS[kind]}
    fields |= {name: f"json_extract(obj, '$.\"{name}\"')::VARCHAR" for name in JSON_FIELDS[kind]}
    if kind == "traces":
        fields |= _input_exprs("json_extract(obj, '$.input')")
    known_sql = ", ".join(f"'{k}'" for k in known)
    file_list = ", ".join(f"'{p}'" for p in paths)
    lines = f"""
        SELECT filename AS _source, line
        FROM read_csv([{file_list}], columns={{'line': 'VARCHAR'}}, delim='\\x1f', quote='', escape='',
                      header=false, auto_detect=false, filename=true, store_rejects=true,
                      strict_mode=false, new_line='\\n')
    """
    # The table keeps the files' order (insertion order is preserved); lines are numbered by it.
    # A window without ORDER BY numbers them in whatever order the parallel reader hands them over.
    con.execute(f"CREATE OR REPLACE TEMP TABLE file_lines AS {lines}")
    con.execute("CREATE OR REPLACE TEMP TABLE lines AS SELECT _source, line, row_number() OVER (PARTITION BY _source ORDER BY rowid) AS _line FROM file_lines")
    # Each stage only hands valid JSON on: DuckDB evaluates CASE branches eagerly.
    query = f"""
        WITH valid AS (
            SELECT l._source, l._line, l.line, h._hint,
                   CASE WHEN json_valid(l.line) THEN l.line END AS json_line
            FROM lines l JOIN file_hints h USING (_source)
            WHERE l.line IS NOT NULL AND trim(l.line) <> ''
        ), objects AS (
            SELECT *, CASE WHEN json_type(json_line) = 'OBJECT' THEN json_line END AS obj FROM valid
        ), parsed AS (
            SELECT *, TRY_CAST(json_extract_string(obj, '$.timestamp') AS TIMESTAMPTZ) AS _ts,
                   regexp_extract(line, '"timestamp"\\s*:\\s*"(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1) AS _line_date
            FROM objects
        )
        SELECT _source, _line, left(line, {RAW_CHARS}) AS _raw,
               CASE WHEN json_line IS NULL THEN 'malformed JSON'
                    WHEN obj IS NULL THEN 'record is not a JSON object' END AS _problem,
               CASE WHEN len(list_filter(json_keys(obj), lambda k: NOT list_contains([{known_sql}], k))) > 0
                    THEN obj END AS _unknown,
               {_select_list(kind, fields)},
               _ts AS _timestamp
        FROM parsed
        WHERE coalesce(strftime(_ts, '%Y-%m-%d'), nullif(_line_date, ''), _hint) = ?
    """
    good = _frame(con, query, [day])
    rejects = _frame(
        con,
        """
        SELECT f.file_path AS _source, e.line::BIGINT AS _line, left(e.csv_line, ?) AS _raw,
               CASE WHEN e.error_type = 'INVALID ENCODING' THEN 'not valid UTF-8'
                    ELSE 'unreadable line: ' || e.error_type END AS _problem,
               h._hint
        FROM reject_errors e JOIN reject_scans f USING (scan_id, file_id)
        JOIN file_hints h ON h._source = f.file_path
        """,
        [RAW_CHARS],
    )
    good["_unknown"] = _unknown_fields(good, known)
    if len(rejects):
        good["_line"] = _true_line_numbers(good, rejects)
        rejects = rejects[rejects["_hint"] == day].drop(columns="_hint")
        good = pd.concat([good, rejects], ignore_index=True)
    return good


def _true_line_numbers(good: pd.DataFrame, rejects: pd.DataFrame) -> np.ndarray:
    """read_csv numbers only the lines it could decode: shift each past the rejected lines before it.

    With the k-th rejected line of a file at r_k (k from 0), a decoded line with ordinal g is line
    g + #{k : r_k - k <= g}.
    """
    lines = good["_line"].to_numpy(dtype=np.int64).copy()
    for source, group in rejects.groupby("_source"):
        rejected = np.sort(group["_line"].to_numpy(dtype=np.int64))
        rows = (good["_source"] == source).to_numpy()
        lines[rows] += np.searchsorted(rejected - np.arange(len(rejected)), lines[rows], side="right")
    return lines


def _unknown_fields(good: pd.DataFrame, known: list[str]) -> pd.Series:
    """JSON of the fields outside the contract, for the few rows that have any."""
    out = pd.Series(pd.NA, index=good.index, dtype="string")
    rows = good["_unknown"].notna()
    for idx, raw in good.loc[rows, "_unknown"].items():
        record = json.loads(raw)
        out[idx] = json.dumps({k: v for k, v in record.items() if k not in known}, ensure_ascii=False)
    return out


def _read_parquet(con: duckdb.DuckDBPyConnection, kind: Kind, path: str, day: str) -> pd.DataFrame:
    schema = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").df()
    types = dict(zip(schema["column_name"], schema["column_type"], strict=True))
    exprs: dict[str, str] = {}
    for name in SCALAR_FIELDS[kind]:
        if name not in types:
            exprs[name] = "NULL::VARCHAR"
        elif types[name].startswith(("STRUCT", "MAP")) or types[name].endswith("[]"):
            exprs[name] = f'to_json("{name}")::VARCHAR'
        elif name == "timestamp" and types[name].startswith("TIMESTAMP"):
            exprs[name] = f"strftime(\"{name}\"::TIMESTAMPTZ, '%Y-%m-%dT%H:%M:%S.%f+00:00')"
        else:
            exprs[name] = f'"{name}"::VARCHAR'
    for name in JSON_FIELDS[kind]:
        if name not in types:
            exprs[name] = "NULL::VARCHAR"
        elif types[name] == "VARCHAR" and name == "metadata":
            exprs[name] = f'"{name}"'
        else:
            exprs[name] = f'to_json("{name}")::VARCHAR'
    if kind == "traces":
        typed_messages = re.fullmatch(r'STRUCT\((?=.*"?role"? VARCHAR)(?=.*"?content"? VARCHAR).*\)\[\]', types.get("input", ""))
        exprs |= _message_list_exprs('"input"') if typed_messages else _input_exprs(exprs["input"] + "::JSON")
    unknown = [c for c in types if c not in SCALAR_FIELDS[kind] and c not in JSON_FIELDS[kind]]
    any_unknown = " OR ".join(f'"{c}" IS NOT NULL' for c in unknown)
    unknown_sql = f"CASE WHEN {any_unknown} THEN to_json(struct_pack(" + ", ".join(f'"{c}" := "{c}"' for c in unknown) + "))::VARCHAR END" if unknown else "NULL::VARCHAR"
    ts = "TRY_CAST(timestamp AS TIMESTAMPTZ)" if "timestamp" in types else "NULL::TIMESTAMPTZ"
    hint = con.sql("SELECT _hint FROM file_hints WHERE _source = ?", params=[path]).fetchall()[0][0]
    query = f"""
        SELECT '{path}' AS _source, file_row_number + 1 AS _line, NULL::VARCHAR AS _raw, NULL::VARCHAR AS _problem,
               {unknown_sql} AS _unknown, {_select_list(kind, exprs)}, {ts} AS _timestamp
        FROM read_parquet('{path}', file_row_number=true)
        WHERE coalesce(strftime({ts}, '%Y-%m-%d'), ?) = ?
    """
    out = _frame(con, query, [hint, day])
    problems = out["_problem"].isna() & out["_timestamp"].isna()
    if problems.any():
        out.loc[problems, "_raw"] = out.loc[problems, list(SCALAR_FIELDS[kind])].astype("string").to_json(orient="records", lines=True).splitlines()
    return out


def _empty_records(kind: Kind) -> pd.DataFrame:
    extra = ["_input_type", "_prompt"] if kind == "traces" else []
    cols = ["_source", "_line", "_raw", "_problem", "_unknown", *SCALAR_FIELDS[kind], *JSON_FIELDS[kind], *extra, "_timestamp"]
    df = pd.DataFrame({c: pd.Series(dtype="string") for c in cols})
    df["_line"] = df["_line"].astype("Int64")
    df["_timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def _frame(con: duckdb.DuckDBPyConnection, query: str, params: list) -> pd.DataFrame:
    """A query result as pandas with Arrow-backed strings (no Python object per value), each column
    in one chunk: DuckDB's batches would otherwise be concatenated later, a copy of every column."""
    return con.sql(query, params=params).to_arrow_table(batch_size=ONE_BATCH).to_pandas()
