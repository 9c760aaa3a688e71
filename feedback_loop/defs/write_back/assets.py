"""Write-back: the regression suite and the error modes, back into Langfuse."""

import json

import dagster as dg
import pandas as pd

from feedback_loop.defs.partitions import daily_partitions
from feedback_loop.lib.datasets.published import REGRESSION_SUITE
from feedback_loop.lib.sources.http import SourceRejected, SourceUnavailable
from feedback_loop.lib.sources.langfuse import LANGFUSE_PROJECT
from feedback_loop.lib.sources.langfuse_write_back import error_mode_scores, write_scores, write_suite
from feedback_loop.resources.datasets import DatasetStoreResource
from feedback_loop.resources.sources import LangfuseSource
from feedback_loop.resources.warehouse import PartitionedTable

ITEMS = "langfuse_items.jsonl"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="write_back",
    deps=[REGRESSION_SUITE],
    ins={
        "error_modes": dg.AssetIn(),
        "raw_traces": dg.AssetIn(metadata={"lazy": True, "columns": ["trace_id", "metadata"]}),
    },
    retry_policy=dg.RetryPolicy(max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL),
)
def langfuse_write_back(
    context: dg.AssetExecutionContext, langfuse: LangfuseSource, dataset_store: DatasetStoreResource, error_modes: pd.DataFrame, raw_traces: PartitionedTable
) -> dg.MaterializeResult:
    """The newest regression-suite version as the Langfuse dataset `langfuse.dataset_name` (items
    upserted by case id; cases that left the suite archived), and each negative trace that came from
    Langfuse scored with its error mode (`error_mode`, CATEGORICAL, one score per trace, upserted by
    a stable id). Reruns write the same items and scores again: nothing is duplicated. Off unless
    the Langfuse source sets `write_back`."""
    if not langfuse.write_back:
        return dg.MaterializeResult(metadata={"write_back": "off (set write_back on the langfuse source)"})
    store = dataset_store.store()
    latest = store.latest(REGRESSION_SUITE)
    items = _items(store, latest) if latest else []
    current = {item["id"] for item in items}
    earlier = {item["id"] for version in store.versions(REGRESSION_SUITE) if version != latest for item in _items(store, version)}
    modes = error_modes if len(error_modes.columns) else pd.DataFrame(columns=["trace_id"])
    traces = raw_traces.read(rows_where=("trace_id", modes["trace_id"])) if len(modes) else pd.DataFrame(columns=["trace_id", "metadata"])
    from_langfuse = {t for t, meta in zip(traces["trace_id"], traces["metadata"], strict=True) if isinstance(meta, str) and LANGFUSE_PROJECT in json.loads(meta)}
    scores = error_mode_scores(modes[modes["trace_id"].isin(from_langfuse)]) if len(modes) else []
    http = langfuse.client()
    try:
        counts = write_suite(http, langfuse.dataset_name, items, sorted(earlier - current))
        counts["error_mode_scores"] = write_scores(http, scores)
    except SourceRejected as err:
        raise dg.Failure(f"langfuse_write_back: {err}", allow_retries=False) from None
    except SourceUnavailable as err:
        raise dg.Failure(f"langfuse_write_back: {err}", allow_retries=True) from None
    finally:
        http.close()
    return dg.MaterializeResult(
        metadata={
            "dataset": langfuse.dataset_name,
            "suite_version": latest or "",
            **counts,
            "negative_traces_not_from_langfuse": int(len(modes) - len(scores)),
        }
    )


def _items(store, version: str) -> list[dict]:
    return [json.loads(line) for line in store.read_bytes(REGRESSION_SUITE, version, ITEMS).decode().splitlines() if line.strip()]
