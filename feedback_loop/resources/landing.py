"""Where traces and feedback land: a folder of JSONL / Parquet files."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from feedback_loop.lib.landing import Kind, read_landing_day


class LandingFolder(dg.ConfigurableResource):
    """A landing folder holding `traces/*.jsonl|*.parquet` and `feedback/*.jsonl|*.parquet`."""

    root: str = "data/landing"

    def read_day(self, kind: Kind, day: str) -> pd.DataFrame:
        return read_landing_day(self.root, kind, day)
