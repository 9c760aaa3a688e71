"""LAMP writer edits of model drafts -> landing traces (the draft) and `edit` events (the final text)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def lamp_to_landing(paths: list[Path], start: dt.datetime) -> tuple[list[dict], list[dict]]:
    """One single-turn session per record: instruction -> preedit, then an edit to postedit."""
    traces: list[dict] = []
    events: list[dict] = []
    n = 0
    for path in paths:
        for record in json.loads(path.read_text(encoding="utf-8")):
            when = start + dt.timedelta(minutes=5 * n)
            trace_id = f"lamp-{path.stem}-{record['id']}"
            traces.append(
                {
                    "trace_id": trace_id,
                    "session_id": f"session-{trace_id}",
                    "user_id": f"writer-{path.stem}",
                    "timestamp": when.isoformat(),
                    "model": record.get("source"),
                    "prompt_version": "lamp",
                    "input": record["instruction"],
                    "output": record["preedit"],
                    "metadata": {"type": record.get("type")},
                }
            )
            events.append(
                {
                    "event_id": f"{trace_id}-edit",
                    "trace_id": trace_id,
                    "timestamp": (when + dt.timedelta(minutes=3)).isoformat(),
                    "type": "edit",
                    "value": record["postedit"],
                }
            )
            n += 1
    return traces, events
