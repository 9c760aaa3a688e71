"""OTLP trace exports on disk: the OpenTelemetry Collector's file exporter and its kin.

- JSON: one `TracesData` object per line (`{"resourceSpans": [{"resource", "scopeSpans": [{"spans"}]}]}`),
  or one object for the whole file; `.json` or `.jsonl`.
- Protobuf: `TracesData` messages, each preceded by its size as 4 big-endian bytes (the file
  exporter's `format: proto`), or one message for the whole file; `.pb`, `.binpb` or `.proto`.
- Any of these compressed with gzip (`.gz`) or zstd (`.zst`, the file exporter's `compression: zstd`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from upath import UPath

from feedback_loop.lib.landing import RAW_CHARS
from feedback_loop.lib.sources.llm_spans import EVALUATION_EVENT
from feedback_loop.lib.sources.span_records import ReadSpan
from feedback_loop.lib.sources.spans import BadSpan, Span, SpanEvent, nanos, otlp_attributes, otlp_id, otlp_span

JSON_SUFFIXES = (".json", ".jsonl")
PROTO_SUFFIXES = (".pb", ".binpb", ".proto")
COMPRESSED = (".gz", ".zst")


@dataclass(frozen=True)
class ExportFile:
    path: str
    written: dt.datetime  # last modified, UTC


def export_files(root: str) -> list[ExportFile]:
    """The OTLP files under `root`, sorted by path."""
    folder = UPath(root)
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.rglob("*"), key=str):
        name = path.name.lower()
        base = name[: -len(next(s for s in COMPRESSED if name.endswith(s)))] if name.endswith(COMPRESSED) else name
        if path.is_file() and base.endswith(JSON_SUFFIXES + PROTO_SUFFIXES):
            written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            files.append(ExportFile(path.as_posix() if path.protocol in ("", "file") else str(path), written))
    return files


def read_export(path: str) -> Iterator[ReadSpan]:
    """Every span of one export file, or one problem for a file (or a line, or a message) that
    cannot be read."""
    try:
        data = _decompressed(UPath(path).read_bytes(), path)
    except (OSError, EOFError, zstandard.ZstdError, gzip.BadGzipFile) as err:
        yield ReadSpan(path, 1, UPath(path).name, problem=f"unreadable file: {str(err)[:300]}")
        return
    base = path.lower().removesuffix(".gz").removesuffix(".zst")
    if base.endswith(JSON_SUFFIXES):
        yield from _json_spans(path, data)
    else:
        yield from _proto_spans(path, data)


def _decompressed(data: bytes, path: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _json_spans(path: str, data: bytes) -> Iterator[ReadSpan]:
    try:
        whole = json.loads(data)
    except ValueError:
        whole = None
    documents = [(1, data)] if isinstance(whole, dict) else list(enumerate(data.split(b"\n"), start=1))
    for line, text in documents:
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except UnicodeDecodeError:
            yield ReadSpan(path, line, text[:RAW_CHARS].decode("utf-8", "replace"), problem="not valid UTF-8")
            continue
        except ValueError:
            yield ReadSpan(path, line, text[:RAW_CHARS].decode("utf-8", "replace"), problem="malformed JSON")
            continue
        if isinstance(document, dict) and "resourceLogs" in document:
            yield from evaluation_log_records(path, line, document)
        else:
            yield from traces_data_spans(path, line, document)


def _proto_spans(path: str, data: bytes) -> Iterator[ReadSpan]:
    messages = _framed(data)
    if messages is None:
        messages = [data]
    for number, message in enumerate(messages, start=1):
        try:
            document = MessageToDict(TracesData.FromString(message))
        except (DecodeError, RuntimeError) as err:
            yield ReadSpan(path, number, f"{UPath(path).name} message {number} ({len(message)} bytes)", problem=f"not an OTLP protobuf TracesData message: {str(err)[:200]}")
            continue
        yield from traces_data_spans(path, number, document)


def _framed(data: bytes) -> list[bytes] | None:
    """The messages of a size-prefixed stream, or None when `data` is not one."""
    messages, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            return None
        size = int.from_bytes(data[at : at + 4], "big")
        if at + 4 + size > len(data):
            return None
        messages.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return messages or None


def traces_data_spans(source: str, position: int, document: object) -> Iterator[ReadSpan]:
    """The spans of one OTLP JSON `TracesData` (or `ExportTraceServiceRequest`) document."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans", []), list):
        yield ReadSpan(source, position, json.dumps(document, ensure_ascii=False)[:RAW_CHARS], problem="not an OTLP TracesData object (no resourceSpans list)")
        return
    for resource_spans in document.get("resourceSpans", []):
        try:
            resource = otlp_attributes(((resource_spans or {}).get("resource") or {}).get("attributes"))
            scopes = (resource_spans or {}).get("scopeSpans") or (resource_spans or {}).get("instrumentationLibrarySpans") or []
        except (BadSpan, AttributeError) as err:
            yield ReadSpan(source, position, json.dumps(resource_spans, ensure_ascii=False)[:RAW_CHARS], problem=f"unreadable resource: {err}")
            continue
        for scope in scopes:
            for span in (scope or {}).get("spans") or []:
                raw = json.dumps(span, ensure_ascii=False)
                try:
                    yield ReadSpan(source, position, raw, span=otlp_span(span, resource))
                except (BadSpan, TypeError, ValueError) as err:
                    yield ReadSpan(source, position, raw, problem=str(err) if isinstance(err, BadSpan) else f"unreadable span: {err}")


def evaluation_log_records(source: str, position: int, document: dict) -> Iterator[ReadSpan]:
    """The `gen_ai.evaluation.result` events of one OTLP JSON `LogsData` document (the GenAI
    conventions emit them as log records in the evaluated span's context); other records are not
    feedback and are passed over."""
    for resource_logs in document.get("resourceLogs") or []:
        for scope in (resource_logs or {}).get("scopeLogs") or []:
            for record in (scope or {}).get("logRecords") or []:
                raw = json.dumps(record, ensure_ascii=False)
                try:
                    attributes = otlp_attributes((record or {}).get("attributes"))
                    if (record.get("eventName") or attributes.get("event.name")) != EVALUATION_EVENT:
                        continue
                    trace_id, span_id = otlp_id(record.get("traceId"), 16, "traceId"), otlp_id(record.get("spanId"), 8, "spanId")
                    if trace_id is None or span_id is None:
                        raise BadSpan("evaluation result names no span (traceId and spanId)")
                    when = nanos(record.get("timeUnixNano"), "timeUnixNano") or nanos(record.get("observedTimeUnixNano"), "observedTimeUnixNano")
                    target = Span(trace_id, span_id, None, "", None, when, {}, [SpanEvent(EVALUATION_EVENT, when, attributes)])
                    yield ReadSpan(source, position, raw, span=target, judgements_only=True)
                except (BadSpan, AttributeError, TypeError, ValueError) as err:
                    yield ReadSpan(source, position, raw, problem=str(err) if isinstance(err, BadSpan) else f"unreadable log record: {err}", judgements_only=True)
