"""Which stretch of time a partition pulls from a store.

A partition is a UTC day. A nightly run pulls from the end of the previous night's window back
by an overlap, so a record the store indexed after that night's run (its timestamp already past)
is still found; the record then belongs to the partition that first sees it. Records pulled
again in the overlap are dropped as duplicates of the day that holds them. A backfill, or a
night with no earlier window, pulls exactly its day; a rerun (a backfill's too) pulls the window it
pulled first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class PullWindow:
    day: str  # the partition
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC: the end of the day

    @property
    def accept_from(self) -> str:
        """The first day whose records this partition takes."""
        return self.start.date().isoformat()


def day_start(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


def pull_window(day: str, overlap: dt.timedelta, first_pull: dt.datetime | None, cursor: dt.datetime | None, backfill: bool) -> PullWindow:
    """The window of partition `day`: `first_pull` is where its earlier run started, if any;
    `cursor` the end of the newest window pulled before."""
    start, end = day_start(day), day_start(day) + dt.timedelta(days=1)
    if first_pull is not None:  # a rerun, in a backfill or not: what it took first stays with it
        return PullWindow(day, min(first_pull, start), end)
    if backfill or cursor is None or cursor > start:  # no night before it, or an older day run again
        return PullWindow(day, start, end)
    return PullWindow(day, start - overlap, end)
