"""Resources, from environment variables with embedded defaults (local files, no services).

Sources come from the YAML file `FEEDBACK_LOOP_SOURCES` names (docs/sources.md); without it the
landing folder feeds both kinds."""

import os

import dagster as dg

from feedback_loop.defs.progress import step_progress
from feedback_loop.lib.sources.config import read_sources_config
from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.judge import Judge
from feedback_loop.resources.settings import FeedbackLoopSettings, IngestConfig
from feedback_loop.resources.sources import LandingFolder, LangfuseExport, LangfuseSource, LangsmithExport, LangsmithSource, OtlpFiles, PhoenixSource, PostgresSource
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import WarehouseIOManager


def source_resources(config: dict) -> dict[str, dg.ConfigurableResource]:
    """One resource per source key; a source the file does not name is off (the landing folder excepted)."""
    landing = {"root": os.environ.get("FEEDBACK_LOOP_LANDING", "data/landing")} | config.get("landing", {})
    phoenix, langfuse, langsmith, postgres = (dict(config.get(name, {})) for name in ("phoenix", "langfuse", "langsmith", "postgres"))
    # Secrets are named in the file as environment variables, read when a run starts.
    for settings, field in ((phoenix, "api_key"), (langfuse, "public_key"), (langfuse, "secret_key"), (langsmith, "api_key"), (postgres, "url")):
        if key := settings.pop(f"{field}_env", None):
            settings[field] = dg.EnvVar(key)
    off_unless_named = {"kinds": []}
    return {
        "landing": LandingFolder(**landing) if "landing" in config or not config else LandingFolder(**landing, kinds=[]),
        "otlp_files": OtlpFiles(**(off_unless_named | config.get("otlp_files", {}))),
        "phoenix": PhoenixSource(**(off_unless_named | phoenix)),
        "langfuse": LangfuseSource(**(off_unless_named | langfuse)),
        "langfuse_export": LangfuseExport(**(off_unless_named | config.get("langfuse_export", {}))),
        "langsmith": LangsmithSource(**(off_unless_named | langsmith)),
        "langsmith_export": LangsmithExport(**(off_unless_named | config.get("langsmith_export", {}))),
        "postgres_source": PostgresSource(**(off_unless_named | postgres)),
    }


def judge_resource(config: dict, cache_folder: str) -> Judge:
    """The judge the file's `judge` section describes (off without a base URL and a model)."""
    settings = dict(config)
    if key := settings.pop("api_key_env", None):
        settings["api_key"] = dg.EnvVar(key)
    return Judge(cache_folder=cache_folder, **settings)


@dg.definitions
def resources() -> dg.Definitions:
    sources = read_sources_config(os.environ.get("FEEDBACK_LOOP_SOURCES") or None)
    state = os.environ.get("FEEDBACK_LOOP_STATE", "data/state")
    ingest = IngestConfig(allow_empty_day=os.environ.get("FEEDBACK_LOOP_ALLOW_EMPTY_DAY", "") == "true", **sources.get("ingest", {}))
    return dg.Definitions(
        loggers={"console": dg.colored_console_logger, "step_progress": step_progress},
        resources={
            "io_manager": WarehouseIOManager(root=os.environ.get("FEEDBACK_LOOP_WAREHOUSE", "data/warehouse")),
            **source_resources(sources.get("sources", {})),
            "settings": FeedbackLoopSettings(ingest=ingest),
            "dataset_store": DatasetStoreResource(root=os.environ.get("FEEDBACK_LOOP_DATASETS", "data/datasets")),
            "privacy": Privacy(
                user_hash_key=dg.EnvVar("FEEDBACK_LOOP_USER_HASH_KEY"),
                opt_out_path=os.environ.get("FEEDBACK_LOOP_OPT_OUT") or None,
            ),
            "cluster_registry": ClusterRegistry(folder=state + "/error_mode_clusters"),
            "judge": judge_resource(sources.get("judge", {}), state + "/judge"),
        },
    )
