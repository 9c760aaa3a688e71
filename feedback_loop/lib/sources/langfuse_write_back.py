"""What the pipeline writes back to Langfuse, through the public API:

- the regression suite as a Langfuse dataset: `POST /api/public/v2/datasets` (the dataset), then
  `POST /api/public/dataset-items` per case with the case id as the item id (Langfuse upserts items
  on their id, so a new suite version updates items instead of adding them); a case that left the
  suite is upserted with `status: ARCHIVED`;
- each negative trace's error mode as a CATEGORICAL score on its trace: `POST /api/public/scores`
  with the id `feedback-loop:error-mode:<trace id>` (Langfuse upserts scores on their id, so a rerun,
  or a mode that changed, updates the one score).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from feedback_loop.lib.sources.http import Http

ERROR_MODE_SCORE = "error_mode"


def score_id(trace_id: str) -> str:
    return f"feedback-loop:error-mode:{trace_id}"


def write_suite(http: Http, dataset: str, items: list[dict], retired: Iterable[str]) -> dict[str, int]:
    """Upsert the suite's items into `dataset`, archive the retired case ids; counts of each."""
    http.request(
        "POST",
        "/api/public/v2/datasets",
        json={"name": dataset, "description": "Regression cases published by feedback_loop: hard cases by error mode, with their assertions.", "metadata": {"source": "feedback_loop"}},
    )
    for item in items:
        http.request("POST", "/api/public/dataset-items", json={"datasetName": dataset, **item, "status": "ACTIVE"})
    archived = 0
    for case_id in retired:
        http.request("POST", "/api/public/dataset-items", json={"datasetName": dataset, "id": case_id, "status": "ARCHIVED"})
        archived += 1
    return {"items_upserted": len(items), "items_archived": archived}


def error_mode_scores(modes: pd.DataFrame, environment: str | None = None) -> list[dict]:
    """One CATEGORICAL score per negative trace (`modes`: trace_id, mode, mode_id, confidence,
    evidence_source, taxonomy_version). The evidence text stays out: it may quote a user."""
    return [
        {
            "id": score_id(row.trace_id),
            "traceId": row.trace_id,
            "name": ERROR_MODE_SCORE,
            "value": row.mode,
            "dataType": "CATEGORICAL",
            "comment": f"{row.mode_id}, confidence {row.confidence:.2f}, from {row.evidence_source}",
            "metadata": {"mode_id": row.mode_id, "confidence": float(row.confidence), "evidence_source": row.evidence_source, "taxonomy_version": row.taxonomy_version, "source": "feedback_loop"},
            **({"environment": environment} if environment else {}),
        }
        for row in modes.itertuples()
    ]


def write_scores(http: Http, scores: list[dict]) -> int:
    for score in scores:
        http.request("POST", "/api/public/scores", json=score)
    return len(scores)
