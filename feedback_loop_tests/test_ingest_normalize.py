"""Landing records -> canonical frames, with every kind of bad input quarantined, none crashing."""

import json

import numpy as np
import pandas as pd
import pytest

from feedback_loop.lib.landing import read_landing_day
from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop_tests.conftest import write_jsonl

DAY = "2026-11-20"
TS = "2026-11-20T10:00:00Z"


def feedback(tmp_path, rows):
    write_jsonl(tmp_path / "feedback" / f"feedback-{DAY}.jsonl", rows)
    return normalize_feedback(read_landing_day(str(tmp_path), "feedback", DAY), DAY)


def traces(tmp_path, rows):
    write_jsonl(tmp_path / "traces" / f"traces-{DAY}.jsonl", rows)
    return normalize_traces(read_landing_day(str(tmp_path), "traces", DAY), DAY)


def reasons(result) -> list[str]:
    return result.quarantine["reason"].tolist()


def test_each_bad_row_is_quarantined_with_its_reason(tmp_path):
    result = feedback(
        tmp_path,
        [
            {"event_id": "ok", "trace_id": "t1", "timestamp": TS, "type": "thumbs_up"},
            '{"event_id": "broken", "type": "thumbs_up", "timestamp": "' + TS + '"',
            {"event_id": "no-ts", "trace_id": "t1", "type": "copy"},
            {"event_id": "bad-ts", "trace_id": "t1", "type": "copy", "timestamp": "yesterday"},
            {"event_id": "weird", "trace_id": "t1", "timestamp": TS, "type": "share"},
            b'{"event_id": "latin1", "comment": "caf\xe9", "timestamp": "' + TS.encode() + b'"}',
            {"trace_id": "t1", "timestamp": TS, "type": "copy"},
            {"event_id": "rating", "trace_id": "t1", "timestamp": TS, "type": "rating", "value": "great"},
            {"event_id": "nolink", "timestamp": TS, "type": "thumbs_up"},
            "[1, 2, 3]",
        ],
    )
    assert result.clean["event_id"].tolist() == ["ok"]
    assert sorted(reasons(result)) == sorted(
        [
            "malformed JSON",
            "missing timestamp",
            "timestamp is not ISO-8601: yesterday",
            "unknown event type 'share'",
            "not valid UTF-8",
            "missing event_id",
            "rating value is not a number",
            "no trace_id, span_id or session_id to link by",
            "record is not a JSON object",
        ]
    )
    lines = dict(zip(result.quarantine["reason"], result.quarantine["line"], strict=True))
    assert lines["malformed JSON"] == 2
    assert lines["not valid UTF-8"] == 6
    assert lines["missing event_id"] == 7  # numbering survives the undecodable line before it
    assert result.quarantine["raw"].notna().all()


def test_duplicates_are_dropped_and_counted(tmp_path):
    row = {"event_id": "e1", "trace_id": "t1", "timestamp": TS, "type": "copy", "value": "x"}
    result = feedback(tmp_path, [row, row, {**row, "event_id": "e2"}])
    assert result.clean["event_id"].tolist() == ["e1", "e2"]
    assert result.duplicates == 1
    assert result.quarantine.empty


def test_mixed_value_types_and_unknown_fields_are_kept(tmp_path):
    result = feedback(
        tmp_path,
        [
            {"event_id": "r", "trace_id": "t", "timestamp": TS, "type": "Rating", "value": 4, "app": "ios"},
            {"event_id": "c", "trace_id": "t", "timestamp": TS, "type": "edit", "value": "new text", "metadata": {"k": 1}},
        ],
    )
    by_id = result.clean.set_index("event_id")
    assert by_id.loc["r", "type"] == "rating"
    assert by_id.loc["r", "value_num"] == 4.0
    assert json.loads(by_id.loc["r", "metadata"]) == {"app": "ios"}
    assert by_id.loc["c", "value"] == "new text"
    assert json.loads(by_id.loc["c", "metadata"]) == {"k": 1}


