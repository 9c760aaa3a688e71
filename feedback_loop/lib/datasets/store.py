"""A versioned dataset store on universal-pathlib (a local folder or any fsspec URL such as s3://).

Layout: `<root>/<dataset>/<version>/` holds the data files and `manifest.json`;
`<root>/<dataset>/LATEST` names the newest complete version.

Publishing is atomic in the only sense readers need: data files are written first (a `Draft`: each
file streamed into the version's folder and hashed as it is written, so a large dataset is never
held in memory), the manifest last, and LATEST after that. A version without a manifest is
incomplete and invisible: the next publish deletes it. A complete version that LATEST does not name yet (a crash between the
manifest and LATEST) is adopted by the next publish. A version with a manifest is never written to
again. A new version is published only when the content hash differs from LATEST's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

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

    def draft(self, dataset: str, today: str) -> Draft:
        """The folder of the next version, to write its files into (see `Draft`); `commit` publishes it."""
        self._remove_incomplete(dataset)
        version = self._next_version(dataset, today)
        folder = self.root / dataset / version
        folder.mkdir(parents=True, exist_ok=False)
        return Draft(dataset=dataset, version=version, folder=folder)

    def commit(self, draft: Draft, content_hash: str, manifest: dict) -> Published:
        """Publish the draft's files as a new version, unless LATEST already has this content (the
        draft is then removed); return what LATEST is now."""
        parent = self.latest(draft.dataset)
        if parent is not None and self.manifest(draft.dataset, parent).get("content_hash") == content_hash:
            draft.folder.fs.rm(draft.folder.path, recursive=True)
            return Published(version=parent, created=False, manifest=self.manifest(draft.dataset, parent))
        full = {
            "dataset": draft.dataset,
            "version": draft.version,
            "parent_version": parent,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "content_hash": content_hash,
            "files": dict(draft.files),
            **manifest,
        }
        self._write_atomic(draft.folder / MANIFEST, json.dumps(full, indent=2, sort_keys=True).encode())
        self._write_atomic(self.root / draft.dataset / LATEST, draft.version.encode())
        return Published(version=draft.version, created=True, manifest=full)

    def publish(self, dataset: str, files: dict[str, bytes], content_hash: str, manifest: dict, today: str) -> Published:
        """`draft`, write `files`, `commit`: for files already in memory (nothing is written when LATEST
        already has this content)."""
        parent = self.latest(dataset)
        if parent is not None and self.manifest(dataset, parent).get("content_hash") == content_hash:
            self._remove_incomplete(dataset)
            return Published(version=parent, created=False, manifest=self.manifest(dataset, parent))
        draft = self.draft(dataset, today)
        for name, data in files.items():
            draft.write(name, data)
        return self.commit(draft, content_hash, manifest)

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


@dataclass
class Draft:
    """A version being written: each file goes straight into the version's folder, which stays
    invisible (no manifest) until `DatasetStore.commit`; its SHA-256 and size are kept as it is written."""

    dataset: str
    version: str
    folder: UPath
    files: dict[str, dict] = field(default_factory=dict)  # name -> {"sha256": …, "bytes": …}, once closed

    @contextmanager
    def open(self, name: str) -> Iterator[HashingWriter]:
        """A binary file of the version, to write as it is made (several may be open at once)."""
        if name in self.files:
            raise ValueError(f"{name} is already written in {self.dataset} {self.version}")
        with (self.folder / name).open("wb") as fh:
            out = HashingWriter(fh)
            yield out
        self.files[name] = {"sha256": out.digest.hexdigest(), "bytes": out.size}

    def write(self, name: str, data: bytes) -> None:
        with self.open(name) as out:
            out.write(data)

    def digest(self, name: str) -> str:
        return self.files[name]["sha256"]


class HashingWriter:
    """A write-only file that hashes what goes through it (Parquet writers accept it as a sink).
    A large block is hashed on another thread while it is written (both release the GIL)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        size = memoryview(data).nbytes
        if size >= OVERLAP_MIN_BYTES:
            hashed = _HASHER.submit(self.digest.update, data)
            self._fh.write(data)
            hashed.result()  # before the next block: the digest takes blocks in order
        else:
            self.digest.update(data)
            self._fh.write(data)
        self.size += size
        return size

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self.closed = True  # the Draft closes the file itself

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


OVERLAP_MIN_BYTES = 1 << 20
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draft-hash")


def _key(version: str) -> tuple[str, int]:
    day, _, n = version.partition(".")
    return day, int(n) if n.isdigit() else 0


def content_hash(*parts: bytes) -> str:
    """The hash of the parts' contents, in order."""
    return combined_hash(hashlib.sha256(part).hexdigest() for part in parts)


def combined_hash(digests: Iterable[str]) -> str:
    """`content_hash` of the parts whose SHA-256 digests (hex) these are, in order."""
    digest = hashlib.sha256()
    for part in digests:
        digest.update(bytes.fromhex(part))
    return digest.hexdigest()
