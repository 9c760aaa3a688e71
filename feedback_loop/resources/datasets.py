"""Resources for publishing datasets: the versioned store, and privacy settings."""

from pathlib import Path

import dagster as dg
from upath import UPath

from feedback_loop.lib.datasets.store import DatasetStore


class DatasetStoreResource(dg.ConfigurableResource):
    """Versioned datasets under `root` (a folder or an fsspec URL such as s3://bucket/datasets)."""

    root: str = "data/datasets"

    def store(self) -> DatasetStore:
        return DatasetStore(self.root)


class Privacy(dg.ConfigurableResource):
    """How user data is protected at export.

    `user_hash_key` keys the HMAC that replaces user ids (set it from a secret:
    `dg.EnvVar("FEEDBACK_LOOP_USER_HASH_KEY")`); `opt_out_path` is a text file (one user id per line,
    local or fsspec URL) of users whose rows are never exported. A missing file means nobody opted out.
    """

    user_hash_key: str
    opt_out_path: str = "data/opt_out_users.txt"

    def opted_out(self) -> set[str]:
        path = UPath(self.opt_out_path)
        if not path.exists():
            return set()
        return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def local_hash_key(state_dir: str) -> str:
    """A random key kept in the state folder, for the embedded default only (the CLI's demo and run)."""
    path = Path(state_dir) / "user_hash_key"
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
