"""Langfuse's blob-storage export, in a folder or a bucket (any fsspec URL):

```
{root}/{project_id}/
  observations_v2/{timestamp}.{parquet|jsonl|json}[.gz]   enriched observations (trace fields on each row)
  traces/, observations/                                  the legacy pair, joined on trace_id
  scores/{timestamp}.{parquet|jsonl|json}[.gz]
  manifests/{timestamp}.json                              written last: the files a completed run wrote
```

Only files a manifest lists are read (a run still writing has none), and only runs whose manifest
was written since the pull window started (an older run holds nothing of it). Export windows are
inclusive at both ends, so a row may come twice: the ids dedupe it. Rows are mapped to the API's
shapes and then as the API source maps them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.parquet as pq
from upath import UPath

from feedback_loop.lib.landing import RAW_CHARS, PulledRecord
from feedback_loop.lib.sources.langfuse import LangfuseScores, generation_fields, score_record
from feedback_loop.lib.sources.payloads import parsed

DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


@dataclass(frozen=True)
class ExportRun:
    manifest: str
    written: dt.datetime
    files: tuple[str, ...]  # what it wrote, as paths under the project folder


def export_runs(project_root: str, since: dt.datetime) -> tuple[list[ExportRun], list[PulledRecord]]:
    """The completed export runs whose manifest was written at or after `since`, and one problem
    per manifest that cannot be read."""
    folder = UPath(project_root) / "manifests"
    runs, problems = [], []
    if not folder.is_dir():
        return runs, problems
    for number, path in enumerate(sorted(folder.glob("*.json"), key=str), start=1):
        written = _written(path)
        if written < since:
            continue
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as err:
            problems.append(PulledRecord(f"langfuse export {path.name}", number, path.name, problem=f"unreadable manifest: {str(err)[:200]}"))
            continue
        files = tuple(sorted({_relative(p) for p in _strings(manifest) if p.endswith(DATA_SUFFIXES)}))
        runs.append(ExportRun(str(path), written, files))
    return runs, problems


def _written(path: UPath) -> dt.datetime:
    """When a manifest was written: its modification time, else (a store that keeps none) the
    time in its name, else now."""
    mtime = path.stat().st_mtime
    if mtime:
        return dt.datetime.fromtimestamp(mtime, dt.UTC)
    found = _NAME_TIME.search(path.name)
    if found:
        return dt.datetime(*(int(g) for g in found.groups()), tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


_NAME_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T _](\d{2})[-:_]?(\d{2})[-:_]?(\d{2})")


def rows(path: UPath) -> Iterator[tuple[int, dict | None, str, str | None]]:
    """Each row of one export file: (position, row, raw text, why it cannot be read)."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".parquet"):
            for number, row in enumerate(pq.read_table(path.open("rb")).to_pylist(), start=1):
                yield number, row, json.dumps(row, ensure_ascii=False, default=str)[:RAW_CHARS], None
            return
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as err:  # pyarrow's errors are ValueErrors / OSErrors
        yield 1, None, path.name, f"unreadable export file: {str(err)[:200]}"
        return
    text = data.decode("utf-8", "replace")
    if path.name.removesuffix(".gz").endswith(".json"):
        try:
            items = json.loads(text)
        except ValueError:
            yield 1, None, text[:RAW_CHARS], "malformed JSON"
            return
        lines = [(n, json.dumps(i)) for n, i in enumerate(items if isinstance(items, list) else [items], start=1)]
    else:
        lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    for number, line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            yield number, None, line[:RAW_CHARS], "malformed JSON"
            continue
        yield (number, row, line[:RAW_CHARS], None) if isinstance(row, dict) else (number, None, line[:RAW_CHARS], "row is not a JSON object")


def observation_record(source: str, position: int, row: dict, raw: str, trace: dict | None = None) -> PulledRecord | None:
    """An exported generation as a trace record (None for other observation types); `trace` is the
    legacy `traces/` row of its trace, for the trace-level fields."""
    if row.get("type") and row["type"] != "GENERATION":
        return None
    if not row.get("id") or not row.get("trace_id"):
        return PulledRecord(source, position, raw, problem="observation has no " + ("id" if not row.get("id") else "trace_id"))
    trace = trace or {}
    start, end = _stamp(row.get("start_time")), _stamp(row.get("end_time"))
    item = {
        "id": row["id"],
        "traceId": row["trace_id"],
        "parentObservationId": row.get("parent_observation_id") or None,
        "startTime": start,
        "endTime": end,
        "userId": row.get("user_id") or trace.get("user_id"),
        "sessionId": row.get("session_id") or trace.get("session_id"),
        "name": row.get("name"),
        "environment": row.get("environment"),
        "level": row.get("level"),
        "version": row.get("version") or None,
        "input": _json(row.get("input")),
        "output": _json(row.get("output")),
        "metadata": _json(row.get("metadata")) or None,
        "providedModelName": row.get("provided_model_name") or None,
        "usageDetails": _mapping(_json(row.get("usage_details"))),
        "promptName": row.get("prompt_name") or None,
        "promptVersion": row.get("prompt_version"),
        "totalCost": row.get("total_cost"),
        "projectId": row.get("project_id"),
        # Latency from the times: the exported `latency` is in milliseconds for integrations made before 2026-04-01.
        "latency": (_dt(end) - _dt(start)).total_seconds() if start and end else None,
    }
    return PulledRecord(source, position, raw, fields=generation_fields(item))


def score_item(row: dict) -> dict:
    """An exported score in the shape of `GET /api/public/v3/scores` with `fields=details,subject`."""
    data_type = str(row.get("data_type") or "").upper()
    value = row.get("string_value") if data_type in ("CATEGORICAL", "TEXT") else (bool(row.get("value")) if data_type == "BOOLEAN" and row.get("value") is not None else row.get("value"))
    if row.get("dataset_run_id"):
        subject = {"kind": "experiment", "id": row["dataset_run_id"]}
    elif row.get("observation_id"):
        subject = {"kind": "observation", "id": row["observation_id"], "traceId": row.get("trace_id")}
    elif row.get("trace_id"):
        subject = {"kind": "trace", "id": row["trace_id"]}
    elif row.get("session_id"):
        subject = {"kind": "session", "id": row["session_id"]}
    else:
        subject = {}
    return {
        "id": row.get("id"),
        "name": row.get("name"),
        "value": value,
        "dataType": data_type,
        "source": row.get("source"),
        "timestamp": _stamp(row.get("timestamp")),
        "comment": row.get("comment"),
        "metadata": None,
        "subject": subject,
    }


def export_scores(source: str, position: int, row: dict, raw: str, names: dict[str, str], annotator_kinds: list[str] | None, out: LangfuseScores) -> None:
    record = score_record(source, position, score_item(row), names, annotator_kinds)
    if isinstance(record, str):
        out.not_feedback[record] += 1
    else:
        out.records.append(PulledRecord(record.source, record.position, raw, record.fields, record.problem))


def _stamp(value: object) -> str | None:
    """An export timestamp (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC) as ISO-8601 with its offset."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    text = str(value).strip().replace(" ", "T", 1)
    return text if _OFFSET.search(text) else text + "+00:00"


def _dt(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _json(value: object) -> object:
    """A payload exported as text: the JSON it holds, else the text; an empty text is no payload."""
    return None if value == "" else parsed(value)


def _mapping(value: object) -> dict:
    """A JSON object, or a Parquet map (read as key-value pairs), as a dict."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in value):
        return dict(value)
    return {}


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _relative(path: str) -> str:
    """A listed file as `<folder>/<name>` (manifests may give full keys or URLs)."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:])
