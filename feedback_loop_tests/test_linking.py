"""Linking feedback events to traces: ids, session + time, regenerate, orphans."""

import pandas as pd

from feedback_loop.lib.linking import events_about_day, link_feedback
from feedback_loop.lib.tables import FrameTable
from feedback_loop_tests.frames import events, traces

GAP = pd.Timedelta(hours=1)


def link(ev, tr):
    result = link_feedback(ev, tr, GAP)
    return result.linked.set_index("event_id"), result.orphans.set_index("event_id")


def test_links_by_span_then_trace_then_session_time():
    tr = traces(
        {"trace_id": "a", "t": 0},
        {"trace_id": "b", "t": 100, "span_id": "b-span"},
        {"trace_id": "c", "t": 200, "session_id": "s2"},
    )
    ev = events(
        {"span_id": "b-span", "type": "thumbs_up", "t": 150},
        {"trace_id": "a", "type": "copy", "t": 500},
        {"session_id": "s1", "type": "thumbs_down", "t": 120},  # latest trace of s1 at or before: b
        {"session_id": "s2", "type": "copy", "t": 250},
    )
    linked, orphans = link(ev, tr)
    assert orphans.empty
    assert linked.loc["e0", ["trace_id", "link_method"]].tolist() == ["b", "by_span"]
    assert linked.loc["e1", ["trace_id", "span_id", "link_method"]].tolist() == ["a", "a", "by_trace"]
    assert linked.loc["e2", ["trace_id", "link_method"]].tolist() == ["b", "by_session_time"]
    assert linked.loc["e3", "trace_id"] == "c"


def test_unknown_ids_and_sessions_become_orphans_with_reasons():
    tr = traces({"trace_id": "a", "t": 0})
    ev = events(
        {"trace_id": "zzz", "session_id": "s1", "type": "thumbs_down", "t": 10},  # never guessed onto `a`
        {"span_id": "nope", "type": "copy", "t": 10},
        {"session_id": "other", "type": "copy", "t": 10},
        {"session_id": "s1", "type": "copy", "t": -50},  # before the session's first trace
        {"session_id": "s1", "type": "copy", "t": 7200},  # beyond the gap
    )
    linked, orphans = link(ev, tr)
    assert linked.empty
    assert orphans["orphan_reason"].to_dict() == {
        "e0": "trace_id not found among traces of the linking window",
        "e1": "span_id not found among traces of the linking window",
        "e2": "session_id not found among traces of the linking window",
        "e3": "no trace of the session at or before the event within the gap",
        "e4": "no trace of the session at or before the event within the gap",
    }


def test_regenerate_belongs_to_the_response_it_replaced():
    tr = traces({"trace_id": "old", "t": 0}, {"trace_id": "new", "t": 60})
    ev = events(
        {"session_id": "s1", "type": "regenerate", "t": 55},  # no id: the latest trace before the click
        {"trace_id": "new", "type": "regenerate", "t": 55},  # a client that tags the new response
        {"trace_id": "old", "type": "regenerate", "t": 55},
    )
    linked, _ = link(ev, tr)
    assert linked["trace_id"].tolist() == ["old", "old", "old"]
    assert linked.loc["e1", "link_method"] == "by_trace_regenerate_previous"


def test_regenerate_as_first_event_of_a_session_is_an_orphan():
    tr = traces({"trace_id": "first", "t": 60})
    linked, orphans = link(events({"trace_id": "first", "type": "regenerate", "t": 30}), tr)
    assert linked.empty
    assert orphans.loc["e0", "orphan_reason"] == "regenerate with no earlier trace in the session"


def test_feedback_for_a_trace_of_an_earlier_partition_keeps_its_trace_date():
    tr = traces({"trace_id": "a", "t": -3 * 86400})
    linked, _ = link(events({"trace_id": "a", "type": "thumbs_down", "t": 0}), tr)
    assert linked.loc["e0", "trace_date"] == "2026-11-17"
    assert linked.loc["e0", "partition_date"] == "2026-11-20"


def test_events_out_of_order_link_the_same():
    tr = traces({"trace_id": "a", "t": 0}, {"trace_id": "b", "t": 100})
    ev = events(
        {"session_id": "s1", "type": "copy", "t": 150},
        {"session_id": "s1", "type": "copy", "t": 50},
    )
    linked, _ = link(ev, tr)
    assert linked["trace_id"].to_dict() == {"e0": "b", "e1": "a"}


def test_every_event_is_linked_or_orphaned_exactly_once():
    tr = traces({"trace_id": "a", "t": 0})
    ev = events(*({"session_id": "s1" if i % 2 else "x", "type": "copy", "t": i} for i in range(50)))
    result = link_feedback(ev, tr, GAP)
    assert sorted(result.linked["event_id"].tolist() + result.orphans["event_id"].tolist()) == sorted(ev["event_id"])


def test_the_events_about_a_trace_day_come_from_that_day_and_the_days_after_it():
    day = 86400
    tr = traces({"trace_id": "early", "t": -day}, {"trace_id": "today", "t": 0}, {"trace_id": "later", "t": day})
    ev = events(
        {"trace_id": "today", "type": "thumbs_up", "t": 10},
        {"trace_id": "early", "type": "copy", "t": 20},  # late feedback on the day before's trace
        {"trace_id": "today", "type": "copy", "t": 2 * day},  # late feedback, two days on
        {"trace_id": "later", "type": "thumbs_down", "t": day + 10},
        {"trace_id": "today", "type": "edit", "value": "better", "t": 30},
    )
    linked = FrameTable(link(ev, tr)[0].reset_index())
    today = linked.frame.loc[linked.frame["trace_id"] == "today", "partition_date"].iloc[0]
    got = events_about_day(linked, today, ["event_id", "type", "value"])
    assert got["event_id"].tolist() == ["e0", "e2", "e4"]  # in the table's order
    assert got.columns.tolist() == ["event_id", "type", "value"] and got["value"].dtype == "string"
    earlier_partitions = FrameTable(linked.frame[linked.frame["partition_date"] < today])
    assert earlier_partitions.read(rows_where=("trace_date", pd.Series([today]))).empty  # nothing about today is linked before today
    none = events_about_day(FrameTable(linked.frame.iloc[0:0]), today, ["event_id", "timestamp"])
    assert none.empty and str(none["timestamp"].dtype) == "datetime64[us, UTC]"
