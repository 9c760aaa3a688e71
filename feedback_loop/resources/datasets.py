"""Resources for publishing datasets: the versioned store, and privacy settings."""

from pathlib import Path

import dagster as dg

from feedback_loop.lib.datasets.opt_out import read_opt_out
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
    local or fsspec URL) of users whose data is never exported. A path that is set but is not a
    file fails the run (a mistyped path must not mean "nobody opted out"); unset, the list is
    `DEFAULT_OPT_OUT` when that file exists, else nobody opted out.
    """

    user_hash_key: str
    opt_out_path: str | None = None

    def opted_out(self) -> set[str]:
        """The `user_key`s of the users on the opt-out list."""
        return read_opt_out(self.opt_out_path)


def local_hash_key(state_dir: str) -> str:
    """A random key kept in the state folder, for the embedded default only (the CLI's demo and run)."""
    path = Path(state_dir) / "user_hash_key"
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
