"""Run what the nightly schedule runs for one date, in this process, through the same job definitions."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import dagster as dg

from feedback_loop.defs.jobs import relabel_tags
from feedback_loop.defs.runs import HOST_TAG


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reported (an `execute_in_process` result holds every output value;
    keeping only this lets a run's DataFrames go before the next run starts)."""

    run_id: str
    success: bool
    materializations: list[dg.AssetMaterialization]
    failed_checks: list[str]  # asset:check
    errors: list[str]  # the first line of each failed step's error

    @classmethod
    def of(cls, result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> RunSummary:
        return cls(
            run_id=result.run_id,
            success=result.success,
            materializations=[event.materialization for event in result.get_asset_materialization_events()],
            failed_checks=[f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed],
            errors=[f"{e.step_key}: {_first_line(e)}" for e in result.get_step_failure_events()],
        )


@dataclass
class NightlyReport:
    day: str
    runs: list[RunSummary]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)

    def materializations(self) -> list[dg.AssetMaterialization]:
        return [m for r in self.runs for m in r.materializations]

    def summary_line(self) -> str:
        failed_checks = [name for r in self.runs for name in r.failed_checks]
        status = "ok" if self.success else "FAILED"
        line = f"{self.day}: {status}, {len(self.materializations())} asset partitions materialized in {len(self.runs)} runs"
        line += f"; checks failed: {', '.join(sorted(set(failed_checks)))}" if failed_checks else ""
        return "\n".join([line, *(f"  error in {error}" for r in self.runs for error in r.errors)])


def _first_line(event: dg.DagsterEvent) -> str:
    error = event.step_failure_data.error
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    return error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name or "failed"


def run_nightly(day: str, instance: dg.DagsterInstance, defs: dg.Definitions | None = None, progress: bool = False) -> NightlyReport:
    """The ingest run for `day`, then (as the sensor does) the relabel run over the late-feedback window.

    With the code location's own definitions (`defs` None) each run goes through `execute_job`, as
    a launched run does: no output is kept in memory (in-process execution holds every step's
    output until the run ends, ~5 GB at 1M traces). Definitions built elsewhere (tests, the
    evaluation) cannot be reconstructed in another process and run with `execute_in_process`.
    `progress` prints a line per finished step. Each run is tagged with this machine's name, so a
    run whose process dies can be told apart and marked failed (`defs/runs.py`)."""
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}, **({"step_progress": {}} if progress else {})}}
    tags_here = {HOST_TAG: socket.gethostname()}

    def execute(job_name: str, tags: dict[str, str]) -> RunSummary:
        tags = {**tags, **tags_here}
        if defs is None:
            job = dg.reconstructable(ingest_job if job_name == "ingest_job" else relabel_job)
            with dg.execute_job(job, instance=instance, run_config=quiet, tags=tags) as result:
                return RunSummary.of(result)
        job_def = defs.resolve_job_def(job_name)
        return RunSummary.of(job_def.execute_in_process(instance=instance, tags=tags, run_config=quiet, raise_on_error=False))

    runs = [execute("ingest_job", {"dagster/partition": day})]
    if runs[0].success and _has_relabel_assets(defs):
        runs.append(execute("relabel_job", relabel_tags(day)))
    return NightlyReport(day=day, runs=runs)


def ingest_job() -> dg.JobDefinition:
    """The code location's ingest job (a module-level function, so that runs can reconstruct it)."""
    from feedback_loop.definitions import defs

    return defs.resolve_job_def("ingest_job")


def relabel_job() -> dg.JobDefinition:
    """The code location's relabel job (a module-level function, so that runs can reconstruct it)."""
    from feedback_loop.definitions import defs

    return defs.resolve_job_def("relabel_job")


def _has_relabel_assets(defs: dg.Definitions | None) -> bool:
    job = defs.resolve_job_def("relabel_job") if defs is not None else relabel_job()
    return bool(job.asset_layer.executable_asset_keys)
