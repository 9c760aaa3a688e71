"""Erasure: remove users from every published dataset version, on request."""

import dagster as dg
from upath import UPath

from feedback_loop.lib.datasets.forget import erase_users
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.warehouse import PartitionedTable, WarehouseIOManager


class ErasureRequest(dg.Config):
    users: list[str]  # user ids as the product logs them (compared normalized, as on the opt-out list)


def warehouse_table(io_manager: WarehouseIOManager, asset: str) -> PartitionedTable:
    """Every partition of a warehouse table."""
    folder = UPath(io_manager.root) / asset
    files = sorted(folder.glob("*.parquet"), key=str) if folder.exists() else []
    return PartitionedTable(files={path.stem: path for path in files})


@dg.op(description="Rewrite every dataset version holding the users' data without it (new versions; the old files deleted).")
def erase_users_from_datasets(context: dg.OpExecutionContext, config: ErasureRequest, dataset_store: DatasetStoreResource, privacy: Privacy, io_manager: dg.ResourceParam[WarehouseIOManager]) -> None:
    rewrites = erase_users(dataset_store.store(), warehouse_table(io_manager, "raw_traces"), warehouse_table(io_manager, "linked_feedback"), set(config.users), privacy.user_hash_key)
    for rewrite in rewrites:
        context.log.info(f"{rewrite.dataset} {rewrite.replaced} -> {rewrite.version}: removed {rewrite.rows_removed}")
    if not rewrites:
        context.log.info("no published version holds these users' data")


@dg.job(description="Erase users from every published dataset version. Add them to the opt-out list too, or the next night publishes them again.")
def erase_users_job():
    erase_users_from_datasets()
