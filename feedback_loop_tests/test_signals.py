"""Implicit signals on hand-built sessions, edge cases included."""

import numpy as np
import pandas as pd
import pytest

from feedback_loop.lib.linking import link_feedback
from feedback_loop.lib.params import SignalParams
from feedback_loop.lib.signals import classify_edits, implicit_signals, knowledge_horizon, normalize_prompt, session_context, signals_by_day, signals_of_day
from feedback_loop.lib.tables import FrameTable
from feedback_loop_tests.frames import at, events, traces

PARAMS = SignalParams()


def signals(tr, ev=None, horizon=None):
    ev = events() if ev is None else ev
    linked = link_feedback(ev, tr, pd.Timedelta(hours=1)).linked
    return implicit_signals(tr, linked, PARAMS, horizon).set_index("trace_id")


@pytest.mark.parametrize(
    ("output", "edit", "expected"),
    [
        ("The answer is 42.", "the answer is 42", "trivial"),
        ("The answer is 42.", "The answer is 42.", "trivial"),  # identical
        ("\u201cHello\u201d \u2014 World\u2026 [ok]", "hello world ok", "trivial"),  # Unicode punctuation, brackets
        ("a+b=c", "a+b=d", "minor"),  # not only punctuation differs
        ("The capital of Australia is Sydney, a large city.", "The capital of Australia is Canberra, a large city.", "minor"),
        ("The capital of Australia is Sydney. It has many beaches and a famous opera house.", "The capital of Australia is Canberra.", "major"),
        ("I cannot help with that.", "Paris is the capital of France and its largest city.", "rewrite"),
        ("", "Something new", "rewrite"),  # empty output
        ("Thanks for your order, the parcel ships on Monday.\nBest,\nThe team", "Thanks for your order, the parcel ships on Monday.\nBest,\nMaria", "addition"),  # sign-off swapped
        ("Summary: the contract renews yearly unless cancelled.", "Prepared by Legal.\nSummary: the contract renews yearly unless cancelled.", "addition"),
        ("Summary: the contract renews yearly unless cancelled.", "Summary: the contract renews monthly unless cancelled.", "minor"),  # kept whole? no: a word changed
    ],
)
def test_edit_classes(output, edit, expected):
    result = classify_edits(pd.Series([output]), pd.Series([edit]), PARAMS)
    assert result["edit_class"].iloc[0] == expected


def test_edit_length_ratio_and_distance():
    result = classify_edits(pd.Series(["a" * 100]), pd.Series(["a" * 25]), PARAMS)
    assert result["edit_length_ratio"].iloc[0] == 0.25
    assert result["edit_distance"].iloc[0] == pytest.approx(1 - 50 / 125)
    assert np.isnan(classify_edits(pd.Series([""]), pd.Series([""]), PARAMS)["edit_length_ratio"].iloc[0])


def test_latest_edit_wins_and_corrections_count():
    tr = traces({"trace_id": "a", "output": "The year is 1991."})
    ev = events(
        {"trace_id": "a", "type": "edit", "value": "The year is 1990.", "t": 30},
        {"trace_id": "a", "type": "correction", "value": "The year is 1989.", "t": 60},
    )
    row = signals(tr, ev).loc["a"]
    assert row["edit_type"] == "correction" and row["edit_text"] == "The year is 1989."
    assert row["edit_class"] == "minor"


def test_copies_full_snippet_and_without_text():
    tr = traces(
        {"trace_id": "full", "output": "x" * 100, "session_id": "a"},
        {"trace_id": "snip", "output": "x" * 100, "session_id": "b"},
        {"trace_id": "button", "output": "x" * 100, "session_id": "c"},
    )
    ev = events(
        {"trace_id": "full", "type": "copy", "value": "x" * 95, "t": 5},
        {"trace_id": "snip", "type": "copy", "value": "x" * 20, "t": 5},
        {"trace_id": "snip", "type": "copy", "value": "x" * 40, "t": 6},
        {"trace_id": "button", "type": "copy", "t": 5},
    )
    s = signals(tr, ev)
    assert s.loc["full", "copy_kind"] == "full"
    assert s.loc["snip", ["copy_count", "copied_share", "copy_kind"]].tolist() == [2, 0.4, "snippet"]
    assert s.loc["button", "copy_kind"] == "full"


