"""Where traces and feedback land: a folder of JSONL / Parquet files."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from feedback_loop.lib.landing import FIRST_DAY, Kind, landing_folder_exists, read_landing_day


class LandingFolder(dg.ConfigurableResource):
    """A landing folder holding `traces/*.jsonl|*.parquet` and `feedback/*.jsonl|*.parquet`."""

    root: str = "data/landing"

    def has(self, kind: Kind) -> bool:
        """Whether `<root>/<kind>/` exists."""
        return landing_folder_exists(self.root, kind)

    def read_day(self, kind: Kind, day: str, first_day: str = FIRST_DAY) -> pd.DataFrame:
        return read_landing_day(self.root, kind, day, first_day)
