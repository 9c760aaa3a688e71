"""Langfuse over its public API: generations as traces, scores as feedback.

- `GET /api/public/v2/observations?type=GENERATION&fromStartTime&toStartTime&fields=…&limit=1000`:
  the generations that started in the window, paged by `meta.cursor` until it is absent.
- `GET /api/public/v3/scores?fromTimestamp&toTimestamp&fields=details,subject&limit=100`: the
  scores given in the window; `subject` says what a score is on (a trace, an observation, a
  session, an experiment).

Basic auth: the public key as user, the secret key as password.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from feedback_loop.lib.contract import REASON_TAGS
from feedback_loop.lib.landing import RAW_CHARS, PulledRecord
from feedback_loop.lib.sources.annotations import Annotation, annotation_feedback
from feedback_loop.lib.sources.http import Http, cursor_pages
from feedback_loop.lib.sources.payloads import content_text

OBSERVATION_FIELDS = "core,basic,time,io,metadata,model,usage,prompt,metrics"
OBSERVATION_PAGE = 1000
SCORE_PAGE = 100  # the endpoint's maximum
# Where a score came from -> the annotator kind the name mapping's `annotator_kinds` filters on.
SCORE_SOURCES = {"API": "HUMAN", "ANNOTATION": "HUMAN", "EVAL": "LLM"}
LANGFUSE_PROJECT = "langfuse_project_id"  # the trace metadata key naming the Langfuse project a trace came from


def meta_cursor(body: dict) -> str | None:
    return (body.get("meta") or {}).get("cursor") if isinstance(body.get("meta"), dict) else None


def langfuse_generations(http: Http, start: dt.datetime, end: dt.datetime) -> Iterator[PulledRecord]:
    """The generations that started in [start, end), as trace records."""
    source = "langfuse observations"
    params = [("type", "GENERATION"), ("fromStartTime", _iso(start)), ("toStartTime", _iso(end)), ("fields", OBSERVATION_FIELDS), ("parseIoAsJson", "true"), ("limit", str(OBSERVATION_PAGE))]
    position = 0
    for _, data, raw, problem in cursor_pages(http, "/api/public/v2/observations", params, "observations", meta_cursor):
        if problem:
            position += 1
            yield PulledRecord(source, position, raw, problem=problem)
            continue
        for item in data or []:
            position += 1
            text = json.dumps(item, ensure_ascii=False, sort_keys=True)[:RAW_CHARS]
            if not isinstance(item, dict):
                yield PulledRecord(source, position, text, problem="observation is not a JSON object")
            elif not item.get("id") or not item.get("traceId"):
                yield PulledRecord(source, position, text, problem="observation has no " + ("id" if not item.get("id") else "traceId"))
            else:
                yield PulledRecord(source, position, text, fields=generation_fields(item))


def generation_fields(item: dict) -> dict:
    """The contract trace fields of one generation."""
    usage = item.get("usageDetails") if isinstance(item.get("usageDetails"), dict) else {}
    latency = item.get("latency")
    metadata = dict(item["metadata"]) if isinstance(item.get("metadata"), dict) else ({} if item.get("metadata") is None else {"metadata": item["metadata"]})
    for key in ("name", "environment", "level", "statusMessage", "version", "promptName", "totalCost"):
        if item.get(key) is not None:
            metadata.setdefault(key, item[key])
    if item.get("projectId"):
        metadata[LANGFUSE_PROJECT] = item["projectId"]  # marks a trace that write-back may score
    prompt = f"{item['promptName']}@{item['promptVersion']}" if item.get("promptName") and item.get("promptVersion") is not None else None
    return {
        "trace_id": item["traceId"],
        "span_id": item["id"],
        "parent_span_id": item.get("parentObservationId"),
        "session_id": item.get("sessionId"),
        "user_id": item.get("userId"),
        "timestamp": item.get("endTime") or item.get("startTime"),
        "model": item.get("providedModelName"),
        "prompt_version": prompt,
        "input": _messages(item.get("input")),
        "output": _output(item.get("output")),
        "latency_ms": latency * 1000 if isinstance(latency, int | float) else None,
        "input_tokens": usage.get("input", usage.get("prompt_tokens")),
        "output_tokens": usage.get("output", usage.get("completion_tokens")),
        "metadata": metadata,
    }


@dataclass
class LangfuseScores:
    records: list[PulledRecord] = field(default_factory=list)
    not_feedback: Counter = field(default_factory=Counter)


def langfuse_scores(http: Http, start: dt.datetime, end: dt.datetime, names: dict[str, str], annotator_kinds: list[str] | None) -> LangfuseScores:
    """The scores given in [start, end), as feedback records."""
    source = "langfuse scores"
    params = [("fromTimestamp", _iso(start)), ("toTimestamp", _iso(end)), ("fields", "details,subject"), ("limit", str(SCORE_PAGE))]
    out = LangfuseScores()
    position = 0
    for _, data, raw, problem in cursor_pages(http, "/api/public/v3/scores", params, "scores", meta_cursor):
        if problem:
            position += 1
            out.records.append(PulledRecord(source, position, raw, problem=problem))
            continue
        for item in data or []:
            position += 1
            record = score_record(source, position, item, names, annotator_kinds)
            if isinstance(record, str):
                out.not_feedback[record] += 1
            else:
                out.records.append(record)
    return out


def score_record(source: str, position: int, item: object, names: dict[str, str], annotator_kinds: list[str] | None) -> PulledRecord | str:
    """One score as a feedback record; the score's name when it is not feedback."""
    raw = json.dumps(item, ensure_ascii=False, sort_keys=True)[:RAW_CHARS]
    if not isinstance(item, dict):
        return PulledRecord(source, position, raw, problem="score is not a JSON object")
    subject = item.get("subject") if isinstance(item.get("subject"), dict) else {}
    kind, name, value = subject.get("kind"), str(item.get("name") or ""), item.get("value")
    if not item.get("id") or not name:
        return PulledRecord(source, position, raw, problem="score has no " + ("id" if not item.get("id") else "name"))
    if kind == "experiment":
        return name  # a score of an offline experiment run, not of a user's response
    target = {"trace": {"trace_id": subject.get("id")}, "observation": {"trace_id": subject.get("traceId"), "span_id": subject.get("id")}, "session": {"session_id": subject.get("id")}}.get(kind)
    if target is None or not subject.get("id"):
        return PulledRecord(source, position, raw, problem="score has no subject (trace, observation or session); request fields=subject")
    data_type = str(item.get("dataType") or "").upper()
    annotator = SCORE_SOURCES.get(str(item.get("source") or "").upper())
    if annotator_kinds is not None and annotator and annotator not in {k.upper() for k in annotator_kinds}:
        return name
    comment = item.get("comment") if isinstance(item.get("comment"), str) and item["comment"].strip() else None
    metadata = {"score": name, "score_source": item.get("source"), "data_type": data_type} | (item["metadata"] if isinstance(item.get("metadata"), dict) else {})
    if data_type in ("BOOLEAN", "NUMERIC"):
        score = float(value) if isinstance(value, bool | int | float) else None
        judged = annotation_feedback(
            Annotation(name=name, score=score, explanation=comment, annotator_kind=annotator, metadata=item.get("metadata") if isinstance(item.get("metadata"), dict) else None), names, None
        )
        if judged is None:
            return name
        if judged.fields is None:
            return PulledRecord(source, position, raw, problem=judged.problem)
        fields = judged.fields | {"metadata": metadata}
    elif data_type == "CATEGORICAL":
        category = str(value or "").strip().lower()
        if not category:
            return PulledRecord(source, position, raw, problem=f"categorical score '{name}' has no value")
        fields = {"type": "comment", "reason": category if category in REASON_TAGS else "other", "comment": comment, "metadata": metadata | {"category": value}}
    elif data_type in ("TEXT", "CORRECTION"):
        text = str(value).strip() if value is not None else ""
        if not text:
            return PulledRecord(source, position, raw, problem=f"{data_type.lower()} score '{name}' has no text")
        fields = {"type": "comment", "value": text, "comment": text, "metadata": metadata} if data_type == "TEXT" else {"type": "correction", "value": text, "comment": comment, "metadata": metadata}
    else:
        return PulledRecord(source, position, raw, problem=f"score '{name}' has an unknown dataType {item.get('dataType')!r}")
    return PulledRecord(source, position, raw, fields={"event_id": f"langfuse:{item['id']}", "timestamp": item.get("timestamp")} | target | fields)


def _messages(value: object) -> list[dict] | str | None:
    """A generation's input as `[{role, content}]` when it is a chat, else its text."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return [{"role": str(m.get("role")), "content": content_text(m.get("content"))} for m in value]
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _output(value: object) -> str | None:
    """A generation's output text: the text itself, a message's content, or the last message's."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1]
    if isinstance(value, dict) and "content" in value:
        return content_text(value["content"])
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
