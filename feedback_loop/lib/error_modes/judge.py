"""An optional LLM judge for the error modes the offline path is unsure of.

The judge is any OpenAI-compatible chat endpoint (`POST {base_url}/chat/completions`). It sees the
taxonomy, the system prompt, the user's prompt, the response and what the user did (reason tags,
comments, edit), and answers with JSON `{"mode": <name>, "reason": <one sentence>}`.

- Which rows: those decided with no specific evidence, by the classifier, or by contested votes
  (confidence below `max_confidence`), least confident first, then by trace id.
- Budget: at most `max_calls` requests per run; rows beyond it keep their offline mode.
- Cache: a decision is keyed by the SHA-256 of the model, the prompt template's version and the
  messages, and read back instead of calling again: a rerun gives the same modes, and cached rows
  cost nothing.
- Failures never fail the run: an unreachable or refusing endpoint stops the judging for the run,
  an answer that is not JSON or names no mode of the taxonomy leaves the row as it was; both are
  counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from feedback_loop.lib.error_modes.taxonomy import Taxonomy

TEMPLATE_VERSION = "1"
TEXT_CHARS = 2_000  # of each text sent: enough to judge, bounded cost
JUDGE_CONFIDENCE = 0.7
UNSURE_SOURCES = ("none", "classifier")


@dataclass
class JudgeTally:
    unsure: int = 0
    cached: int = 0
    called: int = 0
    decided: int = 0
    changed: int = 0
    over_budget: int = 0
    invalid: int = 0
    unavailable: str | None = None
    problems: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "judge_unsure_rows": self.unsure,
            "judge_cached": self.cached,
            "judge_calls": self.called,
            "judge_decided": self.decided,
            "judge_changed_mode": self.changed,
            "judge_over_budget": self.over_budget,
            "judge_invalid_answers": self.invalid,
            "judge_unavailable": self.unavailable or "no",
        }


def unsure_rows(modes: pd.DataFrame, max_confidence: float) -> pd.Index:
    """The rows the offline path is unsure of, least confident first, then by trace id."""
    unsure = modes["evidence_source"].isin(UNSURE_SOURCES) | (modes["confidence"] < max_confidence)
    ordered = modes[unsure.to_numpy()].sort_values(["confidence", "trace_id"], kind="stable")
    return ordered.index


def judge_messages(case: dict, taxonomy: Taxonomy) -> list[dict]:
    """The chat messages asking for one negative trace's mode."""
    modes = "\n".join(f"- {m.name}: {m.description}" for m in taxonomy.modes)
    feedback = {k: _clip(case.get(k)) for k in ("reason_tags", "comments", "edit_text") if _clip(case.get(k))}
    return [
        {
            "role": "system",
            "content": "You classify why a user was unhappy with an AI assistant's response into exactly one error mode.\n"
            f"Modes:\n{modes}\n"
            "Judge the response, not the user's click: a reason tag may name the wrong mode. "
            'Answer with JSON only: {"mode": "<one mode name>", "reason": "<one sentence>"}.',
        },
        {
            "role": "user",
            "content": json.dumps(
                {"conversation": _clip(case.get("input")), "prompt": _clip(case.get("prompt")), "response": _clip(case.get("output")), "user_feedback": feedback},
                ensure_ascii=False,
                sort_keys=True,
            ),
        },
    ]


def cache_key(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps([model, TEMPLATE_VERSION, messages], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def parse_answer(content: str, taxonomy: Taxonomy) -> tuple[str, str] | None:
    """(mode, reason) from the judge's answer, or None when it is not JSON naming a mode."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("mode") not in taxonomy.names():
        return None
    return str(answer["mode"]), " ".join(str(answer.get("reason", "")).split())[:200]


def apply_judge(
    modes: pd.DataFrame,
    cases: pd.DataFrame,
    ask: Callable[[list[dict]], str],
    cache_get: Callable[[str], str | None],
    cache_put: Callable[[str, str], None],
    model: str,
    taxonomy: Taxonomy,
    max_calls: int,
    max_confidence: float,
) -> tuple[pd.DataFrame, JudgeTally]:
    """`modes` with the judge's decisions on its unsure rows (`cases` holds their texts, by trace id).

    `ask` sends messages and returns the answer's text (raising `RuntimeError` when the endpoint
    fails); `cache_get` / `cache_put` read and write answers by key."""
    out = modes.copy()
    tally = JudgeTally()
    texts = cases.drop_duplicates("trace_id", keep="last").set_index("trace_id")
    rows = unsure_rows(out, max_confidence)
    tally.unsure = len(rows)
    for row in rows:
        trace_id = out.at[row, "trace_id"]
        if trace_id not in texts.index:
            continue
        messages = judge_messages(texts.loc[trace_id].to_dict(), taxonomy)
        key = cache_key(model, messages)
        content = cache_get(key)
        if content is not None:
            tally.cached += 1
        elif tally.unavailable is not None or tally.called >= max_calls:
            tally.over_budget += tally.unavailable is None
            continue
        else:
            try:
                content = ask(messages)
            except RuntimeError as err:
                tally.unavailable = str(err)[:300]
                continue
            tally.called += 1
            cache_put(key, content)
        decision = parse_answer(content, taxonomy)
        if decision is None:
            tally.invalid += 1
            continue
        mode, reason = decision
        tally.decided += 1
        tally.changed += mode != out.at[row, "mode"]
        out.at[row, "mode"] = mode
        out.at[row, "mode_id"] = taxonomy.ids()[mode]
        out.at[row, "confidence"] = JUDGE_CONFIDENCE
        out.at[row, "evidence"] = f"judge {model}: {reason}" if reason else f"judge {model}"
        out.at[row, "evidence_source"] = "judge"
    return out, tally


def _clip(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    return str(value)[:TEXT_CHARS]
