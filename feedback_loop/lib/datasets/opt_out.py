"""Who opted out, and which traces that keeps out of every export.

User ids are compared after Unicode normalization (NFKC), trimming and case folding, so ` Alice `,
`alice` and `ＡＬＩＣＥ` are one user. A trace is kept out when its own user opted out, and when any
feedback event on it came from a user who did: an edit, a correction or a comment is that user's
text even on someone else's trace, and a trace logged without a user id is known by its feedback.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import pandas as pd
from upath import UPath

from feedback_loop.lib.columns import is_in, per_distinct
from feedback_loop.lib.tables import Table

DEFAULT_OPT_OUT = "data/opt_out_users.txt"  # read when no list is configured, if it exists


def user_key(user_id: str) -> str:
    """The form user ids are compared in."""
    return unicodedata.normalize("NFKC", user_id).strip().casefold()


def read_opt_out(path: str | None) -> set[str]:
    """The users on the opt-out list at `path` (local or fsspec URL). A path that is set but is not
    a file raises (a mistyped path must not mean "nobody opted out"); unset, `DEFAULT_OPT_OUT` is
    read when it exists, else nobody opted out."""
    file = UPath(path or DEFAULT_OPT_OUT)
    if not file.is_file():
        if path:
            raise FileNotFoundError(f"opt-out list {path} not found: datasets are not published without it (unset FEEDBACK_LOOP_OPT_OUT if nobody opted out)")
        return set()
    return opt_out_list(file.read_text())


def opt_out_list(text: str) -> set[str]:
    """The users of an opt-out file: one id per line, `#` starts a comment line, blank lines skipped."""
    return {user_key(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def user_keys(user_ids: pd.Series) -> pd.Series:
    """`user_key` of each id (missing stays missing), once per distinct id."""
    return per_distinct(user_ids, lambda ids: ids.map(lambda u: None if u is pd.NA else user_key(u)).astype("string"))


def opted_out_traces(traces: Table, events: Table, opted_out: set[str]) -> pd.Series:
    """The trace ids to keep out: of the opted-out users' traces, and of the traces any of their
    feedback events is about."""
    if not opted_out:
        return pd.Series(dtype="string")
    keys = pd.Series(sorted(opted_out), dtype="string")
    frames = []
    for table in (traces, events):
        rows = table.read(columns=["trace_id", "user_id"])
        frames.append(rows.loc[is_in(user_keys(rows["user_id"]), keys), "trace_id"])
    found = pd.concat(frames, ignore_index=True).dropna().astype("string")
    return found.drop_duplicates().sort_values(ignore_index=True)


@dataclass(frozen=True)
class OptOut:
    """The users who opted out (`user_key`s) and the traces that keeps out of an export."""

    users: frozenset[str]
    traces: pd.Series  # trace ids, `opted_out_traces`

    @classmethod
    def of(cls, users: set[str], traces: Table, events: Table) -> OptOut:
        return cls(frozenset(users), opted_out_traces(traces, events, set(users)))
