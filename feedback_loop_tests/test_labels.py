"""Trace labels: explicit outweighs implicit, disagreement, changes of mind, agreement rate."""

import pandas as pd

from feedback_loop.lib.labels import agreement, label_traces, labels_by_day
from feedback_loop.lib.linking import link_feedback
from feedback_loop.lib.params import LabelWeights, SignalParams
from feedback_loop.lib.signals import implicit_signals
from feedback_loop.lib.tables import FrameTable
from feedback_loop_tests.frames import at, events, traces


def labels(tr, ev, weights: LabelWeights | None = None):
    linked = link_feedback(ev, tr, pd.Timedelta(hours=1)).linked
    signals = implicit_signals(tr, linked, SignalParams(), horizon=at(60))
    return label_traces(signals, linked, weights or LabelWeights()).set_index("trace_id")


def one(**row):
    return traces({"trace_id": "a", **row})


def test_no_evidence_is_unlabeled():
    row = labels(one(), events()).loc["a"]
    assert row["label"] == "unlabeled" and row["confidence"] == 0.0 and row["evidence"] == ""


def test_thumbs_with_reason_tag():
    row = labels(one(), events({"trace_id": "a", "type": "thumbs_down", "reason": "not_factual", "t": 5})).loc["a"]
    assert row["label"] == "negative" and row["score"] == -0.8
    assert row["evidence"] == "thumbs_down(not_factual)" and row["reason_tags"] == "not_factual"


def test_thumbs_are_counted_in_columns_whatever_the_reason_text_says():
    row = labels(one(), events({"trace_id": "a", "type": "thumbs_down", "reason": "thumbs_up", "comment": "thumbs_up? no", "t": 5})).loc["a"]
    assert (row["thumbs_up"], row["thumbs_down"]) == (0, 1)
    assert "thumbs_up" in row["evidence"]  # the text mentions it; the columns are what counts


def test_explicit_outweighs_implicit_and_disagreement_is_flagged():
    ev = events({"trace_id": "a", "type": "thumbs_up", "t": 5}, {"trace_id": "a", "type": "regenerate", "t": 10})
    row = labels(one(), ev).loc["a"]
    assert row["label"] == "positive"
    assert row["score"] == 0.8 * 1.0 + 0.2 * -0.6
    assert row["disagreement"]
    assert "thumbs_up" in row["evidence"] and "regenerated" in row["evidence"]


def test_implicit_only_labels_with_lower_confidence():
    tr = traces({"trace_id": "a", "output": "The capital of Australia is Sydney. It is a large and famous city."})
    ev = events({"trace_id": "a", "type": "edit", "value": "The capital of Australia is Canberra.", "t": 5})
    implicit = labels(tr, ev).loc["a"]
    explicit = labels(one(), events({"trace_id": "a", "type": "thumbs_down", "t": 5})).loc["a"]
    assert implicit["label"] == "negative" and implicit["evidence"] == "edit:major"
    assert implicit["confidence"] < explicit["confidence"]


def test_a_user_who_changes_their_mind_counts_once_with_the_latest_thumb():
    ev = events({"trace_id": "a", "type": "thumbs_down", "t": 5}, {"trace_id": "a", "type": "thumbs_up", "t": 9})
    assert labels(one(), ev).loc["a", "label"] == "positive"


def test_ratings_scale_around_three():
    assert labels(one(), events({"trace_id": "a", "type": "rating", "value": 1, "t": 5})).loc["a", "score"] == -0.8
    assert labels(one(), events({"trace_id": "a", "type": "rating", "value": 3, "t": 5})).loc["a", "label"] == "neutral"


def test_weights_are_configurable():
    weights = LabelWeights(thumbs_down=-0.1)
    assert labels(one(), events({"trace_id": "a", "type": "thumbs_down", "t": 5}), weights).loc["a", "label"] == "neutral"


def test_agreement_counts_only_traces_with_both_kinds():
    frame = pd.DataFrame({"explicit_score": [1.0, -1.0, 1.0, None], "implicit_score": [0.5, -0.4, -0.6, 0.5]})
    assert agreement(frame) == (2, 3)
    assert agreement(frame.iloc[3:]) == (0, 0)


def test_labels_a_day_at_a_time_are_the_labels_of_the_whole_range():
    day = 86400
    tr = traces(
        {"trace_id": "a", "session_id": "s1", "t": -day},
        {"trace_id": "b", "session_id": "s1", "t": -day + 30},
        {"trace_id": "c", "session_id": "s2", "t": 0},
        {"trace_id": "d", "session_id": "s3", "t": day},
    )
    ev = events(
        {"trace_id": "a", "type": "regenerate", "t": -day + 20},
        {"trace_id": "b", "type": "thumbs_up", "t": -day + 60},
        {"trace_id": "c", "type": "thumbs_down", "reason": "not_factual", "t": 2 * day},  # late: two days on
        {"trace_id": "c", "type": "rating", "value": 2, "t": 5},
        {"trace_id": "d", "type": "thumbs_up", "t": day + 5},
    )
    linked = link_feedback(ev, tr, pd.Timedelta(hours=1)).linked
    signals = implicit_signals(tr, linked, SignalParams(), horizon=at(3 * day))
    whole = label_traces(signals, linked, LabelWeights())
    days = sorted(signals["partition_date"].unique())
    assert len(days) == 3
    for range_days in (days, days[1:]):
        made = list(labels_by_day(range_days, FrameTable(signals), FrameTable(linked), LabelWeights()))
        assert [day for day, _ in made] == range_days
        for day, got in made:
            expected = whole[whole["partition_date"] == day].sort_values("trace_id", ignore_index=True)
            pd.testing.assert_frame_equal(got.sort_values("trace_id", ignore_index=True), expected)
    assert whole.set_index("trace_id").loc["c", "evidence"].startswith("thumbs_down(not_factual)")
