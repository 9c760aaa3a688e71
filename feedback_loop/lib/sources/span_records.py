"""Spans, however they were read, as pulled trace and feedback records."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from feedback_loop.lib.landing import RAW_CHARS, PulledRecord
from feedback_loop.lib.sources.llm_spans import SpanFeedback, flat, is_llm_span, span_feedback, trace_fields
from feedback_loop.lib.sources.spans import Span


@dataclass
class SpanRecords:
    traces: list[PulledRecord] = field(default_factory=list)
    feedback: list[PulledRecord] = field(default_factory=list)
    spans_not_llm: int = 0
    not_feedback: Counter = field(default_factory=Counter)  # judgement name -> how many were not mapped to feedback


@dataclass(frozen=True)
class ReadSpan:
    """A span as read from a store, or why it could not be read."""

    source: str
    position: int
    raw: str
    span: Span | None = None
    problem: str | None = None
    judgements_only: bool = False  # a log record holding an evaluation result: no trace of its own


def span_records(spans: Iterable[ReadSpan], names: dict[str, str], annotator_kinds: list[str] | None, event_prefix: str) -> SpanRecords:
    """Trace records of the LLM spans, feedback records of the judgements spans carry; each event
    id is `event_prefix` + trace id, span id and the judgement's place on the span."""
    out = SpanRecords()
    for read in spans:
        raw = read.raw[:RAW_CHARS]
        if read.span is None:
            (out.feedback if read.judgements_only else out.traces).append(PulledRecord(read.source, read.position, raw, problem=read.problem or "span could not be read"))
            continue
        span = read.span
        if read.judgements_only:
            pass
        elif is_llm_span(flat(span.attributes)):
            out.traces.append(PulledRecord(read.source, read.position, raw, fields=trace_fields(span)))
        else:
            out.spans_not_llm += 1
        for judged in span_feedback(span, names, annotator_kinds):
            if isinstance(judged, str):
                out.not_feedback[judged] += 1
                continue
            # A log record has no place on a span: it is told apart by its time and name.
            tag = f"log:{judged.timestamp}:{judged.name}" if read.judgements_only else judged.tag
            out.feedback.append(_feedback_record(read, raw, judged, f"{event_prefix}{span.trace_id}:{span.span_id}:{tag}"))
    return out


def _feedback_record(read: ReadSpan, raw: str, judged: SpanFeedback, event_id: str) -> PulledRecord:
    note = json.dumps({"judgement": judged.tag, "name": judged.name, "span": raw[:RAW_CHARS]}, ensure_ascii=False)
    if judged.fields is None:
        return PulledRecord(read.source, read.position, note, problem=judged.problem)
    trace_id, span_id = judged.target
    fields = {"event_id": event_id, "trace_id": trace_id, "span_id": span_id, "timestamp": judged.timestamp} | judged.fields
    return PulledRecord(read.source, read.position, note, fields=fields)
