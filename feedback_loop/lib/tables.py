"""Tables read on demand: what the relabel steps take when a window is too large to hold at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from feedback_loop.lib.columns import is_in

PARTITION_COLUMN = "partition_date"


class Table(Protocol):
    """Daily partitions of a table: some partitions, some columns, some rows at a time
    (`feedback_loop.resources.warehouse.PartitionedTable` reads them from Parquet files)."""

    @property
    def partitions(self) -> list[str]: ...

    def read(self, partitions: Iterable[str] | None = None, columns: list[str] | None = None, rows_where: tuple[str, pd.Series] | None = None) -> pd.DataFrame: ...


@dataclass(frozen=True)
class FrameTable:
    """A frame in memory read as a `Table`, its partitions by `partition_date`."""

    frame: pd.DataFrame

    @property
    def partitions(self) -> list[str]:
        return sorted(self.frame[PARTITION_COLUMN].dropna().unique())

    def read(self, partitions: Iterable[str] | None = None, columns: list[str] | None = None, rows_where: tuple[str, pd.Series] | None = None) -> pd.DataFrame:
        keep = pd.Series(True, index=self.frame.index)
        if partitions is not None:
            keep &= self.frame[PARTITION_COLUMN].isin(list(partitions))
        if rows_where is not None:
            keep &= is_in(self.frame[rows_where[0]], rows_where[1])
        rows = self.frame[keep.to_numpy()]
        return rows[columns if columns is not None else list(rows.columns)].reset_index(drop=True)
