"""Trace days as ISO dates."""

import datetime as dt


def days_ending(day: str, span: int) -> list[str]:
    """The `span` + 1 trace days ending on `day`, oldest first."""
    last = dt.date.fromisoformat(day)
    return [(last - dt.timedelta(days=back)).isoformat() for back in range(span, -1, -1)]
