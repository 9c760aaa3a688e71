"""LangSmith over its API: LLM runs as traces, feedback as feedback.

- `POST /api/v1/runs/query` with `{"session": [project id], "run_type": "llm", "start_time", "limit",
  "cursor"}`: the project's LLM runs that started since the window's start, paged by
  `cursors.next` until it is null; runs that started after the window are left to their day.
- `GET /api/v1/feedback?session=<project id>&min_created_at&max_created_at&limit&offset`: the
  feedback given in the window, a top-level list paged by offset until a page comes back empty.
- `GET /api/v1/sessions?name=<project>`: the project's id, when only its name is configured.

The API key travels in the `x-api-key` header.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from feedback_loop.lib.landing import RAW_CHARS, PulledRecord
from feedback_loop.lib.sources.annotations import Annotation, annotation_feedback
from feedback_loop.lib.sources.http import Http, SourceRejected
from feedback_loop.lib.sources.payloads import content_text, parsed

RUN_PAGE = 100
FEEDBACK_PAGE = 100
# Who gave the feedback -> the annotator kind the name mapping's `annotator_kinds` filters on.
FEEDBACK_SOURCES = {"api": "HUMAN", "app": "HUMAN", "model": "LLM", "auto_eval": "LLM"}
# LangChain's serialized message classes -> chat roles.
MESSAGE_ROLES = {
    "human": "user",
    "humanmessage": "user",
    "ai": "assistant",
    "aimessage": "assistant",
    "aimessagechunk": "assistant",
    "system": "system",
    "systemmessage": "system",
    "tool": "tool",
    "toolmessage": "tool",
}


def project_id(http: Http, project: str) -> str:
    """The id of the project (a tracer session) named `project`."""
    response = http.get("/api/v1/sessions", params=[("name", project), ("limit", "1")])
    try:
        sessions = response.json()
    except ValueError:
        sessions = None
    if not isinstance(sessions, list) or not sessions or not isinstance(sessions[0], dict) or not sessions[0].get("id"):
        raise SourceRejected(f"langsmith: no project named '{project}' (GET /api/v1/sessions answered {response.text[:200]!r})")
    return str(sessions[0]["id"])


def langsmith_runs(http: Http, session: str, start: dt.datetime, end: dt.datetime) -> Iterator[PulledRecord]:
    """The project's LLM runs that started in [start, end), as trace records."""
    source = "langsmith runs"
    body = {"session": [session], "run_type": "llm", "start_time": start.isoformat(), "limit": RUN_PAGE}
    position, page = 0, 0
    while True:
        page += 1
        response = http.request("POST", "/api/v1/runs/query", json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        runs = answer.get("runs") if isinstance(answer, dict) else None
        if not isinstance(runs, list):
            position += 1
            yield PulledRecord(source, position, response.text[:RAW_CHARS], problem=f"runs page {page} has no runs list")
            return
        for run in runs:
            position += 1
            text = json.dumps(run, ensure_ascii=False, sort_keys=True, default=str)[:RAW_CHARS]
            missing = [k for k in ("id", "trace_id", "start_time") if not isinstance(run, dict) or not run.get(k)]
            if missing:
                yield PulledRecord(source, position, text, problem=f"run has no {missing[0]}")
            elif start <= _stamp(run["start_time"]) < end:  # the query bounds the start from below only
                yield PulledRecord(source, position, text, fields=run_fields(run))
        cursor = (answer.get("cursors") or {}).get("next") if isinstance(answer.get("cursors"), dict) else None
        if not cursor:
            return
        body = body | {"cursor": cursor}


def run_fields(run: dict) -> dict:
    """The contract trace fields of one LLM run."""
    extra = run.get("extra") if isinstance(run.get("extra"), dict) else {}
    meta = extra.get("metadata") if isinstance(extra.get("metadata"), dict) else {}
    params = extra.get("invocation_params") if isinstance(extra.get("invocation_params"), dict) else {}
    start, end = _stamp(run.get("start_time")), _stamp(run.get("end_time"))
    metadata = dict(meta) | {k: run[k] for k in ("name", "status", "error", "tags") if run.get(k)}
    return {
        "trace_id": run["trace_id"],
        "span_id": run["id"],
        "parent_span_id": run.get("parent_run_id"),
        "session_id": _first(meta, "session_id", "thread_id", "conversation_id") or run.get("thread_id"),
        "user_id": _first(meta, "user_id", "user"),
        "timestamp": run.get("end_time") or run.get("start_time"),
        "model": _first(meta, "ls_model_name") or _first(params, "model", "model_name"),
        "prompt_version": _first(meta, "prompt_version", "ls_prompt_version"),
        "input": run_input(run.get("inputs")),
        "output": run_output(run.get("outputs")),
        "latency_ms": (end - start).total_seconds() * 1000 if start != _FAR and end != _FAR and end >= start else None,
        "input_tokens": run.get("prompt_tokens"),
        "output_tokens": run.get("completion_tokens"),
        "metadata": metadata,
    }


def run_input(inputs: object) -> list[dict] | str | None:
    """A run's inputs as `[{role, content}]` (chat models, LangChain or OpenAI-shaped), else the
    prompt text (completion models)."""
    if not isinstance(inputs, dict):
        return inputs if isinstance(inputs, str) else None
    messages = inputs.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], list):
        messages = messages[0]  # LangChain: one list per prompt of the batch
    if isinstance(messages, list) and messages:
        return [m for m in (_message(m) for m in messages) if m is not None]
    prompts = inputs.get("prompts") or inputs.get("prompt") or inputs.get("input")
    if isinstance(prompts, list) and prompts:
        return str(prompts[0])
    return prompts if isinstance(prompts, str) else json.dumps(inputs, ensure_ascii=False)


