"""LLM spans as contract traces and the feedback they carry, under the two conventions in use:
OpenInference (`openinference.span.kind`, `llm.*`, `input.value`, `annotations.{i}.annotation.*`)
and the OTel GenAI semantic conventions (`gen_ai.*`, `gen_ai.evaluation.result` events).

Only LLM spans become traces. Feedback on a span targets that span when it is an LLM span; a
carrier span (one recorded after the fact to hold a judgement) targets the span it links to, else
its parent."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from feedback_loop.lib.sources.annotations import Annotation, annotation_feedback
from feedback_loop.lib.sources.payloads import parsed
from feedback_loop.lib.sources.spans import Span, iso_from_nanos

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
EVALUATION_EVENT = "gen_ai.evaluation.result"


def flat(attributes: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Attributes with nested objects (and lists of objects) spelled as dotted keys, the way OTLP
    carries them: `{"llm": {"input_messages": [{"message": {...}}]}}` -> `llm.input_messages.0.message.…`."""
    out: dict[str, object] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flat(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out |= flat({str(i): v for i, v in enumerate(value)}, f"{name}.")
        else:
            out[name] = value
    return out


def is_llm_span(attributes: dict[str, object]) -> bool:
    kind = attributes.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str):
        return operation in LLM_OPERATIONS
    return "gen_ai.request.model" in attributes or "gen_ai.response.model" in attributes


def trace_fields(span: Span) -> dict:
    """The contract trace fields of an LLM span."""
    attrs = flat(span.attributes)
    metadata = _metadata(attrs)
    for key, name in (("service.name", "service"), ("service.version", "service_version"), ("deployment.environment", "environment")):
        if (value := span.resource.get(key)) is not None:
            metadata.setdefault(name, value)
    provider = _first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    if provider is not None:
        metadata.setdefault("provider", provider)
    metadata |= {"span_name": span.name} | ({"status": span.status} if span.status else {})
    latency = (span.end_ns - span.start_ns) / 1e6 if span.start_ns and span.end_ns and span.end_ns >= span.start_ns else None
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "session_id": _text(_first(attrs, "session.id", "gen_ai.conversation.id")),
        "user_id": _text(_first(attrs, "user.id", "enduser.id")),
        "timestamp": iso_from_nanos(span.end_ns or span.start_ns),
        "model": _text(_first(attrs, "llm.model_name", "gen_ai.response.model", "gen_ai.request.model")),
        "prompt_version": _text(attrs.get("llm.prompt_template.version")),
        "input": input_messages(attrs),
        "output": output_text(attrs),
        "latency_ms": latency,
        "input_tokens": _first(attrs, "llm.token_count.prompt", "gen_ai.usage.input_tokens"),
        "output_tokens": _first(attrs, "llm.token_count.completion", "gen_ai.usage.output_tokens"),
        "metadata": metadata,
    }


def input_messages(attrs: dict[str, object]) -> list[dict] | str | None:
    """The chat that went in, as `[{role, content}]`, else the input text."""
    messages = _openinference_messages(attrs, "llm.input_messages")
    if messages:
        return messages
    genai = _genai_messages(attrs.get("gen_ai.input.messages"))
    if genai:
        system = _parts_text(parsed(attrs.get("gen_ai.system_instructions")))
        return ([{"role": "system", "content": system}] if system else []) + genai
    value = attrs.get("input.value")
    return value if isinstance(value, str) else None


def output_text(attrs: dict[str, object]) -> str | None:
    """The response: the last output message's text, else the output value."""
    messages = _openinference_messages(attrs, "llm.output_messages") or _genai_messages(attrs.get("gen_ai.output.messages"))
    if messages:
        return messages[-1]["content"]
    value = attrs.get("output.value")
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class SpanFeedback:
    """One judgement a span carries: its position on the span, when it was made, on which span, and
    what it says (None fields with a problem when it cannot be read)."""

    tag: str  # "annotation.0", "evaluation.1": unique on the span
    timestamp: str | None
    target: tuple[str, str]
    fields: dict | None
    problem: str | None
    name: str


