import json

import pytest

from feedback_loop.lib.json_text import loads


@pytest.mark.parametrize(
    "text",
    [
        '[{"role": "user", "content": "caf\\u00e9 \\ud83d\\ude00"}]',
        "123456789012345678901234567890",  # orjson would read a float
        "-9223372036854775809",
        '{"id": 18446744073709551615, "x": [1.5, -0.0]}',
        "[NaN, Infinity, -Infinity]",  # orjson refuses these
        '"\\ud800"',  # a lone surrogate
        '{"a": 1, "a": 2}',
        "1.0000000000000002",
    ],
)
def test_loads_reads_what_the_standard_library_reads(text):
    assert repr(loads(text)) == repr(json.loads(text))


def test_loads_refuses_what_the_standard_library_refuses():
    with pytest.raises(ValueError):
        loads("{not json")
