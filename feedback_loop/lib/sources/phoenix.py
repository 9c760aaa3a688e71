"""Arize Phoenix over its REST API: spans of a project in a time window, and their annotations.

- `GET /v1/projects/{project}/spans?start_time&end_time&limit&cursor`: spans whose start falls in
  the window, newest first, paged by `next_cursor` until it is null. Attributes come as
  OpenInference's dotted keys (nested objects are flattened to the same keys).
- `GET /v1/projects/{project}/span_annotations?span_ids=…&limit&cursor`: annotations of up to
  `ANNOTATION_BATCH` spans per request, paged the same way.

Each annotation is one feedback event `phoenix:<annotation id>`, timestamped when it was created,
on the annotated span when that is an LLM span, else on its trace.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

from feedback_loop.lib.landing import RAW_CHARS, PulledRecord
from feedback_loop.lib.sources.annotations import Annotation, annotation_feedback
from feedback_loop.lib.sources.http import Http, cursor_pages
from feedback_loop.lib.sources.llm_spans import flat, is_llm_span
from feedback_loop.lib.sources.span_records import ReadSpan
from feedback_loop.lib.sources.spans import BadSpan, Span, SpanEvent, nanos_from_iso

ANNOTATION_BATCH = 100  # span ids per request: the server takes 1,000, a URL of 100 hex ids stays short
PAGE_SIZE = 1000


def next_cursor(body: dict) -> str | None:
    return body.get("next_cursor")


def project_path(project: str, endpoint: str) -> str:
    return f"/v1/projects/{quote(project, safe='')}/{endpoint}"


def phoenix_spans(http: Http, project: str, start: dt.datetime, end: dt.datetime) -> Iterator[ReadSpan]:
    """The project's spans that started in [start, end)."""
    source = f"phoenix project '{project}' spans"
    params = [("start_time", start.isoformat()), ("end_time", end.isoformat()), ("limit", str(PAGE_SIZE))]
    position = 0
    for _, data, raw, problem in cursor_pages(http, project_path(project, "spans"), params, "spans", next_cursor):
        if problem:
            position += 1
            yield ReadSpan(source, position, raw, problem=problem)
            continue
        for item in data or []:
            position += 1
            text = json.dumps(item, ensure_ascii=False, sort_keys=True)
            try:
                yield ReadSpan(source, position, text, span=phoenix_span(item))
            except (BadSpan, TypeError, ValueError, AttributeError) as err:
                yield ReadSpan(source, position, text, problem=str(err) if isinstance(err, BadSpan) else f"unreadable span: {err}")


def phoenix_span(item: object) -> Span:
    """One span of the spans listing."""
    if not isinstance(item, dict):
        raise BadSpan("span is not a JSON object")
    context = item.get("context") or {}
    trace_id, span_id = context.get("trace_id"), context.get("span_id")
    if not trace_id or not span_id:
        raise BadSpan("span has no " + ("context.trace_id" if not trace_id else "context.span_id"))
    attributes = flat(item.get("attributes") or {})
    if item.get("span_kind") and "openinference.span.kind" not in attributes:
        attributes["openinference.span.kind"] = item["span_kind"]
    events = [SpanEvent(str(e.get("name") or ""), nanos_from_iso(e.get("timestamp"), "event timestamp"), flat(e.get("attributes") or {})) for e in item.get("events") or [] if isinstance(e, dict)]
    return Span(
        trace_id=str(trace_id).lower(),
        span_id=str(span_id).lower(),
        parent_span_id=str(item["parent_id"]).lower() if item.get("parent_id") else None,
        name=str(item.get("name") or ""),
        start_ns=nanos_from_iso(item.get("start_time"), "start_time"),
        end_ns=nanos_from_iso(item.get("end_time"), "end_time"),
        attributes=attributes,
        events=events,
        status=item.get("status_code"),
    )


@dataclass
class PhoenixFeedback:
    records: list[PulledRecord] = field(default_factory=list)
    not_feedback: dict[str, int] = field(default_factory=dict)


def phoenix_feedback(http: Http, project: str, spans: list[Span], names: dict[str, str], annotator_kinds: list[str] | None) -> PhoenixFeedback:
    """Feedback events of the annotations on `spans`."""
    source = f"phoenix project '{project}' span_annotations"
    out = PhoenixFeedback()
    by_id = {s.span_id: s for s in spans}
    ids = sorted(by_id)
    position = 0
    for at in range(0, len(ids), ANNOTATION_BATCH):
        params = [("span_ids", i) for i in ids[at : at + ANNOTATION_BATCH]] + [("limit", str(PAGE_SIZE))]
        for _, data, raw, problem in cursor_pages(http, project_path(project, "span_annotations"), params, "span_annotations", next_cursor):
            if problem:
                position += 1
                out.records.append(PulledRecord(source, position, raw, problem=problem))
                continue
            for item in data or []:
                position += 1
                record = _annotation_record(source, position, item, by_id, names, annotator_kinds)
                if isinstance(record, str):
                    out.not_feedback[record] = out.not_feedback.get(record, 0) + 1
                elif record is not None:
                    out.records.append(record)
    return out


def _annotation_record(source: str, position: int, item: object, spans: dict[str, Span], names: dict[str, str], kinds: list[str] | None) -> PulledRecord | str | None:
    raw = json.dumps(item, ensure_ascii=False, sort_keys=True)[:RAW_CHARS]
    if not isinstance(item, dict):
        return PulledRecord(source, position, raw, problem="annotation is not a JSON object")
    result = item.get("result") if isinstance(item.get("result"), dict) else {}
    score = result.get("score")
    annotation = Annotation(
        name=str(item.get("name") or ""),
        label=result.get("label"),
        score=float(score) if isinstance(score, int | float) else None,
        explanation=result.get("explanation"),
        annotator_kind=item.get("annotator_kind"),
        metadata=item.get("metadata") if isinstance(item.get("metadata"), dict) else None,
    )
    if not annotation.name:
        return PulledRecord(source, position, raw, problem="annotation has no name")
    judged = annotation_feedback(annotation, names, kinds)
    if judged is None:
        return annotation.name
    if judged.fields is None:
        return PulledRecord(source, position, raw, problem=judged.problem)
    span = spans.get(str(item.get("span_id") or "").lower())
    if span is None or not item.get("id"):
        return PulledRecord(source, position, raw, problem="annotation names no span of the listing" if item.get("id") else "annotation has no id")
    on_llm = is_llm_span(span.attributes)
    fields = {
        "event_id": f"phoenix:{item['id']}",
        "trace_id": span.trace_id,
        "span_id": span.span_id if on_llm else None,
        "timestamp": item.get("created_at"),
    } | judged.fields
    return PulledRecord(source, position, raw, fields=fields)
