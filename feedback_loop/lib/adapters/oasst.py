"""Open-Assistant conversation trees -> landing traces and feedback.

Each tree is a session; each assistant message a trace whose input is the conversation so far.
Sibling assistant replies to one prompt are regenerations: they are emitted worst-ranked first,
each followed by a `regenerate` event, so the best-ranked reply (rank 0) is the accepted one.
`+1` / `-1` emojis become thumbs from distinct voters. Timestamps are synthetic (the export has
none): trees start ten minutes apart from `start`, turns thirty seconds apart.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

ROLE = {"prompter": "user", "assistant": "assistant"}


def oasst_to_landing(path: Path, start: dt.datetime) -> tuple[list[dict], list[dict]]:
    """Traces and feedback events for every tree of an OASST trees JSONL file."""
    traces: list[dict] = []
    events: list[dict] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        tree = json.loads(line)
        clock = [start + dt.timedelta(minutes=10 * i)]
        _walk(tree["prompt"], [], tree["message_tree_id"], clock, traces, events)
    return traces, events


def _walk(message: dict, history: list[dict], session: str, clock: list[dt.datetime], traces: list, events: list) -> None:
    history = history + [{"role": ROLE[message["role"]], "content": message["text"]}]
    replies = [r for r in message.get("replies", []) if not r.get("deleted")]
    if message["role"] == "prompter":
        ranked = sorted(replies, key=lambda r: -(r["rank"] if r.get("rank") is not None else -1))
        for n, reply in enumerate(ranked):
            clock[0] += dt.timedelta(seconds=30)
            traces.append(_trace(reply, history, session, clock[0]))
            events.extend(_thumbs(reply, session, clock[0]))
            if n < len(ranked) - 1:
                events.append(_event(reply, session, clock[0] + dt.timedelta(seconds=20), "regenerate", "regen"))
        for reply in ranked:
            _walk(reply, history, session, clock, traces, events)
    else:
        for reply in replies:
            clock[0] += dt.timedelta(seconds=30)
            _walk(reply, history, session, clock, traces, events)


def _trace(message: dict, history: list[dict], session: str, when: dt.datetime) -> dict:
    return {
        "trace_id": message["message_id"],
        "session_id": session,
        "user_id": f"oasst-{session[:8]}",
        "timestamp": when.isoformat(),
        "model": message.get("model_name") or "oasst-human",
        "prompt_version": "oasst",
        "input": history,
        "output": message["text"],
        "metadata": {"rank": message.get("rank"), "synthetic": message.get("synthetic"), "emojis": message.get("emojis", {})},
    }


def _thumbs(message: dict, session: str, when: dt.datetime) -> Iterable[dict]:
    emojis = message.get("emojis") or {}
    for emoji, kind in (("+1", "thumbs_up"), ("-1", "thumbs_down")):
        for voter in range(int(emojis.get(emoji, 0))):
            event = _event(message, session, when + dt.timedelta(seconds=5 + voter), kind, f"{kind}-{voter}")
            event["user_id"] = f"voter-{voter}"
            yield event


def _event(message: dict, session: str, when: dt.datetime, kind: str, suffix: str) -> dict:
    return {
        "event_id": f"{message['message_id']}-{suffix}",
        "trace_id": message["message_id"],
        "session_id": session,
        "timestamp": when.isoformat(),
        "type": kind,
    }
