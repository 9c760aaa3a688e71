"""Column-wise text helpers on Arrow (RE2 regular expressions, no Python loop per row)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def lowered(values: pd.Series) -> pa.Array:
    """The column as lower-cased Arrow text (missing values as empty strings)."""
    return pc.utf8_lower(pa.array(values.astype("string").fillna(""), type=pa.large_string()))


def matches(text: pa.Array, pattern: str) -> np.ndarray:
    """Whether each text contains a match of the RE2 `pattern`."""
    return pc.match_substring_regex(text, pattern).to_numpy(zero_copy_only=False).astype(bool)
