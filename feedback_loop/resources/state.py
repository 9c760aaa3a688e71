"""Small JSON state kept between runs (the error-mode cluster registry), on universal-pathlib."""

import json
import uuid

import dagster as dg
from upath import UPath


class ClusterRegistry(dg.ConfigurableResource):
    """Clusters seen so far, with their term weights, so the next run can keep their ids.

    One snapshot per night, `<folder>/<day>.json`: a run for a window ending on `day` starts from
    the newest snapshot of an earlier day and writes its own, so a rerun of any date starts from
    what that date's first run started from and writes the same snapshot again."""

    folder: str = "data/state/error_mode_clusters"

    def load(self, day: str) -> dict:
        """The newest snapshot of a day before `day` (empty before the first)."""
        folder = UPath(self.folder)
        earlier = sorted(p.name for p in folder.glob("*.json") if p.name[:10] < day) if folder.exists() else []
        return json.loads((folder / earlier[-1]).read_text()) if earlier else {}

    def save(self, day: str, registry: dict) -> None:
        folder = UPath(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{day}.json"
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(registry, indent=1, sort_keys=True))
        tmp.rename(path)
