"""Crafted landing input: every record is read into the clean table, the quarantine with a reason,
or the dropped duplicates; nothing crashes the read and nothing is lost."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedback_loop.lib.landing import MAX_NESTING, json_nesting, read_landing_day
from feedback_loop.lib.normalize import normalize_feedback, normalize_traces
from feedback_loop_tests.conftest import write_jsonl

DAY = "2026-11-20"
FIRST = "2026-11-01"
TS = "2026-11-20T10:00:00Z"


def ingest(root, kind="traces", day=DAY):
    normalize = normalize_traces if kind == "traces" else normalize_feedback
    return normalize(read_landing_day(str(root), kind, day, first_day=FIRST), day)


def reason_of(result, record_id: str) -> str:
    rows = result.quarantine[result.quarantine["record_id"] == record_id]
    assert len(rows) == 1, (record_id, result.quarantine[["record_id", "reason"]].to_dict("records"))
    return rows["reason"].iloc[0]


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_numbers_too_large_for_their_type_are_quarantined(tmp_path):
    base = {"timestamp": TS, "input": "q", "output": "a"}
    write_jsonl(
        tmp_path / "traces" / f"{DAY}.jsonl",
        [
            {**base, "trace_id": "tokens", "input_tokens": 1e30},
            {**base, "trace_id": "out-tokens", "output_tokens": 2**63},
            '{"trace_id": "inf-latency", "timestamp": "' + TS + '", "latency_ms": 1e400}',
            {**base, "trace_id": "huge-latency", "latency_ms": 9.3e12},
            {**base, "trace_id": "fine", "latency_ms": 1200.5, "input_tokens": 10, "output_tokens": 3},
        ],
    )
    result = ingest(tmp_path)
    assert result.clean["trace_id"].tolist() == ["fine"]
    assert reason_of(result, "tokens") == "input_tokens is larger than 1e+12"
    assert reason_of(result, "out-tokens") == "output_tokens is larger than 1e+12"
    assert reason_of(result, "inf-latency") == "latency_ms is larger than 1e+10"
    assert reason_of(result, "huge-latency") == "latency_ms is larger than 1e+10"


def test_json_nested_too_deep_is_quarantined_not_a_recursion_error(tmp_path):
    deep = nested(5000)
    write_jsonl(
        tmp_path / "traces" / f"{DAY}.jsonl",
        [
            '{"trace_id": "meta", "timestamp": "' + TS + '", "metadata": ' + deep + "}",
            '{"trace_id": "extra", "timestamp": "' + TS + '", "extra": ' + deep + "}",
            '{"trace_id": "input", "timestamp": "' + TS + '", "input": ' + nested(3000) + "}",
            '{"trace_id": "shallow", "timestamp": "' + TS + '", "input": "q", "metadata": {"k": ' + nested(MAX_NESTING - 2) + "}}",
            {"trace_id": "brackets-in-text", "timestamp": TS, "input": "[" * 500, "metadata": {"note": "{" * 500}},
        ],
    )
    result = ingest(tmp_path)
    assert sorted(result.clean["trace_id"]) == ["brackets-in-text", "shallow"]
    for record in ("meta", "extra", "input"):
        assert reason_of(result, record) == f"JSON nested deeper than {MAX_NESTING} levels"


def test_json_nesting_ignores_brackets_inside_strings():
    assert json_nesting('{"a": "[[[{{{", "b": [[1]]}') == 3
    assert json_nesting('"\\"[[["') == 0
    assert json_nesting(nested(7)) == 7


def test_parquet_without_the_optional_input_column(tmp_path):
    (tmp_path / "traces").mkdir(parents=True)
    pd.DataFrame({"trace_id": ["p1"], "timestamp": [TS], "output": ["o"]}).to_parquet(tmp_path / "traces" / "no-input.parquet")
    result = ingest(tmp_path)
    assert result.clean["trace_id"].tolist() == ["p1"]
    assert result.clean["prompt"].isna().all() and result.quarantine.empty


@pytest.mark.parametrize("content", [b"", b"PAR1 not really", b'{"trace_id": "x"}\n', bytes(range(256)) * 4])
def test_an_unreadable_parquet_file_is_one_quarantined_record(tmp_path, content):
    (tmp_path / "traces").mkdir(parents=True)
    (tmp_path / "traces" / f"broken-{DAY}.parquet").write_bytes(content)
    write_jsonl(tmp_path / "traces" / f"good-{DAY}.jsonl", [{"trace_id": "t", "timestamp": TS}])
    result = ingest(tmp_path)
    assert result.clean["trace_id"].tolist() == ["t"]
    assert len(result.quarantine) == 1
    assert result.quarantine["reason"].iloc[0].startswith("unreadable Parquet file")
    assert result.quarantine["source"].iloc[0].endswith(f"broken-{DAY}.parquet")
    # on its file's day only: the next day does not count it again
    assert ingest(tmp_path, day="2026-11-21").quarantine.empty


def test_quotes_in_file_and_column_names(tmp_path):
    folder = tmp_path / "traces"
    write_jsonl(folder / f'it\'s a "file" {DAY}.jsonl', [{"trace_id": "j", "timestamp": TS}])
    table = pa.table({"trace_id": ["p"], "timestamp": [TS], 'col"umn': ["v"], "it's": ["w"]})
    pq.write_table(table, folder / f"o'brien {DAY}.parquet")
    result = ingest(tmp_path)
    assert sorted(result.clean["trace_id"]) == ["j", "p"]
    metadata = json.loads(result.clean.set_index("trace_id").loc["p", "metadata"])
    assert metadata == {'col"umn': "v", "it's": "w"}


def test_file_and_column_names_crafted_as_sql_run_nothing(tmp_path, monkeypatch):
    """Names that would close a quoted string and stack statements (copy a secret into the data,
    write a file) are read as names: nothing runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret_key").write_text("TOP-SECRET-KEY")
    folder = tmp_path / "traces"
    escape = "x'); COPY (SELECT 1) TO 'pwned.csv'; SELECT * FROM read_csv('secret_key') --"
    write_jsonl(folder / f"{escape} {DAY}.jsonl", [{"trace_id": "j", "timestamp": TS}])
    column = "c\" FROM read_text('secret_key')); COPY (SELECT 1) TO 'pwned2.csv'; --"
    table = pa.table({"trace_id": ["p"], "timestamp": [TS], column: ["' || (SELECT content FROM read_text('secret_key')) || '"]})
    pq.write_table(table, folder / f"{escape.replace('x', 'y')} {DAY}.parquet")
    result = ingest(tmp_path)
    assert sorted(result.clean["trace_id"]) == ["j", "p"]
    assert not list(tmp_path.glob("pwned*"))
    assert "TOP-SECRET-KEY" not in result.clean.astype("string").to_json() + result.quarantine.astype("string").to_json()
    assert json.loads(result.clean.set_index("trace_id").loc["p", "metadata"]) == {column: "' || (SELECT content FROM read_text('secret_key')) || '"}


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        ("2026-13-20T10:00:00Z", "timestamp is not ISO-8601: 2026-13-20T10:00:00Z"),
        ("2026-02-30T10:00:00Z", "timestamp is not ISO-8601: 2026-02-30T10:00:00Z"),
        ("infinity", "timestamp is not ISO-8601: infinity"),
        ("2026-11-20T10:00:00 PST", "timestamp is not ISO-8601: 2026-11-20T10:00:00 PST"),
        ("9999-01-01T00:00:00Z", "timestamp 9999-01-01T00:00:00Z is later than its file was written"),
        ("1970-01-01T00:00:00Z", f"timestamp 1970-01-01T00:00:00Z is before the first partition, {FIRST}"),
        ("0001-01-01T00:00:00Z", f"timestamp 0001-01-01T00:00:00Z is before the first partition, {FIRST}"),
    ],
)
def test_impossible_or_out_of_range_timestamps_are_quarantined_on_the_files_day(tmp_path, timestamp, reason):
    write_jsonl(tmp_path / "feedback" / f"events-{DAY}.jsonl", [{"event_id": "e", "trace_id": "t", "type": "copy", "timestamp": timestamp}])
    result = ingest(tmp_path, "feedback")
    assert result.clean.empty
    assert reason_of(result, "e") == reason