def span_feedback(span: Span, names: dict[str, str], annotator_kinds: list[str] | None) -> Iterator[SpanFeedback | str]:
    """The feedback a span carries, mapped by `names`; the name of each judgement that is not
    feedback is yielded as a plain string, to be counted."""
    attrs = flat(span.attributes)
    target = (span.trace_id, span.span_id)
    if not is_llm_span(attrs):
        if span.links:
            target = span.links[0]
        elif span.parent_span_id:
            target = (span.trace_id, span.parent_span_id)
    when = iso_from_nanos(span.end_ns or span.start_ns)
    for index, annotation in _annotations(attrs):
        yield from _judged(f"annotation.{index}", when, target, annotation, names, annotator_kinds)
    for index, event in enumerate(span.events):
        if event.name != EVALUATION_EVENT:
            continue
        ev = flat(event.attributes)
        annotation = Annotation(
            name=str(ev.get("gen_ai.evaluation.name") or ""),
            label=_text(ev.get("gen_ai.evaluation.score.label")),
            score=_float(ev.get("gen_ai.evaluation.score.value")),
            explanation=_text(ev.get("gen_ai.evaluation.explanation")),
        )
        yield from _judged(f"evaluation.{index}", iso_from_nanos(event.time_ns) or when, target, annotation, names, annotator_kinds)


def _judged(tag: str, when: str | None, target: tuple[str, str], annotation: Annotation, names: dict[str, str], kinds: list[str] | None) -> Iterator[SpanFeedback | str]:
    if not annotation.name:
        yield SpanFeedback(tag, when, target, None, f"{tag} has no name", "")
        return
    judged = annotation_feedback(annotation, names, kinds)
    if judged is None:
        yield annotation.name
        return
    yield SpanFeedback(tag, when, target, judged.fields, judged.problem, annotation.name)


def _annotations(attrs: dict[str, object]) -> Iterator[tuple[int, Annotation]]:
    indexes = sorted({int(key.split(".")[1]) for key in attrs if key.startswith("annotations.") and key.split(".")[1].isdigit()})
    for i in indexes:
        prefix = f"annotations.{i}.annotation."
        metadata = parsed(attrs.get(prefix + "metadata"))
        yield (
            i,
            Annotation(
                name=str(attrs.get(prefix + "name") or ""),
                label=_text(attrs.get(prefix + "label")),
                score=_float(attrs.get(prefix + "score")),
                explanation=_text(attrs.get(prefix + "explanation")),
                annotator_kind=_text(attrs.get(prefix + "annotator_kind")),
                metadata=metadata if isinstance(metadata, dict) else None,
            ),
        )


def _openinference_messages(attrs: dict[str, object], prefix: str) -> list[dict]:
    indexes = sorted({int(key[len(prefix) + 1 :].split(".")[0]) for key in attrs if key.startswith(prefix + ".") and key[len(prefix) + 1 :].split(".")[0].isdigit()})
    messages = []
    for i in indexes:
        base = f"{prefix}.{i}.message."
        content = attrs.get(base + "content")
        if not isinstance(content, str):
            parts = sorted((k for k in attrs if k.startswith(base + "contents.") and k.endswith(".message_content.text")), key=lambda k: int(k.split(".")[-3]) if k.split(".")[-3].isdigit() else 0)
            content = "\n".join(str(attrs[k]) for k in parts) if parts else None
        messages.append({"role": str(attrs.get(base + "role") or ""), "content": content})
    return messages


def _genai_messages(value: object) -> list[dict]:
    messages = parsed(value)
    if not isinstance(messages, list):
        return []
    out = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content") if isinstance(message.get("content"), str) else _parts_text(message.get("parts"))
            out.append({"role": str(message.get("role") or ""), "content": content})
    return out


def _parts_text(parts: object) -> str | None:
    if not isinstance(parts, list):
        return None
    texts = [str(p.get("content")) for p in parts if isinstance(p, dict) and p.get("type", "text") == "text" and p.get("content") is not None]
    return "\n".join(texts) if texts else None


def _metadata(attrs: dict[str, object]) -> dict:
    value = attrs.get("metadata")
    data = parsed(value)
    if isinstance(data, dict):
        return dict(data)
    nested = {k[len("metadata.") :]: v for k, v in attrs.items() if k.startswith("metadata.")}
    return nested if nested else ({} if value is None else {"metadata": value})


def _first(attrs: dict[str, object], *keys: str) -> object:
    for key in keys:
        if attrs.get(key) is not None:
            return attrs[key]
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
