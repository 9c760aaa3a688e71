"""Markdown previews for asset metadata."""

from __future__ import annotations

import pandas as pd

MAX_CELL = 80


def markdown_table(df: pd.DataFrame, max_rows: int = 10) -> str:
    """A small markdown table; long cells are shortened, pipes and newlines escaped."""
    if df.empty:
        return "_no rows_"
    head = df.head(max_rows)
    cells = head.astype("string").fillna("").map(_cell)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
