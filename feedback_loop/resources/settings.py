"""The one resource that holds every threshold and weight (see docs/configuration.md)."""

import dagster as dg

from feedback_loop.lib.params import (
    DatasetParams,
    ErrorModeParams,
    IngestParams,
    LabelWeights,
    LinkingParams,
    SignalParams,
)


class FeedbackLoopSettings(dg.ConfigurableResource):
    """Thresholds and weights. Override in `defs/resources.py`, or per run through run config."""

    ingest: IngestParams = IngestParams()
    linking: LinkingParams = LinkingParams()
    signals: SignalParams = SignalParams()
    labels: LabelWeights = LabelWeights()
    error_modes: ErrorModeParams = ErrorModeParams()
    datasets: DatasetParams = DatasetParams()
