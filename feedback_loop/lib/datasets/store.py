"""A versioned dataset store on universal-pathlib (a local folder or any fsspec URL such as s3://).

Layout: `<root>/<dataset>/<version>/` holds the data files and `manifest.json`;
`<root>/<dataset>/LATEST` names the newest complete version.

Publishing is atomic in the only sense readers need: data files are written first, the manifest
last, and LATEST after that. A version without a manifest is incomplete and invisible: the next
publish deletes it. A complete version that LATEST does not name yet (a crash between the
manifest and LATEST) is adopted by the next publish. A version with a manifest is never written to
again. A new version is published only when the content hash differs from LATEST's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from upath import UPath

MANIFEST = "manifest.json"
LATEST = "LATEST"


@dataclass
class Published:
    version: str
    created: bool  # False: the content equals LATEST's, nothing was written
    manifest: dict = field(default_factory=dict)


class DatasetStore:
    def __init__(self, root: str) -> None:
        self.root = UPath(root)

    def latest(self, dataset: str) -> str | None:
        """The newest complete version (recovering a LATEST pointer left behind by a crash)."""
        folder = self.root / dataset
        complete = self.versions(dataset)
        pointer = folder / LATEST
        named = pointer.read_text().strip() if pointer.exists() else None
        if complete and (named is None or _key(complete[-1]) > _key(named)):
            self._write_atomic(pointer, complete[-1].encode())
            return complete[-1]
        return named

    def versions(self, dataset: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        folder = self.root / dataset
        if not folder.exists():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).exists()), key=_key)

    def manifest(self, dataset: str, version: str) -> dict:
        return json.loads((self.root / dataset / version / MANIFEST).read_text())

    def path(self, dataset: str, version: str, name: str) -> UPath:
        return self.root / dataset / version / name

    def read_bytes(self, dataset: str, version: str, name: str) -> bytes:
        return self.path(dataset, version, name).read_bytes()

    def publish(self, dataset: str, files: dict[str, bytes], content_hash: str, manifest: dict, today: str, digests: dict[str, str] | None = None) -> Published:
        """Write a new version unless LATEST already has this content; return what LATEST is now.
        `digests`: the files' `file_digests`, when the caller has them."""
        self._remove_incomplete(dataset)
        parent = self.latest(dataset)
        if parent is not None and self.manifest(dataset, parent).get("content_hash") == content_hash:
            return Published(version=parent, created=False, manifest=self.manifest(dataset, parent))
        version = self._next_version(dataset, today)
        folder = self.root / dataset / version
        folder.mkdir(parents=True, exist_ok=False)
        digests = digests or file_digests(files)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # file writes release the GIL
            list(pool.map(lambda item: (folder / item[0]).write_bytes(item[1]), files.items()))
        full = {
            "dataset": dataset,
            "version": version,
            "parent_version": parent,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "content_hash": content_hash,
            "files": {name: {"sha256": digests[name], "bytes": len(data)} for name, data in files.items()},
            **manifest,
        }
        self._write_atomic(folder / MANIFEST, json.dumps(full, indent=2, sort_keys=True).encode())
        self._write_atomic(self.root / dataset / LATEST, version.encode())
        return Published(version=version, created=True, manifest=full)

    def _next_version(self, dataset: str, today: str) -> str:
        folder = self.root / dataset
        taken = [p.name for p in folder.iterdir()] if folder.exists() else []
        same_day = [int(v.split(".")[1]) for v in taken if v.startswith(today + ".") and v.split(".")[1].isdigit()]
        return f"{today}.{max(same_day, default=0) + 1}"

    def _remove_incomplete(self, dataset: str) -> None:
        folder = self.root / dataset
        if not folder.exists():
            return
        for child in folder.iterdir():
            if child.is_dir() and not (child / MANIFEST).exists():
                child.fs.rm(child.path, recursive=True)

    @staticmethod
    def _write_atomic(path: UPath, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.rename(path)


def _key(version: str) -> tuple[str, int]:
    day, _, n = version.partition(".")
    return day, int(n) if n.isdigit() else 0


def file_digests(files: dict[str, bytes]) -> dict[str, str]:
    """The SHA-256 of each file, on a thread per core (hashlib releases the GIL on large data)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(files, pool.map(lambda data: hashlib.sha256(data).hexdigest(), files.values()), strict=True))


def content_hash(*parts: bytes) -> str:
    """The hash of the parts' contents, in order."""
    return combined_hash(hashlib.sha256(part).hexdigest() for part in parts)


def combined_hash(digests: Iterable[str]) -> str:
    """`content_hash` of the parts whose SHA-256 digests (hex) these are, in order."""
    digest = hashlib.sha256()
    for part in digests:
        digest.update(bytes.fromhex(part))
    return digest.hexdigest()
