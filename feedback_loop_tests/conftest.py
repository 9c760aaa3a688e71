import datetime as dt
import importlib.util
import json
import os
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from feedback_loop.resources.datasets import DatasetStoreResource, Privacy
from feedback_loop.resources.judge import Judge
from feedback_loop.resources.settings import FeedbackLoopSettings
from feedback_loop.resources.sources import LandingFolder, LangfuseExport, LangfuseSource, LangsmithExport, LangsmithSource, OtlpFiles, PhoenixSource, PostgresSource
from feedback_loop.resources.state import ClusterRegistry
from feedback_loop.resources.warehouse import WarehouseIOManager
from feedback_loop.sample.generator import GeneratorConfig, generate

END = dt.date(2026, 11, 20)
BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script (`bench/run.py`) as a module."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """Three days of sample data with ground truth, shared read-only by the tests."""
    root = tmp_path_factory.mktemp("landing")
    generate(root, GeneratorConfig(days=3, traces_per_day=300, seed=7, end_date=END))
    return root


@pytest.fixture
def resources(generated, tmp_path) -> dict:
    return resources_in(tmp_path, generated)


def resources_in(tmp_path: Path, landing: Path) -> dict:
    """The code location's resources with every place under `tmp_path`, reading `landing`."""
    (tmp_path / "opt_out.txt").write_text("# users who opted out, one id a line\n")  # a configured list must exist
    return {
        "io_manager": WarehouseIOManager(root=str(tmp_path / "warehouse")),
        "landing": LandingFolder(root=str(landing)),
        "otlp_files": OtlpFiles(),  # off: no kinds
        "phoenix": PhoenixSource(),
        "langfuse": LangfuseSource(),
        "langfuse_export": LangfuseExport(),
        "langsmith": LangsmithSource(),
        "langsmith_export": LangsmithExport(),
        "postgres_source": PostgresSource(),
        "settings": FeedbackLoopSettings(),
        "cluster_registry": ClusterRegistry(folder=str(tmp_path / "state" / "clusters")),
        "judge": Judge(cache_folder=str(tmp_path / "state" / "judge")),  # off: no base URL
        "dataset_store": DatasetStoreResource(root=str(tmp_path / "datasets")),
        "privacy": Privacy(user_hash_key="test-key", opt_out_path=str(tmp_path / "opt_out.txt")),
    }


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw bytes / str lines) as a JSONL file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for row in rows:
            if isinstance(row, bytes):
                fh.write(row + b"\n")
            elif isinstance(row, str):
                fh.write(row.encode() + b"\n")
            else:
                fh.write(json.dumps(row).encode() + b"\n")
    return path


def ephemeral() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def defs_with(resources: dict) -> dg.Definitions:
    """The project's definitions with some resources replaced."""
    from feedback_loop.definitions import defs

    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        loggers=defs.loggers,
        resources={**(defs.resources or {}), **resources},
    )


PG = {"host": os.environ.get("FEEDBACK_LOOP_PG_HOST", "127.0.0.1"), "port": int(os.environ.get("FEEDBACK_LOOP_PG_PORT", "5432")), "user": os.environ.get("FEEDBACK_LOOP_PG_USER", "postgres")}


@pytest.fixture
def pg_database():
    """A new database on the PostgreSQL server, dropped after the test."""
    name = f"feedback_loop_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", password=os.environ.get("FEEDBACK_LOOP_PG_PASSWORD", ""), **PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield name
    admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def s3(monkeypatch):
    """A local S3-compatible server (moto) that s3:// paths reach through AWS_ENDPOINT_URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield boto3.client("s3")
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="session")
def files_reference(tmp_path_factory):
    """Two generated days run from files once, the reference the store tests compare against."""
    from feedback_loop_tests.stores import files_run

    return files_run(tmp_path_factory.mktemp("files-reference"))
