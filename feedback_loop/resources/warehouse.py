"""Partition-aware Parquet storage for every intermediate table, on universal-pathlib."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from feedback_loop.lib.text import ONE_BATCH, one_chunk

PARTITION_COLUMN = "partition_date"


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames as `<root>/<asset>/<partition>.parquet` (unpartitioned: `<root>/<asset>.parquet`).

    `root` is a local folder or any fsspec URL (`s3://bucket/prefix`, `memory://...`).
    A run over a range of partitions writes one file per partition, split by `partition_date`;
    loading a range concatenates the files that exist (a partition not materialized yet is skipped).
    An input whose `AssetIn` metadata names `columns` reads only those columns.
    Writes go to a temporary name first and are renamed into place, so readers never see half a file.
    """

    root: str = "data/warehouse"

    def path_for(self, asset_key: dg.AssetKey, partition_key: str | None = None) -> UPath:
        base = UPath(self.root).joinpath(*asset_key.path)
        return base / f"{partition_key}.parquet" if partition_key else base.with_name(base.name + ".parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not context.has_asset_partitions:
            self._write(self.path_for(context.asset_key), obj)
            return
        keys = context.asset_partition_keys
        if len(keys) == 1:
            self._write(self.path_for(context.asset_key, keys[0]), obj)
            return
        groups = dict(tuple(obj.groupby(PARTITION_COLUMN, sort=False))) if len(obj) else {}
        for key in keys:
            self._write(self.path_for(context.asset_key, key), groups.get(key, obj.iloc[0:0]))

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        columns = (context.definition_metadata or {}).get("columns")
        if not context.has_asset_partitions:
            path = self.path_for(context.asset_key)
            return one_chunk(self._read(path, columns)) if path.exists() else pd.DataFrame()
        paths = [path for key in context.asset_partition_keys if (path := self.path_for(context.asset_key, key)).exists()]
        if len(paths) > 1 and (joined := _read_in_one_chunk(paths, columns)) is not None:
            return joined
        frames = [self._read(path, columns) for path in paths]
        frames = [f for f in frames if len(f.columns)]
        if not frames:
            return pd.DataFrame()
        non_empty = [f for f in frames if len(f)]
        # One chunk per column, once the partitions are together: takes on many chunks are ~10x slower.
        return one_chunk(pd.concat(non_empty, ignore_index=True) if len(non_empty) > 1 else (non_empty or frames)[0])

    @staticmethod
    def _write(path: UPath, df: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            pq.write_table(table, fh)
        tmp.rename(path)

    @staticmethod
    def _read(path: UPath, columns: list[str] | None = None) -> pd.DataFrame:
        with path.open("rb") as fh:
            parquet = pq.ParquetFile(fh)
            names = parquet.schema_arrow.names
            return parquet.read(columns=None if columns is None else [c for c in columns if c in names]).to_pandas()


def _read_in_one_chunk(paths: list[UPath], columns: list[str] | None) -> pd.DataFrame | None:
    """Local partition files that share one schema, read in order by DuckDB on one thread straight
    into one Arrow chunk per column. Joining per-file tables into one chunk holds every column twice:
    for the texts of a 2.4M-trace window, 7.7 GB and 8.2 s, against 3.8 GB and 3.9 s this way.
    None when a file is not local or the schemas differ (the caller then joins the files itself)."""
    if any(path.protocol not in ("", "file") for path in paths):
        return None
    schemas = [pq.read_schema(path.path) for path in paths]
    if any(not schema.equals(schemas[0]) for schema in schemas[1:]):
        return None
    names = [name for name in (columns or schemas[0].names) if name in schemas[0].names]
    if not names:
        return pd.DataFrame()
    select = ", ".join('"' + name.replace('"', '""') + '"' for name in names)
    files = ", ".join("'" + path.path.replace("'", "''") + "'" for path in paths)
    with duckdb.connect(config={"threads": 1}) as con:  # one thread: one batch, in the files' order
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET arrow_large_buffer_size = true")
        table = con.sql(f"SELECT {select} FROM read_parquet([{files}])").to_arrow_table(batch_size=ONE_BATCH)
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()
    return table.replace_schema_metadata(schemas[0].metadata).to_pandas()  # the pandas dtypes the files were written with
