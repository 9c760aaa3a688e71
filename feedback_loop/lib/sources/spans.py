"""OpenTelemetry spans in one plain shape, whatever carried them: OTLP JSON (ids in hex or
base64, attribute values as `{stringValue|intValue|doubleValue|boolValue|arrayValue|kvlistValue|
bytesValue}`), OTLP protobuf, or a store's REST API."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass, field

_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int | None
    attributes: dict[str, object]


@dataclass(frozen=True)
class Span:
    trace_id: str  # lower-case hex
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int | None
    end_ns: int | None
    attributes: dict[str, object]
    events: list[SpanEvent] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace_id, span_id) of linked spans
    resource: dict[str, object] = field(default_factory=dict)
    status: str | None = None


class BadSpan(ValueError):
    """A span that cannot be read: the message is the quarantine reason."""


def otlp_value(value: object) -> object:
    """An OTLP JSON `AnyValue` as a plain value (lists and dicts for arrays and key-value lists)."""
    if not isinstance(value, dict) or not value:
        return None
    (kind, inner), *_ = value.items()
    if kind == "stringValue":
        return inner if isinstance(inner, str) else str(inner)
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "boolValue":
        return bool(inner)
    if kind == "bytesValue":
        return str(inner)
    if kind == "arrayValue":
        return [otlp_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return otlp_attributes((inner or {}).get("values", []))
    raise BadSpan(f"attribute value of unknown type '{kind}'")


def otlp_attributes(pairs: object) -> dict[str, object]:
    """OTLP JSON `[{key, value}]` as a dict."""
    if pairs is None:
        return {}
    if not isinstance(pairs, list):
        raise BadSpan("attributes are not a list of {key, value}")
    out = {}
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise BadSpan("an attribute has no key")
        try:
            out[pair["key"]] = otlp_value(pair.get("value"))
        except (TypeError, ValueError) as err:
            raise BadSpan(f"attribute '{pair['key']}' is unreadable: {err}") from None
    return out


def otlp_id(value: object, size: int, what: str) -> str | None:
    """A trace id (16 bytes) or span id (8 bytes) as lower-case hex, from hex or base64; None when empty."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadSpan(f"{what} is not a string")
    if len(value) == 2 * size and _HEX.match(value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadSpan(f"{what} is neither hex nor base64: {value[:80]!r}") from None
        if len(raw) != size:
            raise BadSpan(f"{what} is not {size} bytes: {value[:80]!r}")
    if not any(raw):
        raise BadSpan(f"{what} is all zeros")
    return raw.hex()


def nanos(value: object, what: str) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        nanos = int(value)
    except (TypeError, ValueError):
        raise BadSpan(f"{what} is not a number of nanoseconds: {str(value)[:80]!r}") from None
    if not 0 < nanos < 253402300800 * 10**9:  # year 10000
        raise BadSpan(f"{what} is out of range: {nanos}")
    return nanos


def otlp_span(span: object, resource: dict[str, object]) -> Span:
    """One OTLP JSON span; BadSpan when it cannot be read."""
    if not isinstance(span, dict):
        raise BadSpan("span is not a JSON object")
    trace_id = otlp_id(span.get("traceId"), 16, "traceId")
    span_id = otlp_id(span.get("spanId"), 8, "spanId")
    if trace_id is None or span_id is None:
        raise BadSpan("span has no " + ("traceId" if trace_id is None else "spanId"))
    events = []
    for event in span.get("events") or []:
        if not isinstance(event, dict):
            raise BadSpan("a span event is not a JSON object")
        events.append(SpanEvent(str(event.get("name") or ""), nanos(event.get("timeUnixNano"), "event timeUnixNano"), otlp_attributes(event.get("attributes"))))
    links = []
    for link in span.get("links") or []:
        if not isinstance(link, dict):
            raise BadSpan("a span link is not a JSON object")
        target = (otlp_id(link.get("traceId"), 16, "link traceId"), otlp_id(link.get("spanId"), 8, "link spanId"))
        if None not in target:
            links.append(target)
    status = span.get("status") or {}
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=otlp_id(span.get("parentSpanId"), 8, "parentSpanId"),
        name=str(span.get("name") or ""),
        start_ns=nanos(span.get("startTimeUnixNano"), "startTimeUnixNano"),
        end_ns=nanos(span.get("endTimeUnixNano"), "endTimeUnixNano"),
        attributes=otlp_attributes(span.get("attributes")),
        events=events,
        links=links,
        resource=resource,
        status=str(status.get("code")) if isinstance(status, dict) and status.get("code") is not None else None,
    )


def iso_from_nanos(value: int | None) -> str | None:
    """Nanoseconds since the epoch as an ISO-8601 UTC timestamp (microseconds)."""
    if value is None:
        return None
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value // 1000)).isoformat()


def nanos_from_iso(text: object, what: str) -> int | None:
    """An ISO-8601 timestamp (as a REST API gives it) as nanoseconds since the epoch."""
    if text in (None, ""):
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise BadSpan(f"{what} is not ISO-8601: {str(text)[:80]!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
