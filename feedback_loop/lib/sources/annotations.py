"""Named judgements on a response (Phoenix and OpenInference annotations, OTel GenAI evaluation
results) as feedback events, by a configurable mapping from annotation name to event kind.

An annotation whose name is not mapped is not user feedback (an LLM judge's `correctness`, say):
it is counted by name, not turned into an event. One that is mapped but says nothing usable (a
thumbs annotation whose label is neither positive nor negative) is a problem for the quarantine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Annotation name (case-insensitive) -> what it means: a thumb, a rating, a comment, a correction.
DEFAULT_NAMES: dict[str, str] = {
    "user_feedback": "thumbs",
    "feedback": "thumbs",
    "thumbs": "thumbs",
    "thumbs_up_down": "thumbs",
    "helpful": "thumbs",
    "rating": "rating",
    "user_rating": "rating",
    "stars": "rating",
    "comment": "comment",
    "user_comment": "comment",
    "correction": "correction",
    "user_correction": "correction",
}
MEANINGS = ("thumbs", "rating", "comment", "correction")
POSITIVE = frozenset({"thumbs_up", "up", "positive", "good", "helpful", "correct", "yes", "like", "liked", "true", "1", "+1", "👍"})
NEGATIVE = frozenset({"thumbs_down", "down", "negative", "bad", "unhelpful", "incorrect", "wrong", "no", "dislike", "disliked", "false", "0", "-1", "👎"})


@dataclass(frozen=True)
class Annotation:
    name: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    annotator_kind: str | None = None  # HUMAN | LLM | CODE, when the store says
    metadata: dict | None = None


@dataclass(frozen=True)
class Judged:
    """An annotation read as feedback: the event's fields, or why it cannot be one, or None when
    the annotation is not feedback at all."""

    fields: dict | None = None
    problem: str | None = None


def annotation_feedback(annotation: Annotation, names: dict[str, str], annotator_kinds: list[str] | None) -> Judged | None:
    """The feedback fields (`type`, `value`, `reason`, `comment`, `metadata`) an annotation stands
    for under the name mapping `names`; None when its name is not mapped or its annotator kind is
    not one of `annotator_kinds` (None: any kind)."""
    meaning = names.get(annotation.name.strip().lower())
    if meaning is None:
        return None
    kind = (annotation.annotator_kind or "").upper()
    if annotator_kinds is not None and kind and kind not in {k.upper() for k in annotator_kinds}:
        return None
    metadata = {"annotation": annotation.name} | ({"annotator_kind": kind} if kind else {}) | (annotation.metadata or {})
    reason = _text((annotation.metadata or {}).get("reason"))
    score = annotation.score if annotation.score is not None and math.isfinite(annotation.score) else None
    explanation = _text(annotation.explanation)
    if meaning == "thumbs":
        label = (_text(annotation.label) or "").lower()
        if label in POSITIVE or (not label and score is not None and score > 0):
            event = "thumbs_up"
        elif label in NEGATIVE or (not label and score is not None and score <= 0):
            event = "thumbs_down"
        else:
            return Judged(problem=f"annotation '{annotation.name}' is neither positive nor negative (label {annotation.label!r}, score {annotation.score!r})")
        return Judged(fields={"type": event, "reason": reason, "comment": explanation, "metadata": metadata})
    if meaning == "rating":
        value = score if score is not None else _number(annotation.label)
        if value is None:
            return Judged(problem=f"annotation '{annotation.name}' has no numeric score for a rating")
        return Judged(fields={"type": "rating", "value": _plain(value), "reason": reason, "comment": explanation, "metadata": metadata})
    text = explanation or _text(annotation.label)
    if not text:
        return Judged(problem=f"annotation '{annotation.name}' has no text for a {meaning}")
    if meaning == "comment":
        return Judged(fields={"type": "comment", "value": text, "comment": text, "reason": reason, "metadata": metadata})
    return Judged(fields={"type": "correction", "value": text, "reason": reason, "metadata": metadata})


def checked_names(names: dict[str, str]) -> dict[str, str]:
    """The mapping with lower-case names; a meaning outside MEANINGS is a configuration error."""
    bad = {k: v for k, v in names.items() if v not in MEANINGS}
    if bad:
        raise ValueError(f"annotation names map to unknown meanings {bad}: use one of {', '.join(MEANINGS)}")
    return {k.strip().lower(): v for k, v in names.items()}


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(value: float) -> str:
    """A score as the contract's value text: `4`, not `4.0`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