def test_timestamps_without_offset_are_utc_and_offsets_are_applied(tmp_path):
    write_jsonl(
        tmp_path / "feedback" / f"events-{DAY}.jsonl",
        [
            {"event_id": "naive", "trace_id": "t", "type": "copy", "timestamp": "2026-11-20 10:00:00.5"},
            {"event_id": "offset", "trace_id": "t", "type": "copy", "timestamp": "2026-11-20T23:30:00-0100"},
        ],
    )
    result = ingest(tmp_path, "feedback")
    stamps = result.clean.set_index("event_id")["timestamp"].astype(str)
    assert pd.Timestamp(stamps["naive"]) == pd.Timestamp("2026-11-20T10:00:00.5Z")
    assert "offset" not in stamps  # 2026-11-21 00:30 UTC
    assert ingest(tmp_path, "feedback", "2026-11-21").clean["event_id"].tolist() == ["offset"]


def test_a_bare_carriage_return_stays_inside_its_line(tmp_path):
    write_jsonl(
        tmp_path / "feedback" / f"events-{DAY}.jsonl",
        [
            b'{"event_id": "cr",\r "trace_id": "t", "type": "copy", "timestamp": "' + TS.encode() + b'"}',
            b'{"event_id": "crlf", "trace_id": "t", "type": "copy", "timestamp": "' + TS.encode() + b'"}\r',
            b"{broken",
        ],
    )
    result = ingest(tmp_path, "feedback")
    assert result.clean["event_id"].tolist() == ["cr", "crlf"]
    assert result.quarantine[["line", "reason"]].values.tolist() == [[3, "malformed JSON"]]


def test_a_duplicate_of_a_record_that_fails_the_schema_is_kept(tmp_path):
    write_jsonl(
        tmp_path / "traces" / f"{DAY}.jsonl",
        [
            {"trace_id": "t", "span_id": "", "timestamp": TS, "output": "first, unusable"},
            {"trace_id": "t", "span_id": "", "timestamp": TS, "output": "second"},
            {"trace_id": "u", "span_id": "s", "timestamp": TS, "output": "kept"},
            {"trace_id": "u", "span_id": "s", "timestamp": TS, "output": "dropped"},
        ],
    )
    result = ingest(tmp_path)
    assert result.clean["output"].tolist() == ["kept"]
    assert result.duplicates == 1
    assert len(result.quarantine) == 2  # both copies with the empty span_id: neither is clean
