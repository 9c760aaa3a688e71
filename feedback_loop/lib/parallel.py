"""Running work on every core: column work in slices on a thread per core (Arrow and NumPy release
the GIL), pure-Python work on a forked process per core."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa


def in_chunks(values: pd.Series | pa.Array | pa.ChunkedArray, compute: Callable, rows: int = 20_000) -> np.ndarray:
    """`compute` over slices of `rows` values (a Series or an Arrow array), on a thread per core,
    concatenated. For column-wise work in Arrow and NumPy (they release the GIL; one Arrow call uses
    one core): small slices also keep the working arrays in cache."""
    if len(values) <= rows:
        return compute(values)
    cut = (lambda start: values.iloc[start : start + rows]) if isinstance(values, pd.Series) else (lambda start: values.slice(start, rows))
    slices = [cut(start) for start in range(0, len(values), rows)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return np.concatenate(list(pool.map(compute, slices)))


def in_processes(function: Callable, items: list, min_items: int = 2) -> list:
    """`[function(item) for item in items]` on forked worker processes, one per core, for pure-Python
    work (threads would not run it in parallel). `function` must be picklable: a module-level
    function or a bound method. Below `min_items`, starting workers costs more than it saves."""
    cores = os.cpu_count() or 1
    if len(items) < min_items or cores < 2:
        return [function(item) for item in items]
    with ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(function, items, chunksize=max(1, len(items) // (cores * 8))))