def test_regenerate_chain_and_acceptance():
    tr = traces(
        {"trace_id": "r1", "t": 0, "prompt": "Capital of Australia?"},
        {"trace_id": "r2", "t": 30, "prompt": "capital of  australia?"},
        {"trace_id": "r3", "t": 60, "prompt": "Capital of Australia?"},
        {"trace_id": "next", "t": 200, "prompt": "And of Canada?"},
    )
    ev = events(
        {"trace_id": "r1", "type": "regenerate", "t": 25},
        {"session_id": "s1", "type": "regenerate", "t": 55},
        {"trace_id": "r3", "type": "copy", "t": 90},
    )
    s = signals(tr, ev)
    assert s.loc[["r1", "r2", "r3"], "chain_id"].tolist() == ["r1", "r1", "r1"]
    assert s.loc[["r1", "r2", "r3"], "chain_position"].tolist() == [1, 2, 3]
    assert s.loc["r1", "regenerated_by"] == "r2" and s.loc["r2", "regenerated_by"] == "r3"
    assert pd.isna(s.loc["r3", "regenerated_by"])
    assert s.loc[["r1", "r2"], "regenerate_count"].tolist() == [1, 1]
    assert s.loc["r1", "chain_accepted"] and s.loc["r3", "chain_accepted"]
    assert s.loc["next", "chain_length"] == 1


def test_chain_not_accepted_when_final_is_thumbed_down():
    tr = traces({"trace_id": "r1", "t": 0}, {"trace_id": "r2", "t": 30})
    ev = events({"trace_id": "r1", "type": "regenerate", "t": 25}, {"trace_id": "r2", "type": "thumbs_down", "t": 40})
    assert not signals(tr, ev).loc["r1", "chain_accepted"]


def test_rephrase_is_a_reworded_next_prompt_not_a_new_question():
    tr = traces(
        {"trace_id": "a", "t": 0, "prompt": "I'm writing a report. What is the capital of Australia?"},
        {"trace_id": "b", "t": 60, "prompt": "No, what exactly is the capital of Australia?"},
        {"trace_id": "c", "t": 120, "prompt": "Thanks. What is the largest planet in the solar system?"},
    )
    s = signals(tr)
    assert s.loc["a", "rephrased"]
    assert not s.loc["b", "rephrased"]
    assert not s.loc["c", "rephrased"]  # no next prompt


def test_abandon_explicit_inferred_and_not_when_positive_or_too_recent():
    tr = traces(
        {"trace_id": "explicit", "session_id": "a"},
        {"trace_id": "silent", "session_id": "b"},
        {"trace_id": "copied", "session_id": "c"},
        {"trace_id": "recent", "session_id": "d", "t": 7000},
        {"trace_id": "continued", "session_id": "e"},
        {"trace_id": "follow", "session_id": "e", "t": 100},
    )
    ev = events({"trace_id": "explicit", "type": "abandon", "t": 20}, {"trace_id": "copied", "type": "copy", "t": 5})
    s = signals(tr, ev, horizon=at(7200))
    assert s.loc["explicit", "abandon_source"] == "explicit"
    assert s.loc["silent", "abandon_source"] == "inferred"
    assert not s.loc["copied", "abandoned"]
    assert not s.loc["recent", "abandoned"]  # only 199 s of silence known so far
    assert not s.loc["continued", "abandoned"]


def test_dwell_is_time_to_the_next_user_action():
    tr = traces({"trace_id": "a", "t": 0, "latency_ms": 2000.0}, {"trace_id": "b", "t": 100})
    ev = events({"trace_id": "a", "type": "copy", "t": 12})
    s = signals(tr, ev)
    assert s.loc["a", "dwell_s"] == 10.0
    assert np.isnan(s.loc["b", "dwell_s"])


def test_empty_inputs_give_empty_signals():
    s = implicit_signals(traces(), events(), PARAMS)
    assert s.empty and "edit_class" in s.columns


def test_regenerations_are_recognized_whatever_the_surrounding_white_space():
    tr = traces({"trace_id": "r1", "t": 0, "prompt": "Capital of Australia?"}, {"trace_id": "r2", "t": 30, "prompt": "  capital of australia?\n"})
    assert signals(tr).loc["r2", "chain_id"] == "r1"


def test_prompt_key_collapses_every_kind_of_white_space_like_a_split_and_join():
    prompts = pd.Series(
        ["Capital  of\tAustralia?", " lead", "trail ", "no\u00a0break\u2003em\u3000wide", "line\r\nbreaks\n\n", "Plain Text", "", None, "\u2028"],
        dtype="string",
    )
    expected = [" ".join(p.lower().split()) if p is not None else "" for p in prompts.astype(object).where(prompts.notna(), None)]
    assert normalize_prompt(prompts).tolist() == expected


