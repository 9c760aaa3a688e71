"""The one resource that holds every threshold and weight (see docs/configuration.md)."""

import dagster as dg

from feedback_loop.lib import params

# Each group as Dagster config: the same fields and defaults as the plain model in `lib/params.py`,
# and an instance of it, so the lib functions take a group as it comes from run config.


class IngestConfig(params.IngestParams, dg.Config):
    pass


class LinkingConfig(params.LinkingParams, dg.Config):
    pass


class SignalConfig(params.SignalParams, dg.Config):
    pass


class LabelWeightsConfig(params.LabelWeights, dg.Config):
    pass


class ErrorModeConfig(params.ErrorModeParams, dg.Config):
    pass


class DatasetConfig(params.DatasetParams, dg.Config):
    pass


class FeedbackLoopSettings(dg.ConfigurableResource):
    """Thresholds and weights. Override in `defs/resources.py`, or per run through run config."""

    ingest: IngestConfig = IngestConfig()
    linking: LinkingConfig = LinkingConfig()
    signals: SignalConfig = SignalConfig()
    labels: LabelWeightsConfig = LabelWeightsConfig()
    error_modes: ErrorModeConfig = ErrorModeConfig()
    datasets: DatasetConfig = DatasetConfig()
