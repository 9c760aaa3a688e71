"""Column helpers on Arrow: each agrees with the plain pandas / Python definition."""

import numpy as np
import pandas as pd
import pyarrow as pa

from feedback_loop.lib.columns import one_array, positions, repeats, replaced, rows_kept, sort_order


def test_positions_are_get_indexer_with_missing_keys_never_found():
    index = pd.Series(["b", "a", None, "c"], dtype="string")
    keys = pd.Series(["a", "zz", None, "c", "b", "a"], dtype="string")
    assert positions(keys, index).tolist() == [1, -1, -1, 3, 0, 1]
    assert positions(keys, pd.Series([], dtype="string")).tolist() == [-1] * 6
    assert positions(np.array(["c"], dtype=object), index).tolist() == [3]


def test_rows_kept_is_a_boolean_row_filter_with_its_index_and_dtypes():
    frame = pd.DataFrame(
        {
            "s": pd.Series(["a", None, "c", "d"], dtype="string"),
            "n": [1.0, np.nan, 3.0, 4.0],
            "t": pd.to_datetime(["2026-11-20T01:00Z", None, "2026-11-20T03:00Z", "2026-11-20T04:00Z"]),
            "b": pd.array([True, None, False, True], dtype="boolean"),
        },
        index=[10, 11, 12, 13],
    )
    keep = np.array([False, True, True, False])
    pd.testing.assert_frame_equal(rows_kept(frame, keep), frame[keep])
    pd.testing.assert_frame_equal(rows_kept(frame, np.zeros(4, dtype=bool)), frame.iloc[:0])


def test_sort_order_is_a_stable_multi_column_sort_with_missing_values_last():
    frame = pd.DataFrame({"s": pd.Series(["b", "a", None, "a", "b"], dtype="string"), "t": [2, 1, 0, 1, 1]})
    expected = frame.sort_values(["s", "t"], kind="stable", na_position="last").index.to_numpy()
    assert sort_order(frame, ["s", "t"]).tolist() == expected.tolist() == [1, 3, 4, 0, 2]


def test_repeats_is_pandas_duplicated_over_several_columns_with_missing_values():
    frame = pd.DataFrame(
        {
            "a": pd.Series(["x", "x", "y", None, None, "x", "y"], dtype="string"),
            "b": pd.Series(["1", "2", "1", "1", "1", "1", None], dtype="string"),
        }
    )
    assert repeats(frame).tolist() == frame.duplicated(keep="first").tolist() == [False, False, False, False, True, True, False]
    assert repeats(frame[["a"]]).tolist() == frame.duplicated(subset=["a"]).tolist()
    assert repeats(frame.iloc[0:0]).tolist() == []
    chunked = pd.concat([pd.Series(["x", "y"], dtype="string[pyarrow]"), pd.Series(["y"], dtype="string[pyarrow]")], ignore_index=True)
    assert repeats(pd.DataFrame({"a": chunked})).tolist() == [False, False, True]  # a column of several Arrow chunks


def test_replaced_puts_the_new_values_at_their_rows():
    rng = np.random.default_rng(7)
    values = pd.Series([None if i % 11 == 0 else f"v{i}" * (i % 5) for i in range(300)], dtype="string", index=range(1000, 1300))
    halves = [pa.array(part, type=pa.large_string(), from_pandas=True) for part in (values.iloc[:120], values.iloc[120:])]
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(halves)), index=values.index)
    cases = [
        np.array([], dtype=int),
        np.array([0, 1, 2, 299]),  # at both ends
        np.arange(300),  # every row
        np.sort(rng.choice(300, 90, replace=False)),
    ]
    for rows in cases:
        new = [None if k % 7 == 3 else f"new{k}" for k in range(len(rows))]
        expected = values.tolist()
        for row, value in zip(rows, new, strict=True):
            expected[row] = value
        for column in (values, chunked):
            out = replaced(column, rows, new)
            assert out.index.equals(values.index)
            assert out.dtype == "string"
            assert [None if v is pd.NA else v for v in out.tolist()] == [None if v is pd.NA else v for v in expected]


def test_one_array_keeps_a_single_chunk_as_it_is_and_joins_several():
    first, second = pa.array(["a", None], type=pa.large_string()), pa.array(["b"], type=pa.large_string())
    single = one_array(pa.chunked_array([first]))
    assert single.buffers()[2].address == first.buffers()[2].address  # no copy
    assert one_array(pa.chunked_array([first, second])).to_pylist() == ["a", None, "b"]
    assert one_array(pa.chunked_array([], type=pa.large_string())).to_pylist() == []
    assert one_array(first) is first
