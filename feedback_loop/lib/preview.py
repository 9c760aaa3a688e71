"""Markdown previews for asset metadata: what a person sees in the Dagster UI, so the text of
every cell is scrubbed of personal data and secrets (before it is shortened) and user ids are
not shown."""

from __future__ import annotations

import json

import pandas as pd

from feedback_loop.lib.datasets.privacy import scrub_text

MAX_CELL = 80
HIDDEN_COLUMNS = ("user_id",)


def markdown_table(df: pd.DataFrame, max_rows: int = 10) -> str:
    """A small markdown table; cells scrubbed, then shortened, pipes and newlines escaped."""
    if df.empty:
        return "_no rows_"
    head = df.head(max_rows)
    cells = head.astype("string").fillna("").map(_cell)
    for column in HIDDEN_COLUMNS:
        if column in cells.columns:
            cells[column] = cells[column].where(cells[column] == "", "(hidden)")
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    text = _scrubbed(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _scrubbed(text: str) -> str:
    """The cell scrubbed; JSON text (metadata, messages) value by value, as its strings read unescaped."""
    if text[:1] in ("{", "["):
        try:
            return json.dumps(_scrubbed_json(json.loads(text)), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    return scrub_text(text)[0]


def _scrubbed_json(value):
    if isinstance(value, str):
        return scrub_text(value)[0]
    if isinstance(value, list):
        return [_scrubbed_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _scrubbed_json(item) for key, item in value.items()}
    return value