def test_partition_takes_the_utc_day_only(tmp_path):
    result = feedback(
        tmp_path,
        [
            {"event_id": "in", "trace_id": "t", "timestamp": "2026-11-21T01:00:00+02:00", "type": "copy"},
            {"event_id": "out", "trace_id": "t", "timestamp": "2026-11-20T23:30:00-05:00", "type": "copy"},
        ],
    )
    assert result.clean["event_id"].tolist() == ["in"]
    assert str(result.clean["timestamp"].iloc[0]) == "2026-11-20 23:00:00+00:00"


def test_traces_flatten_chat_messages_and_default_span(tmp_path):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second question"},
    ]
    result = traces(
        tmp_path,
        [
            {"trace_id": "a", "timestamp": TS, "input": "plain prompt", "output": "o", "latency_ms": 12},
            {"trace_id": "b", "timestamp": TS, "input": messages, "output": "o", "extra_field": [1]},
            {"trace_id": "c", "timestamp": TS, "input": {"not": "messages"}},
            {"trace_id": "d", "timestamp": TS, "latency_ms": "slow"},
            {"trace_id": "e", "timestamp": TS, "latency_ms": -3},
        ],
    )
    by_id = result.clean.set_index("trace_id")
    assert by_id.loc["a", "prompt"] == "plain prompt"
    assert by_id.loc["a", "span_id"] == "a"
    assert by_id.loc["b", "prompt"] == "second question"
    assert json.loads(by_id.loc["b", "input"])[0]["role"] == "system"
    assert json.loads(by_id.loc["b", "metadata"]) == {"extra_field": [1]}
    assert sorted(reasons(result)) == [
        "input is neither text nor a list of messages",
        "latency_ms is negative",
        "latency_ms is not a number",
    ]


def test_parquet_landing_files_are_read_too(tmp_path):
    folder = tmp_path / "traces"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "trace_id": ["p1", "p2"],
            "timestamp": pd.to_datetime([TS, "2026-11-19T10:00:00Z"], utc=True),
            "input": [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]],
            "output": ["hello", "hey"],
            "tenant": ["acme", "acme"],
        }
    ).to_parquet(folder / "batch.parquet")
    result = normalize_traces(read_landing_day(str(tmp_path), "traces", DAY), DAY)
    assert result.clean["trace_id"].tolist() == ["p1"]
    assert result.clean["prompt"].tolist() == ["hi"]
    assert json.loads(result.clean["metadata"].iloc[0]) == {"tenant": "acme"}


def test_empty_landing_folder_gives_empty_frames(tmp_path):
    result = normalize_traces(read_landing_day(str(tmp_path), "traces", DAY), DAY)
    assert result.clean.empty and result.quarantine.empty
    assert "trace_id" in result.clean.columns


@pytest.mark.parametrize("line", ["", "   "])
def test_blank_lines_are_not_records(tmp_path, line):
    result = feedback(tmp_path, [line, {"event_id": "e", "trace_id": "t", "timestamp": TS, "type": "copy"}])
    assert len(result.clean) == 1 and result.quarantine.empty


def test_typed_message_lists_in_parquet_give_the_last_user_message(tmp_path):
    folder = tmp_path / "traces"
    folder.mkdir(parents=True)
    messages = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "second"}],
        [{"role": "system", "content": "only a system message"}],
        [],
        None,
    ]
    pd.DataFrame({"trace_id": ["m1", "m2", "m3", "m4"], "timestamp": [TS] * 4, "input": messages, "output": ["o"] * 4}).to_parquet(folder / "typed.parquet")
    result = normalize_traces(read_landing_day(str(tmp_path), "traces", DAY), DAY)
    prompts = result.clean.set_index("trace_id")["prompt"]
    assert prompts["m1"] == "second" and prompts["m2"] == "only a system message"
    assert pd.isna(prompts["m3"]) and pd.isna(prompts["m4"])
    assert json.loads(result.clean.set_index("trace_id").loc["m1", "input"])[3] == {"role": "user", "content": "second"}


