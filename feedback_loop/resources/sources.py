"""Where traces and feedback come from. Each source is a resource that, for a partition's pull
window, gives the records of one kind (`traces` or `feedback`) in the input contract's shape, the
ones it could not map among them with a reason. `kinds` says what a source feeds; several sources
may feed one kind. Configured from a YAML file (see docs/sources.md)."""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field, replace

import dagster as dg
import pandas as pd
import psycopg2
from pydantic import Field
from upath import UPath

from feedback_loop.lib.landing import Kind, PulledRecord, landing_folder_exists, read_landing_day, read_pulled_records
from feedback_loop.lib.sources import postgres
from feedback_loop.lib.sources.annotations import DEFAULT_NAMES, checked_names
from feedback_loop.lib.sources.http import Http, SourceUnavailable
from feedback_loop.lib.sources.langfuse import LangfuseScores, langfuse_generations, langfuse_scores
from feedback_loop.lib.sources.langfuse_export import export_runs, export_scores, observation_record, rows
from feedback_loop.lib.sources.langsmith import exported_runs, langsmith_feedback, langsmith_runs, project_id
from feedback_loop.lib.sources.otlp_files import export_files, read_export
from feedback_loop.lib.sources.phoenix import phoenix_feedback, phoenix_spans
from feedback_loop.lib.sources.span_records import span_records
from feedback_loop.lib.sources.window import PullWindow

# A span ends after it starts: stores filter on the start, the contract stamps the end.
SPAN_MARGIN = dt.timedelta(hours=1)


@dataclass
class Pulled:
    records: pd.DataFrame
    metadata: dict[str, object] = field(default_factory=dict)


class Source(dg.ConfigurableResource):
    """What every source is: the kinds it feeds, and a pull of one kind for a window."""

    kinds: list[str] = Field(default_factory=list, description="What this source feeds: `traces`, `feedback`, both, or nothing (off).")

    def feeds(self, kind: Kind) -> bool:
        return kind in self.kinds

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        """The records of `kind` the partition `window.day` takes (`first_day`: the first partition;
        `late_days`: how long after its response feedback may come)."""
        raise NotImplementedError(f"{type(self).__name__} does not pull")


class LandingFolder(Source):
    """A folder of `traces/*.jsonl|*.parquet` and `feedback/*.jsonl|*.parquet` in the contract's shape."""

    root: str = "data/landing"
    kinds: list[str] = Field(default_factory=lambda: ["traces", "feedback"])

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        if not landing_folder_exists(self.root, kind):
            raise dg.Failure(f"the landing folder has no {kind}/ folder: {self.root}/{kind} (set FEEDBACK_LOOP_LANDING)", allow_retries=False)
        return Pulled(read_landing_day(self.root, kind, window.day, first_day))


class JudgementNames(Source):
    """A source whose annotations or evaluations become feedback by their name."""

    annotation_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NAMES), description="Annotation name -> thumbs | rating | comment | correction.")
    annotator_kinds: list[str] | None = Field(default_factory=lambda: ["HUMAN"], description="Annotator kinds taken as feedback (null: any). Judgements that say no kind are taken.")

    def names(self) -> dict[str, str]:
        return checked_names(self.annotation_names)


class OtlpFiles(JudgementNames):
    """A folder of OTLP trace exports (JSON or protobuf, plain, gzip or zstd)."""

    root: str = "data/otlp"

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        files = [f for f in export_files(self.root) if f.written >= window.start]  # an older file holds no span of the window
        spans = [s for f in files for s in read_export(f.path) if s.span is not None or f.written.date().isoformat() == window.day]
        found = span_records(spans, self.names(), self.annotator_kinds, event_prefix="otel:")
        records = found.traces if kind == "traces" else found.feedback
        metadata = {"files_read": len(files), "spans_read": len(spans), "spans_not_llm": found.spans_not_llm, **_not_feedback(found.not_feedback)}
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), metadata)


