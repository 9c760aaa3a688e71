"""Every tunable of the pipeline, in one documented place (see docs/configuration.md)."""

from __future__ import annotations

import dagster as dg


class IngestSettings(dg.Config):
    max_quarantine_share: float = 0.05  # quarantine check fails above this share of a partition's rows


class FeedbackLoopSettings(dg.ConfigurableResource):
    """Thresholds and weights. Override in `defs/resources.py` or through run config."""

    ingest: IngestSettings = IngestSettings()