def test_a_trace_key_is_clean_once_and_a_quarantined_record_does_not_claim_it(tmp_path):
    """(trace_id, span_id) is unique among clean traces: the first readable record of a key wins, and
    a record quarantined for another reason does not hold its key against a good one after it."""
    span = {"trace_id": "t1", "span_id": "s1", "timestamp": TS, "input": "hi", "output": "a"}
    result = traces(
        tmp_path,
        [
            {**span, "trace_id": "t2", "latency_ms": "slow"},
            span,
            {**span, "output": "b"},
            {**span, "span_id": "s2"},
            {**span, "trace_id": "t2"},
        ],
    )
    assert list(zip(result.clean["trace_id"], result.clean["span_id"], result.clean["output"], strict=True)) == [("t1", "s1", "a"), ("t1", "s2", "a"), ("t2", "s1", "a")]
    assert result.duplicates == 1
    assert reasons(result) == ["latency_ms is not a number"]


def test_records_come_in_file_and_line_order_across_files(tmp_path):
    """Rows of several files, an unreadable line among them, are ordered by file then line (first of a duplicate wins)."""

    def rows(name: str) -> list[dict]:
        return [{"event_id": "dup", "trace_id": name, "timestamp": TS, "type": "copy"}, {"event_id": f"{name}-2", "trace_id": name, "timestamp": TS, "type": "copy"}]

    write_jsonl(tmp_path / "feedback" / f"c-{DAY}.jsonl", rows("c"))
    write_jsonl(tmp_path / "feedback" / f"a-{DAY}.jsonl", [b"\xff\xfe not utf-8", *[json.dumps(r).encode() for r in rows("a")]])
    pd.DataFrame(rows("b")).to_parquet(tmp_path / "feedback" / f"b-{DAY}.parquet")
    records = read_landing_day(str(tmp_path), "feedback", DAY)
    assert [(s.rsplit("/", 1)[-1][0], int(n)) for s, n in zip(records["_source"], records["_line"], strict=True)] == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    result = normalize_feedback(records, DAY)
    assert result.clean.set_index("event_id").loc["dup", "trace_id"] == "a" and result.duplicates == 2


def test_only_short_values_are_read_as_numbers(tmp_path):
    long_number = "1" * 100
    result = feedback(
        tmp_path,
        [
            {"event_id": "r", "trace_id": "t", "timestamp": TS, "type": "rating", "value": " 4 "},
            {"event_id": "e", "trace_id": "t", "timestamp": TS, "type": "edit", "value": long_number},
        ],
    )
    values = result.clean.set_index("event_id")["value_num"]
    assert values["r"] == 4.0 and pd.isna(values["e"])


def test_numbers_are_decimal_numbers_only():
    from feedback_loop.lib.normalize import NUMBER_MAX_CHARS, numbers_in

    values = pd.Series(["4", " 4.5 ", "-1", "+2e3", ".5", "5.", "four", "4 stars", "", None, "nan", "inf", "1" * (NUMBER_MAX_CHARS + 1)], dtype="string")
    got = numbers_in(values).tolist()
    assert got[:6] == [4.0, 4.5, -1.0, 2000.0, 0.5, 5.0]
    assert all(np.isnan(v) for v in got[6:])


def test_line_numbers_of_a_large_file_follow_the_file_whatever_the_reader_threads_do(tmp_path):
    """A file large enough to be read in parallel chunks: every record keeps its own line number."""
    rows: list = []
    for i in range(30_000):
        if i % 997 == 5:
            rows.append(b"{broken " + str(i).encode())
        elif i % 5 == 3:
            rows.append(b'{"event_id": "e' + str(i).encode() + b'", "comment": "caf\xe9"}')  # not UTF-8
        else:
            rows.append({"event_id": f"e{i}", "trace_id": f"t{i}", "timestamp": TS, "type": "copy", "comment": "x" * (i % 200)})
    write_jsonl(tmp_path / "feedback" / "feedback-2026-11-20.jsonl", rows)
    records = read_landing_day(str(tmp_path), "feedback", "2026-11-20")
    number = records["_raw"].astype("string").str.extract(r"(?:e|broken )(\d+)")[0].astype("Int64").fillna(records["event_id"].str[1:].astype("Int64"))
    assert len(records) == 30_000
    assert (records["_line"].astype("Int64") == number + 1).all()