def run_output(outputs: object) -> str | None:
    """A run's response text: LangChain generations, OpenAI choices, or an output/content field."""
    if not isinstance(outputs, dict):
        return outputs if isinstance(outputs, str) else None
    generations = outputs.get("generations")
    if isinstance(generations, list) and generations:
        first = generations[0][0] if isinstance(generations[0], list) and generations[0] else generations[0]
        if isinstance(first, dict):
            message = _message(first.get("message")) if first.get("message") else None
            return first.get("text") or (message or {}).get("content")
    choices = outputs.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = _message(choices[0].get("message")) if choices[0].get("message") else None
        return (message or {}).get("content") or choices[0].get("text")
    for key in ("output", "content", "text"):
        if isinstance(outputs.get(key), str):
            return outputs[key]
    return json.dumps(outputs, ensure_ascii=False)


@dataclass
class LangsmithFeedback:
    records: list[PulledRecord] = field(default_factory=list)
    not_feedback: Counter = field(default_factory=Counter)


def langsmith_feedback(http: Http, session: str, start: dt.datetime, end: dt.datetime, names: dict[str, str], annotator_kinds: list[str] | None) -> LangsmithFeedback:
    """The feedback given on the project in [start, end)."""
    source = "langsmith feedback"
    out = LangsmithFeedback()
    position, offset = 0, 0
    while True:
        params = [("session", session), ("min_created_at", start.isoformat()), ("max_created_at", end.isoformat()), ("limit", str(FEEDBACK_PAGE)), ("offset", str(offset))]
        response = http.get("/api/v1/feedback", params=params)
        try:
            items = response.json()
        except ValueError:
            items = None
        if not isinstance(items, list):
            position += 1
            out.records.append(PulledRecord(source, position, response.text[:RAW_CHARS], problem=f"feedback page at offset {offset} is not a list"))
            return out
        for item in items:
            position += 1
            record = feedback_record(source, position, item, names, annotator_kinds)
            if isinstance(record, str):
                out.not_feedback[record] += 1
            else:
                out.records.append(record)
        if not items:  # a server may cap a page below the limit asked for: only an empty page ends the list
            return out
        offset += len(items)