class PhoenixSource(JudgementNames):
    """An Arize Phoenix server: a project's spans and their annotations, over the REST API."""

    url: str = "http://127.0.0.1:6006"
    project: str = "default"
    api_key: str | None = Field(default=None, description="Sent as a bearer token; from an environment variable (dg.EnvVar).")
    timeout_s: float = 30.0
    retries: int = 5

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        http = Http("phoenix", self.url, {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}, self.timeout_s, self.retries)
        try:
            # Feedback may come days after its response: look for it on the spans of the late-feedback window.
            since = window.start - SPAN_MARGIN - (dt.timedelta(days=late_days) if kind == "feedback" else dt.timedelta())
            spans = list(phoenix_spans(http, self.project, since, window.end))
            found = span_records(spans, self.names(), self.annotator_kinds, event_prefix="phoenix:")
            records = found.traces if kind == "traces" else found.feedback
            not_feedback = Counter(found.not_feedback)
            if kind == "feedback":
                annotations = phoenix_feedback(http, self.project, [s.span for s in spans if s.span is not None], self.names(), self.annotator_kinds)
                records = records + annotations.records
                not_feedback.update(annotations.not_feedback)
        finally:
            http.close()
        metadata = {"spans_read": len(spans), "spans_not_llm": found.spans_not_llm, **_not_feedback(not_feedback)}
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), metadata)


class LangfuseSource(JudgementNames):
    """Langfuse (Cloud or self-hosted): generations and scores over the public API."""

    host: str = "https://cloud.langfuse.com"
    public_key: str = Field(default="", description="The project's public key; from an environment variable (dg.EnvVar).")
    secret_key: str = Field(default="", description="The project's secret key; from an environment variable (dg.EnvVar).")
    annotation_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_NAMES) | {"user-feedback": "thumbs", "user_feedback": "thumbs"},
        description="Score name -> thumbs | rating for BOOLEAN and NUMERIC scores.",
    )
    write_back: bool = Field(default=False, description="Publish each regression-suite version as a Langfuse dataset and score each negative trace's error mode.")
    dataset_name: str = Field(default="feedback-loop-regression-suite", description="The Langfuse dataset the suite is written to.")
    timeout_s: float = 30.0
    retries: int = 5

    def client(self) -> Http:
        auth = "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return Http("langfuse", self.host, {"Authorization": auth}, self.timeout_s, self.retries)

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        http = self.client()
        try:
            if kind == "traces":
                records, metadata = list(langfuse_generations(http, window.start - SPAN_MARGIN, window.end)), {}
            else:
                scores = langfuse_scores(http, window.start, window.end, self.names(), self.annotator_kinds)
                records, metadata = scores.records, _not_feedback(scores.not_feedback)
        finally:
            http.close()
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), {"records_pulled": len(records), **metadata})


class LangfuseExport(JudgementNames):
    """Langfuse's blob-storage export: a folder or bucket (any fsspec URL) the integration writes to."""

    root: str = Field(default="", description="Where the export writes: the folder or URL (with its prefix) that holds `<project_id>/`.")
    project_id: str = Field(default="", description="The Langfuse project whose export to read (its folder under `root`).")
    annotation_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_NAMES) | {"user-feedback": "thumbs", "user_feedback": "thumbs"},
        description="Score name -> thumbs | rating for BOOLEAN and NUMERIC scores.",
    )

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        project = UPath(self.root) / self.project_id
        since = window.start - SPAN_MARGIN if kind == "traces" else window.start
        runs, records = export_runs(str(project), since)
        listed = sorted({f for run in runs for f in run.files})
        scores = LangfuseScores()
        if kind == "traces":
            enriched = [f for f in listed if f.startswith("observations_v2/")]
            legacy = [f for f in listed if f.startswith("observations/")] if not enriched else []
            traces = {row["id"]: row for f in listed if f.startswith("traces/") and legacy for _, row, _, _ in rows(project / f) if row and row.get("id")}
            for name in enriched or legacy:
                for position, row, raw, problem in rows(project / name):
                    source = f"langfuse export {name}"
                    record = PulledRecord(source, position, raw, problem=problem) if row is None else observation_record(source, position, row, raw, traces.get(row.get("trace_id")))
                    if record is not None:
                        records.append(record)
        else:
            for name in (f for f in listed if f.startswith("scores/")):
                for position, row, raw, problem in rows(project / name):
                    if row is None:
                        records.append(PulledRecord(f"langfuse export {name}", position, raw, problem=problem))
                    else:
                        export_scores(f"langfuse export {name}", position, row, raw, self.names(), self.annotator_kinds, scores)
            records += scores.records
        metadata = {"export_runs_read": len(runs), "files_read": len([f for f in listed if f.split("/")[0] in (("observations_v2", "observations", "traces") if kind == "traces" else ("scores",))])}
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), metadata | _not_feedback(scores.not_feedback))


