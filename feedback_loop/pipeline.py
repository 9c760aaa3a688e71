"""Run what the nightly schedule runs for one date, in this process, through the same job definitions."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from feedback_loop.defs.jobs import relabel_tags


@dataclass
class NightlyReport:
    day: str
    runs: list[dg.ExecuteInProcessResult]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)

    def materializations(self) -> list[dg.AssetMaterialization]:
        return [event.materialization for r in self.runs for event in r.get_asset_materialization_events()]

    def summary_line(self) -> str:
        failed_checks = [e.check_name for r in self.runs for e in r.get_asset_check_evaluations() if not e.passed]
        status = "ok" if self.success else "FAILED"
        line = f"{self.day}: {status}, {len(self.materializations())} asset partitions materialized in {len(self.runs)} runs"
        return line + (f"; checks failed: {', '.join(sorted(set(failed_checks)))}" if failed_checks else "")


def run_nightly(day: str, instance: dg.DagsterInstance, defs: dg.Definitions | None = None) -> NightlyReport:
    """The ingest run for `day`, then (as the sensor does) the relabel run over the late-feedback window."""
    if defs is None:
        from feedback_loop.definitions import defs
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    ingest = defs.resolve_job_def("ingest_job")
    runs = [ingest.execute_in_process(partition_key=day, instance=instance, run_config=quiet, raise_on_error=False)]
    relabel = defs.resolve_job_def("relabel_job")
    if runs[0].success and relabel.asset_layer.executable_asset_keys:
        runs.append(relabel.execute_in_process(instance=instance, tags=relabel_tags(day), run_config=quiet, raise_on_error=False))
    return NightlyReport(day=day, runs=runs)