def feedback_record(source: str, position: int, item: object, names: dict[str, str], annotator_kinds: list[str] | None) -> PulledRecord | str:
    """One feedback as a feedback record; its key when it is not user feedback."""
    raw = json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)[:RAW_CHARS]
    if not isinstance(item, dict) or not item.get("id") or not item.get("key"):
        return PulledRecord(source, position, raw, problem="feedback has no " + ("key" if isinstance(item, dict) and item.get("id") else "id"))
    key = str(item["key"])
    origin = item.get("feedback_source") if isinstance(item.get("feedback_source"), dict) else {}
    annotator = FEEDBACK_SOURCES.get(str(origin.get("type") or "").lower())
    if annotator_kinds is not None and annotator and annotator not in {k.upper() for k in annotator_kinds}:
        return key
    if not item.get("run_id") and not item.get("trace_id"):
        return PulledRecord(source, position, raw, problem="feedback names no run or trace")
    correction = item.get("correction")
    correction = correction if isinstance(correction, str) else (json.dumps(correction, ensure_ascii=False) if correction else None)
    score, value = item.get("score"), item.get("value")
    extra = item.get("extra") if isinstance(item.get("extra"), dict) else {}
    metadata = {"feedback_key": key, "feedback_source": origin.get("type")} | extra
    if correction:
        fields = {"type": "correction", "value": correction, "comment": item.get("comment")}
    else:
        label = value if isinstance(value, str) else None
        number = float(score) if isinstance(score, bool | int | float) else (float(value) if isinstance(value, bool | int | float) else None)
        judged = annotation_feedback(Annotation(name=key, label=label, score=number, explanation=item.get("comment"), annotator_kind=annotator, metadata=extra), names, None)
        if judged is None:
            return key
        if judged.fields is None:
            return PulledRecord(source, position, raw, problem=judged.problem)
        fields = judged.fields
    return PulledRecord(
        source,
        position,
        raw,
        fields={"event_id": f"langsmith:{item['id']}", "trace_id": item.get("trace_id"), "span_id": item.get("run_id"), "timestamp": item.get("created_at"), **fields, "metadata": metadata},
    )


def _message(message: object) -> dict | None:
    """One chat message as `{role, content}`: OpenAI-shaped, LangChain's `{type, content}`, or its
    serialized form (`{"lc": 1, "id": [..., "HumanMessage"], "kwargs": {"content": …}}`)."""
    if not isinstance(message, dict):
        return None
    if "kwargs" in message and isinstance(message.get("id"), list):
        role = MESSAGE_ROLES.get(str(message["id"][-1]).lower(), str(message["id"][-1]))
        return {"role": role, "content": content_text((message.get("kwargs") or {}).get("content"))}
    role = message.get("role") or MESSAGE_ROLES.get(str(message.get("type") or "").lower(), message.get("type"))
    return {"role": str(role or ""), "content": content_text(message.get("content"))}


_FAR = dt.datetime.max.replace(tzinfo=dt.UTC)


def _stamp(value: object) -> dt.datetime:
    """An API timestamp (naive ones are UTC); the far future when there is none."""
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return _FAR
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _first(mapping: dict, *keys: str) -> str | None:
    for key in keys:
        if mapping.get(key) not in (None, ""):
            return str(mapping[key])
    return None


def exported_runs(files: list, start: dt.datetime, end: dt.datetime) -> Iterator[PulledRecord]:
    """The LLM runs that started in [start, end) in LangSmith bulk-export Parquet files (the run
    format; nested fields such as `inputs`, `outputs` and `extra` as JSON text or structs)."""
    for path in files:
        source = f"langsmith export {path.name}"
        try:
            with path.open("rb") as fh:
                table = pq.read_table(fh)
        except (OSError, ValueError) as err:
            yield PulledRecord(source, 1, path.name, problem=f"unreadable Parquet file: {str(err)[:200]}")
            continue
        for position, row in enumerate(table.to_pylist(), start=1):
            if row.get("run_type") not in (None, "llm"):
                continue
            run = {k: parsed(v) if k in ("inputs", "outputs", "extra", "events") else v for k, v in row.items()}
            for key in ("start_time", "end_time"):
                if isinstance(run.get(key), dt.datetime):
                    run[key] = run[key].isoformat()
            text = json.dumps(run, ensure_ascii=False, sort_keys=True, default=str)[:RAW_CHARS]
            missing = [k for k in ("id", "trace_id", "start_time") if not run.get(k)]
            if missing:
                yield PulledRecord(source, position, text, problem=f"run has no {missing[0]}")
            elif start <= _stamp(run["start_time"]) < end:
                yield PulledRecord(source, position, text, fields=run_fields({**run, "id": str(run["id"]), "trace_id": str(run["trace_id"])}))
