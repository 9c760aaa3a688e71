"""Resources, from environment variables with embedded defaults (local files, no services)."""

import os

import dagster as dg

from feedback_loop.defs.progress import step_progress
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.landing import LandingFolder
from feedback_loop.resources.settings import FeedbackLoopSettings, IngestConfig
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import WarehouseIOManager


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        loggers={"console": dg.colored_console_logger, "step_progress": step_progress},
        resources={
            "io_manager": WarehouseIOManager(root=os.environ.get("FEEDBACK_LOOP_WAREHOUSE", "data/warehouse")),
            "landing": LandingFolder(root=os.environ.get("FEEDBACK_LOOP_LANDING", "data/landing")),
            "settings": FeedbackLoopSettings(ingest=IngestConfig(allow_empty_day=os.environ.get("FEEDBACK_LOOP_ALLOW_EMPTY_DAY", "") == "true")),
            "dataset_store": DatasetStoreResource(root=os.environ.get("FEEDBACK_LOOP_DATASETS", "data/datasets")),
            "privacy": Privacy(
                user_hash_key=dg.EnvVar("FEEDBACK_LOOP_USER_HASH_KEY"),
                opt_out_path=os.environ.get("FEEDBACK_LOOP_OPT_OUT") or None,
            ),
            "cluster_registry": ClusterRegistry(folder=os.environ.get("FEEDBACK_LOOP_STATE", "data/state") + "/error_mode_clusters"),
        },
    )
