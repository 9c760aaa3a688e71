"""The product's own PostgreSQL: tables or views mapped column by column onto the contract.

The window is a bound query on a timestamp column (`>= start AND < end`); table and column names
are checked against the catalog and quoted as identifiers, every value is a bound parameter. Rows
are read through a server-side cursor, a batch at a time.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from feedback_loop.lib.landing import JSON_FIELDS, RAW_CHARS, SCALAR_FIELDS, Kind, PulledRecord

BATCH_ROWS = 10_000


class MappingError(ValueError):
    """The configured table or columns do not exist, or map onto no contract field."""


@dataclass(frozen=True)
class TableMapping:
    table: str  # "schema.table" or "table" (a view works too)
    timestamp: str  # the column the window bounds, and the record's timestamp unless `columns` maps one
    columns: dict[str, str]  # contract field -> column
    type_values: dict[str, str] | None = None  # feedback: the product's event type -> contract type


def table_name(table: str) -> sql.Composable:
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise MappingError(f"table '{table}' is not 'table' or 'schema.table'")
    return sql.SQL(".").join(sql.Identifier(p) for p in parts)


def checked(kind: Kind, mapping: TableMapping) -> TableMapping:
    """The mapping, when every key is a contract field of `kind`."""
    fields = set(SCALAR_FIELDS[kind]) | set(JSON_FIELDS[kind])
    unknown = sorted(set(mapping.columns) - fields)
    if unknown:
        raise MappingError(f"{kind} columns map onto fields outside the contract: {unknown} (fields: {sorted(fields)})")
    return mapping


def existing_columns(conn: psycopg2.extensions.connection, table: str) -> set[str]:
    schema, _, name = table.rpartition(".")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = coalesce(%s, current_schema())",
            (name, schema or None),
        )
        return {row[0] for row in cur.fetchall()}


def window_rows(conn: psycopg2.extensions.connection, kind: Kind, mapping: TableMapping, start: dt.datetime, end: dt.datetime, source: str) -> Iterator[PulledRecord]:
    """Every row whose timestamp column is in [start, end), as a pulled record."""
    mapping = checked(kind, mapping)
    present = existing_columns(conn, mapping.table)
    if not present:
        raise MappingError(f"{source}: table '{mapping.table}' does not exist or has no columns this user may read")
    wanted = dict(mapping.columns)
    wanted.setdefault("timestamp", mapping.timestamp)
    missing = sorted({c for c in [*wanted.values(), mapping.timestamp] if c not in present})
    if missing:
        raise MappingError(f"{source}: table '{mapping.table}' has no column {', '.join(missing)}")
    columns = list(dict.fromkeys([*wanted.values(), mapping.timestamp]))
    ts = sql.Identifier(mapping.timestamp)
    query = sql.SQL("SELECT {cols} FROM {table} WHERE {ts} >= %s AND {ts} < %s ORDER BY {ts}, {first}").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns), table=table_name(mapping.table), ts=ts, first=sql.Identifier(columns[0])
    )
    types = {k.lower(): v for k, v in (mapping.type_values or {}).items()}
    with conn.cursor(name="feedback_loop_window", cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(query, (start, end))
        for position, row in enumerate(cur, start=1):
            raw = json.dumps({c: _plain(v) for c, v in row.items()}, ensure_ascii=False, default=str)[:RAW_CHARS]
            fields = {field: _plain(row[column]) for field, column in wanted.items()}
            if kind == "feedback" and types and isinstance(fields.get("type"), str):
                fields["type"] = types.get(fields["type"].strip().lower(), fields["type"])
            yield PulledRecord(source, position, raw, fields=fields)


def _plain(value: object) -> object:
    """A column value as JSON: timestamps as ISO-8601 (naive ones are UTC), numbers as numbers."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value