def test_signals_do_not_depend_on_the_row_order_of_the_traces():
    """Texts are looked up by each trace's row in the input (its last span), wherever that row is."""
    tr = traces(
        {"trace_id": "a", "span_id": "a1", "t": 0, "prompt": "What is the capital of Australia?", "output": "draft"},
        {"trace_id": "a", "span_id": "a2", "t": 1, "prompt": "What is the capital of Australia?", "output": "Sydney is the capital."},
        {"trace_id": "b", "t": 60, "prompt": "No, what exactly is the capital of Australia?", "output": "y" * 50},
        {"trace_id": "c", "t": 0, "session_id": "s2", "prompt": "hi", "output": "z" * 80},
    )
    ev = events(
        {"trace_id": "a", "type": "edit", "value": "Canberra is the capital.", "t": 30},
        {"trace_id": "b", "type": "copy", "value": "y" * 10, "t": 90},
        {"trace_id": "c", "type": "copy", "value": "z" * 20, "t": 10},
    )
    expected = signals(tr, ev)
    shuffled = tr.iloc[[3, 1, 2, 0]].set_index(pd.Index([10, 11, 12, 13]))
    got = signals(shuffled, ev)
    pd.testing.assert_frame_equal(got.loc[expected.index], expected)
    assert expected.loc["a", "edit_length_ratio"] == pytest.approx(len("Canberra is the capital.") / len("Sydney is the capital."))
    assert expected.loc["b", "copied_share"] == 0.2 and expected.loc["c", "copied_share"] == 0.25
    assert expected.loc["a", "rephrased"]


def test_signals_a_day_at_a_time_with_its_sessions_context_are_the_signals_of_the_whole_range():
    midnight = -10 * 3600  # T0 is 10:00 on 2026-11-20
    tr = traces(
        {"trace_id": "late", "session_id": "cross", "prompt": "capital of peru?", "output": "Quito.", "t": midnight - 120},
        {"trace_id": "again", "session_id": "cross", "prompt": "Capital of Peru?", "output": "Lima.", "t": midnight + 60},  # regenerated after midnight
        {"trace_id": "day", "session_id": "inside", "prompt": "hello", "t": 0},
        {"trace_id": "eve", "session_id": "next", "prompt": "the longest river in africa", "output": "The Amazon.", "t": midnight + 86400 - 60},
        {"trace_id": "after", "session_id": "next", "prompt": "longest river in africa?", "output": "The Nile.", "t": midnight + 86400 + 90},  # a rephrase
        {"trace_id": "lone", "session_id": None, "prompt": "solo", "t": midnight + 86400 + 3600},
    )
    ev = events(
        {"trace_id": "late", "type": "regenerate", "t": midnight - 60},
        {"trace_id": "again", "type": "edit", "value": "Lima, since 1535.", "t": midnight + 120},
        {"trace_id": "after", "type": "thumbs_down", "t": midnight + 86400 + 200},
        {"trace_id": "day", "type": "copy", "t": 30},
    )
    linked = link_feedback(ev, tr, pd.Timedelta(hours=1)).linked
    days = ["2026-11-19", "2026-11-20", "2026-11-21"]
    horizon = tr["timestamp"].max() + pd.Timedelta(days=1)
    whole = implicit_signals(tr, linked, PARAMS, horizon)
    by_day = {day: tr[tr["partition_date"] == day].reset_index(drop=True) for day in days}
    none = tr.iloc[0:0]
    for i, day in enumerate(days):
        before = by_day[days[i - 1]] if i else none
        after = by_day[days[i + 1]] if i + 1 < len(days) else none
        expected = whole[whole["partition_date"] == day].reset_index(drop=True)
        pd.testing.assert_frame_equal(signals_of_day(day, session_context(by_day[day], before, after), linked, PARAMS, horizon), expected)
    for range_days in (days, days[1:], days[:2]):  # the day before the range, and after it, are context only
        made = list(signals_by_day(range_days, FrameTable(tr), FrameTable(linked), PARAMS, lambda day: horizon))
        assert [day for day, _ in made] == range_days
        for day, got in made:
            pd.testing.assert_frame_equal(got.sort_values("trace_id", ignore_index=True), whole[whole["partition_date"] == day].sort_values("trace_id", ignore_index=True))
    crossing = whole.set_index("trace_id")
    assert crossing.loc["again", "chain_id"] == "late" and crossing.loc["again", "chain_position"] == 2  # seen from its own day too
    assert crossing.loc["eve", "rephrased"]


def test_a_days_horizon_is_the_end_of_the_last_day_ingested_capped_at_its_last_relabel():
    assert knowledge_horizon("2026-11-18", "2026-11-20", 7) == pd.Timestamp("2026-11-21", tz="UTC")
    assert knowledge_horizon("2026-11-11", "2026-11-20", 7) == pd.Timestamp("2026-11-19", tz="UTC")  # its last relabel was the night of the 18th
