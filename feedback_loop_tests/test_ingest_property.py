"""Property: whatever a landing file holds, reading and normalizing every day it can touch never
crashes, and each of its records is in exactly one of the clean table, the quarantine (with a
reason) or the dropped duplicates."""

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_loop.lib.landing import JSON_FIELDS, SCALAR_FIELDS, read_landing_day
from feedback_loop.lib.normalize import normalize_feedback, normalize_traces

DAY = dt.date(2026, 11, 20)
FIRST = DAY - dt.timedelta(days=1)
DAYS = [(DAY + dt.timedelta(days=n)).isoformat() for n in range(-1, 2)]  # every day a record can be attributed to
EXAMPLES = 100
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
timestamps = st.one_of(
    st.datetimes(min_value=dt.datetime(2026, 11, 18, 12), max_value=dt.datetime(2026, 11, 21, 23, 59)).map(lambda t: t.isoformat() + "Z"),
    st.datetimes(min_value=dt.datetime(2026, 11, 19), max_value=dt.datetime(2026, 11, 22)).map(lambda t: t.isoformat() + "+05:30"),
    st.sampled_from(["2026-13-20T00:00:00Z", "2026-02-30", "infinity", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "0001-01-01", "2026-11-20T10:00:00 PST", ""]),
    st.text(max_size=20),
    json_values,
)
ids = st.sampled_from(["a", "b", "c", "", " "]) | st.text(max_size=8) | json_values
numbers = st.floats() | st.integers(-(2**80), 2**80) | st.sampled_from(["12", "1e400", "-3", "slow", "9.3e12"]) | json_values
event_types = st.sampled_from(["thumbs_up", "THUMBS_DOWN ", "rating", "edit", "copy", "share"]) | st.text(max_size=8) | json_values
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values, "content": st.text(max_size=12) | json_values}), max_size=4)


def records(kind: str) -> st.SearchStrategy[dict]:
    common = {"timestamp": timestamps, "trace_id": ids, "span_id": ids, "session_id": ids, "user_id": ids, "metadata": json_values, "extra field": json_values}
    if kind == "traces":
        fields = common | {
            "input": st.text(max_size=12) | messages | json_values,
            "output": st.text(max_size=12) | json_values,
            "latency_ms": numbers,
            "input_tokens": numbers,
            "output_tokens": numbers,
        }
    else:
        fields = common | {"event_id": ids, "type": event_types, "value": numbers | st.text(max_size=12), "reason": st.text(max_size=8), "comment": st.text(max_size=12)}
    return st.fixed_dictionaries({}, optional=fields)


def lines(kind: str) -> st.SearchStrategy[tuple[bytes, int]]:
    """(a line without its line feed, how many records it is: 0 for a blank line)."""
    record = records(kind).map(lambda r: (json.dumps(r).encode(), 1))
    return st.one_of(
        record,
        record,
        record.map(lambda line: (line[0][: max(1, len(line[0]) // 2)], 1)),  # cut short
        record.map(lambda line: (line[0].replace(b", ", b",\r ", 1), 1)),  # a bare CR between fields
        record.map(lambda line: (line[0] + b"\r", 1)),  # CRLF
        st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b and b.strip(b" \r")).map(lambda b: (b, 1)),
        json_values.map(lambda v: (json.dumps(v).encode(), 1)),
        st.sampled_from([b"", b"   "]).map(lambda b: (b, 0)),
    )


def accounted(root: Path, kind: str) -> int:
    normalize = normalize_traces if kind == "traces" else normalize_feedback
    total = 0
    for day in DAYS:
        result = normalize(read_landing_day(str(root), kind, day, first_day=FIRST.isoformat()), day)
        assert result.quarantine["reason"].notna().all()
        total += len(result.clean) + len(result.quarantine) + result.duplicates
    return total


def check_jsonl(tmp_path_factory, kind: str, file_lines: list[tuple[bytes, int]]) -> None:
    root = tmp_path_factory.mktemp("landing")
    (root / kind).mkdir()
    (root / kind / f"{DAY}.jsonl").write_bytes(b"\n".join(line for line, _ in file_lines))
    assert accounted(root, kind) == sum(n for _, n in file_lines)


@FUZZ
@given(st.lists(lines("traces"), max_size=12))
def test_every_trace_line_is_accounted_for(tmp_path_factory, file_lines):
    check_jsonl(tmp_path_factory, "traces", file_lines)


@FUZZ
@given(st.lists(lines("feedback"), max_size=12))
def test_every_feedback_line_is_accounted_for(tmp_path_factory, file_lines):
    check_jsonl(tmp_path_factory, "feedback", file_lines)


contract_names = st.sampled_from(sorted(set(SCALAR_FIELDS["traces"] + JSON_FIELDS["traces"] + SCALAR_FIELDS["feedback"])))
column_names = contract_names | st.text(min_size=1, max_size=8)


@FUZZ
@given(
    st.sampled_from(["traces", "feedback"]),
    st.dictionaries(column_names, st.none() | st.text(max_size=10) | json_values.map(json.dumps) | timestamps.map(str), min_size=1, max_size=8),
    st.integers(1, 5),
)
def test_every_parquet_row_is_accounted_for(tmp_path_factory, kind, row, copies):
    root = tmp_path_factory.mktemp("landing")
    (root / kind).mkdir()
    table = pa.table({name: pa.array([value] * copies, pa.string()) for name, value in row.items()})
    pq.write_table(table, root / kind / f"{DAY}.parquet")
    assert accounted(root, kind) == copies