class LangsmithSource(JudgementNames):
    """LangSmith (Cloud or self-hosted): a project's LLM runs and their feedback over the API."""

    endpoint: str = "https://api.smith.langchain.com"
    api_key: str = Field(default="", description="Sent as `x-api-key`; from an environment variable (dg.EnvVar).")
    project: str = Field(default="default", description="The project's name (resolved to its id), unless `project_id` is given.")
    project_id: str | None = None
    annotation_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_NAMES) | {"user_score": "thumbs", "thumbs_up": "thumbs", "user-feedback": "thumbs"},
        description="Feedback key -> thumbs | rating | comment | correction.",
    )
    timeout_s: float = 30.0
    retries: int = 5

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        http = Http("langsmith", self.endpoint, {"x-api-key": self.api_key}, self.timeout_s, self.retries)
        try:
            session = self.project_id or project_id(http, self.project)
            if kind == "traces":
                records, metadata = list(langsmith_runs(http, session, window.start - SPAN_MARGIN, window.end)), {}
            else:
                feedback = langsmith_feedback(http, session, window.start, window.end, self.names(), self.annotator_kinds)
                records, metadata = feedback.records, _not_feedback(feedback.not_feedback)
        finally:
            http.close()
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), {"records_pulled": len(records), **metadata})


class LangsmithExport(Source):
    """LangSmith's bulk export: the run-format Parquet files it writes to a bucket or folder (any
    fsspec URL); traces only, feedback comes from the API (`langsmith`)."""

    root: str = Field(default="", description="The destination's bucket and prefix, as a folder or URL.")

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        if kind != "traces":
            raise dg.Failure("langsmith_export gives traces only: take feedback from the langsmith source", allow_retries=False)
        start = window.start - SPAN_MARGIN
        folder = UPath(self.root)
        files = sorted((p for p in folder.rglob("*.parquet") if _written(p) >= start), key=str) if folder.is_dir() else []
        records = list(exported_runs(files, start, window.end))
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), {"files_read": len(files)})


def _written(path: UPath) -> dt.datetime:
    """When a file was written; a store that keeps no time gives 0, and then the file is read."""
    mtime = path.stat().st_mtime
    return dt.datetime.fromtimestamp(mtime, dt.UTC) if mtime else dt.datetime.max.replace(tzinfo=dt.UTC)


class PostgresTable(dg.Config):
    table: str = Field(description="`table` or `schema.table`; a view works too.")
    timestamp: str = Field(description="The column the window bounds.")
    columns: dict[str, str] = Field(description="Contract field -> column.")
    type_values: dict[str, str] | None = Field(default=None, description="Feedback: the product's event type -> contract type.")


class PostgresSource(Source):
    """Tables or views of the product's own PostgreSQL database."""

    url: str = Field(default="", description="A libpq connection string or URL; from an environment variable (dg.EnvVar).")
    name: str = Field(default="postgres", description="Prefixes the event ids it gives, so they never collide with another source's.")
    traces: PostgresTable | None = None
    feedback: PostgresTable | None = None

    def pull(self, kind: Kind, window: PullWindow, first_day: str, late_days: int) -> Pulled:
        table = self.traces if kind == "traces" else self.feedback
        if table is None:
            raise dg.Failure(f"postgres source feeds {kind} but has no `{kind}` table mapping", allow_retries=False)
        mapping = postgres.TableMapping(table.table, table.timestamp, table.columns, table.type_values)
        source = f"postgres {table.table}"
        try:
            with closing(psycopg2.connect(self.url)) as conn:
                conn.set_session(readonly=True)
                records = list(postgres.window_rows(conn, kind, mapping, window.start, window.end, source))
        except postgres.MappingError as err:
            raise dg.Failure(str(err), allow_retries=False) from None
        except psycopg2.OperationalError as err:  # the server is down or refuses: may pass
            raise SourceUnavailable(f"{source}: {str(err).strip()[:300]}") from None
        if kind == "feedback":
            records = [_prefixed(r, f"{self.name}:") for r in records]
        return Pulled(read_pulled_records(kind, records, window.day, window.accept_from, first_day), {"rows_read": len(records)})


def _prefixed(record: PulledRecord, prefix: str) -> PulledRecord:
    if record.fields is None or record.fields.get("event_id") is None:
        return record
    return replace(record, fields=record.fields | {"event_id": f"{prefix}{record.fields['event_id']}"})


def _not_feedback(names: Counter) -> dict[str, object]:
    return {"judgements_not_feedback": dict(sorted(names.items()))} if names else {}


SOURCE_KEYS = ("landing", "otlp_files", "phoenix", "langfuse", "langfuse_export", "langsmith", "langsmith_export", "postgres_source")  # resource keys, in the order their records are kept
