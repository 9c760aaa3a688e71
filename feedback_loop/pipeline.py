"""Run what the nightly schedule runs for one date, in this process, through the same job definitions."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from feedback_loop.defs.jobs import relabel_tags


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reported. `execute_in_process` results hold every output value in memory;
    keeping only this lets a run's DataFrames go before the next run starts."""

    run_id: str
    success: bool
    materializations: list[dg.AssetMaterialization]
    failed_checks: list[str]

    @classmethod
    def of(cls, result: dg.ExecuteInProcessResult) -> RunSummary:
        return cls(
            run_id=result.run_id,
            success=result.success,
            materializations=[event.materialization for event in result.get_asset_materialization_events()],
            failed_checks=[e.check_name for e in result.get_asset_check_evaluations() if not e.passed],
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
        return line + (f"; checks failed: {', '.join(sorted(set(failed_checks)))}" if failed_checks else "")


def run_nightly(day: str, instance: dg.DagsterInstance, defs: dg.Definitions | None = None) -> NightlyReport:
    """The ingest run for `day`, then (as the sensor does) the relabel run over the late-feedback window."""
    if defs is None:
        from feedback_loop.definitions import defs
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    ingest = defs.resolve_job_def("ingest_job")
    runs = [RunSummary.of(ingest.execute_in_process(partition_key=day, instance=instance, run_config=quiet, raise_on_error=False))]
    relabel = defs.resolve_job_def("relabel_job")
    if runs[0].success and relabel.asset_layer.executable_asset_keys:
        runs.append(RunSummary.of(relabel.execute_in_process(instance=instance, tags=relabel_tags(day), run_config=quiet, raise_on_error=False)))
    return NightlyReport(day=day, runs=runs)
