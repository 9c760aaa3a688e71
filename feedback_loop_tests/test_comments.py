"""Comment meaning: complaint or praise, in the languages read, and the label a comment alone gives."""

import pandas as pd
import pytest

from feedback_loop.lib.comments import comment_polarity
from feedback_loop.lib.labels import label_traces
from feedback_loop.lib.params import LabelWeights


@pytest.mark.parametrize(
    ("comment", "polarity"),
    [
        ("That's wrong.", -1),
        ("not helpful", -1),
        ("lol no", -1),
        ("I said three bullets", -1),
        ("seriously?", -1),
        ("and the other half?", -1),
        ("Das stimmt nicht", -1),
        ("c'est faux", -1),
        ("no funciona", -1),
        ("non è quello che ho chiesto", -1),
        ("não respondeu a pergunta", -1),
        ("klopt niet", -1),
        ("to nie działa", -1),
        ("thanks, but the date is wrong", -1),
        ("pourquoi tu refuses ? c'est une question banale", -1),
        ("demasiado largo, solo quería el número", -1),
        ("troppo lungo", -1),
        ("dat bestaat niet", -1),
        ("ich hatte eine Tabelle verlangt", -1),
        ("za długie, chciałem tylko liczbę", -1),
        ("perfect JSON, thanks", 1),
        ("exactly what I asked for", 1),
        ("danke, genau richtig", 1),
        ("merci beaucoup", 1),
        ("perfetto", 1),
        ("dzięki!", 1),
        ("ok", None),
        (None, None),
    ],
)
def test_comment_polarity(comment, polarity):
    value = comment_polarity(pd.Series([comment], dtype="string"))[0]
    assert (pd.isna(value) and polarity is None) or value == polarity


def test_a_complaint_alone_makes_a_trace_negative_and_praise_positive():
    signals = pd.DataFrame(
        {
            "trace_id": ["a", "b", "c"],
            "span_id": ["s"] * 3,
            "session_id": ["x"] * 3,
            "user_id": ["u"] * 3,
            "timestamp": pd.Timestamp("2026-06-01", tz="UTC"),
            "model": "m",
            "prompt_version": "p",
            "edit_type": pd.Series([None] * 3, dtype="string"),
            "edit_text": pd.Series([None] * 3, dtype="string"),
            "edit_class": pd.Series([None] * 3, dtype="string"),
            "copy_kind": pd.Series([None] * 3, dtype="string"),
            "regenerate_count": 0,
            "regenerated_by": pd.Series([None] * 3, dtype="string"),
            "rephrased": False,
            "abandon_source": pd.Series([None] * 3, dtype="string"),
            "chain_length": 1,
            "chain_accepted": True,
            "rating_mean": float("nan"),
            "partition_date": "2026-06-01",
        }
    )
    linked = pd.DataFrame(
        {
            "trace_id": ["a", "b", "c"],
            "user_id": ["u"] * 3,
            "timestamp": pd.Timestamp("2026-06-01 00:01", tz="UTC"),
            "type": ["comment"] * 3,
            "value_num": float("nan"),
            "reason": pd.Series([None] * 3, dtype="string"),
            "comment": pd.Series(["wo ist der Rest??", "gracias, perfecto", "hm"], dtype="string"),
        }
    )
    labels = label_traces(signals, linked, LabelWeights()).set_index("trace_id")
    assert labels.loc["a", "label"] == "negative" and "comment:negative" in labels.loc["a", "evidence"]
    assert labels.loc["b", "label"] == "positive"
    assert labels.loc["c", "label"] == "unlabeled"
