"""Small JSON state kept between runs (the error-mode cluster registry), on universal-pathlib."""

import json

import dagster as dg
from upath import UPath


class ClusterRegistry(dg.ConfigurableResource):
    """Clusters seen so far, with their term weights, so the next run can keep their ids."""

    path: str = "data/state/error_mode_clusters.json"

    def load(self) -> dict:
        path = UPath(self.path)
        return json.loads(path.read_text()) if path.exists() else {}

    def save(self, registry: dict) -> None:
        path = UPath(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(registry, indent=1, sort_keys=True))
        tmp.rename(path)
