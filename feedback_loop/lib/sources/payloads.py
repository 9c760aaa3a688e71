"""Small readers of the payloads stores keep as text or in provider shapes."""

from __future__ import annotations

import json


def parsed(value: object) -> object:
    """The JSON a text holds, else the value as it is (a plain text stays text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def content_text(content: object) -> str | None:
    """Message content as text: a string, or the text parts of a list of parts (`{type: text,
    text}`) joined by newlines; anything else as JSON."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(p.get("text")) for p in content if isinstance(p, dict) and p.get("type", "text") == "text" and p.get("text") is not None]
        return "\n".join(texts) if texts else json.dumps(content, ensure_ascii=False)
    return json.dumps(content, ensure_ascii=False)
