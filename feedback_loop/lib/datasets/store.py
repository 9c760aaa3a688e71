"""A versioned dataset store on universal-pathlib (a local folder or any fsspec URL such as s3://).

Layout: `<root>/<dataset>/<version>/` holds the data files and `manifest.json`;
`<root>/<dataset>/LATEST` names the newest complete version. A version is `<day>.<n>`: the last
day of the window it was built from, and a number that counts up within that day.

Publishing: `draft` takes the dataset's lock (a file lock beside the dataset for a local store;
an object store relies on the Dagster pool of the dataset assets, one run at a time), reserves
the next version and hands out its folder; the data files are streamed into it and hashed as they
are written; `commit` writes the manifest, then moves LATEST. A version without a manifest is
incomplete and invisible; a version with a manifest is never written to again. LATEST only moves
forward: a version built from a window that ends before LATEST's is not published (a rerun of an
older date), and a version is published only when its content hash differs from LATEST's.
Leaving the draft's `with` block without a commit (an error, or a kill) leaves no visible version:
the next draft removes the folder. Readers never write: `latest` only reads LATEST (falling back
to the newest complete version when it is missing or names one that is not complete).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import BinaryIO

from filelock import FileLock
from upath import UPath

from feedback_loop.lib.paths import path_component

MANIFEST = "manifest.json"
LATEST = "LATEST"
LOCK = ".publish.lock"


@dataclass
class Published:
    version: str | None  # what LATEST names after the commit
    created: bool  # False: nothing new was published
    manifest: dict = field(default_factory=dict)
    held_back: str = ""  # why nothing was published, when the content was new


class DatasetStore:
    def __init__(self, root: str) -> None:
        self.root = UPath(root)

    def latest(self, dataset: str) -> str | None:
        """The version LATEST names, or the newest complete one when LATEST is missing or names an
        incomplete one; None before the first publish. Reads only."""
        complete = self.versions(dataset)
        named = self._named(dataset)
        if named in complete:  # a version listed in the dataset's folder: never a path elsewhere
            return named
        return complete[-1] if complete else None

    def versions(self, dataset: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        folder = self._dataset_folder(dataset)
        if not folder.exists():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and _is_version(p.name) and (p / MANIFEST).exists()), key=_key)

    def manifest(self, dataset: str, version: str) -> dict:
        return json.loads(self.path(dataset, version, MANIFEST).read_text())

    def path(self, dataset: str, version: str, name: str) -> UPath:
        """A file of a version; names that could lead out of the version's folder are refused."""
        return self._dataset_folder(dataset) / path_component(version, "version") / path_component(name, "file name")

    def _dataset_folder(self, dataset: str) -> UPath:
        return self.root / path_component(dataset, "dataset")

    def _named(self, dataset: str) -> str | None:
        """What LATEST holds (unchecked), None without a LATEST."""
        pointer = self._dataset_folder(dataset) / LATEST
        return pointer.read_text().strip() if pointer.exists() else None

    def read_bytes(self, dataset: str, version: str, name: str) -> bytes:
        return self.path(dataset, version, name).read_bytes()

    def newer_than(self, dataset: str, day: str) -> str | None:
        """LATEST's version when it was built from a window ending after `day` (a draft of `day`
        would then not be published), else None."""
        latest = self.latest(dataset)
        return latest if latest is not None and _key(latest)[0] > day else None

    @contextmanager
    def draft(self, dataset: str, day: str) -> Iterator[Draft]:
        """The folder of the next version of `dataset`, built from a window ending on `day`, to write
        its files into (see `Draft`) and `commit`, with the dataset locked meanwhile. Without a
        commit the folder is removed on the way out."""
        folder = self._dataset_folder(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        local = self.root.protocol in ("", "file")
        with FileLock(str(folder.path) + "/" + LOCK) if local else nullcontext():
            self._remove_incomplete(dataset)
            self._adopt_newest(dataset)
            version = self._next_version(dataset, day)
            draft = Draft(dataset=dataset, version=version, folder=folder / version)
            draft.folder.mkdir(parents=True, exist_ok=False)
            try:
                yield draft
            finally:
                if not draft.committed and draft.folder.exists():
                    draft.folder.fs.rm(draft.folder.path, recursive=True)

    def commit(self, draft: Draft, content_hash: str, manifest: dict) -> Published:
        """Publish the draft's files as a new version, unless LATEST already has this content or was
        built from a newer window (the draft is then removed); return what LATEST is now. Call it
        inside the draft's `with` block."""
        parent = self.latest(draft.dataset)
        if parent is not None and self.manifest(draft.dataset, parent).get("content_hash") == content_hash:
            return Published(version=parent, created=False, manifest=self.manifest(draft.dataset, parent))
        if parent is not None and _key(parent) > _key(draft.version):
            reason = f"{draft.dataset} {parent} was built from a newer window than {draft.version}'s: LATEST only moves forward"
            return Published(version=parent, created=False, manifest=self.manifest(draft.dataset, parent), held_back=reason)
        full = {
            "dataset": draft.dataset,
            "version": draft.version,
            "parent_version": parent,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "content_hash": content_hash,
            "files": dict(draft.files),
            **manifest,
        }
        self._seal(draft, full)
        self._write_atomic(self._dataset_folder(draft.dataset) / LATEST, draft.version.encode())
        return Published(version=draft.version, created=True, manifest=full)

    def replace(self, dataset: str, old: str, files: dict[str, bytes], updates: dict, audit: dict) -> str:
        """Publish `files` as the rewrite of version `old` (a user erased from it): the next version
        of `old`'s day, with `old`'s manifest updated by `updates`, the new files and their hash, and
        `audit` under "rewritten"; LATEST moves to it when it named `old`; then `old`'s folder is
        deleted. The one exception to immutability, for erasure; no other version is touched.
        Returns the new version."""
        before = self.manifest(dataset, old)
        with self.draft(dataset, _key(old)[0]) as draft:
            for name, data in files.items():
                draft.write(name, data)
            digest = combined_hash(draft.digest(name) for name in sorted(draft.files))
            manifest = {**before, **updates, "version": draft.version, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "content_hash": digest, "files": dict(draft.files)}
            manifest["rewritten"] = [*before.get("rewritten", []), {"replaces": old, **audit}]
            self._seal(draft, manifest)
            if self._named(dataset) == old:
                self._write_atomic(self._dataset_folder(dataset) / LATEST, draft.version.encode())
            folder = self._dataset_folder(dataset) / path_component(old, "version")
            folder.fs.rm(folder.path, recursive=True)
            return draft.version

    def publish(self, dataset: str, files: dict[str, bytes], content_hash: str, manifest: dict, today: str) -> Published:
        """`draft`, write `files`, `commit`: for files already in memory."""
        with self.draft(dataset, today) as draft:
            for name, data in files.items():
                draft.write(name, data)
            return self.commit(draft, content_hash, manifest)

    def _next_version(self, dataset: str, day: str) -> str:
        """`<day>.<n>` with n one past every number of that day ever used (complete or not)."""
        folder = self._dataset_folder(dataset)
        same_day = [_key(p.name)[1] for p in folder.iterdir() if _is_version(p.name) and _key(p.name)[0] == day]
        return f"{day}.{max(same_day, default=0) + 1}"

    def _adopt_newest(self, dataset: str) -> None:
        """Point LATEST at the newest complete version when it names an older one (a run that died
        between its manifest and LATEST); under the lock."""
        complete = self.versions(dataset)
        named = self._named(dataset)
        if complete and (named not in complete or _key(complete[-1]) > _key(named)):
            self._write_atomic(self._dataset_folder(dataset) / LATEST, complete[-1].encode())

    def _remove_incomplete(self, dataset: str) -> None:
        """Remove the folders of versions that never got a manifest (runs that died); under the lock,
        so never one that is being written."""
        for child in self._dataset_folder(dataset).iterdir():
            if child.is_dir() and _is_version(child.name) and not (child / MANIFEST).exists():
                child.fs.rm(child.path, recursive=True)

    def _seal(self, draft: Draft, manifest: dict) -> None:
        """Write the draft's manifest, which makes it a complete version: it is never written to again."""
        self._write_atomic(draft.folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        draft.committed = True

    @staticmethod
    def _write_atomic(path: UPath, data: bytes) -> None:
        """Write to a name no other writer uses, then rename into place: a reader sees the old or the new bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
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
    committed: bool = False

    @contextmanager
    def open(self, name: str) -> Iterator[HashingWriter]:
        """A binary file of the version, to write as it is made (several may be open at once)."""
        if name in self.files:
            raise ValueError(f"{name} is already written in {self.dataset} {self.version}")
        with (self.folder / path_component(name, "file name")).open("wb") as fh:
            out = HashingWriter(fh)
            yield out
        self.files[name] = {"sha256": out.digest.hexdigest(), "bytes": out.size}

    def write(self, name: str, data: bytes) -> None:
        with self.open(name) as out:
            out.write(data)

    def discard(self, name: str) -> None:
        """Take a file out of the version before it is committed (a staging file, not published data)."""
        if self.committed:
            raise ValueError(f"{self.dataset} {self.version} is committed: its files are immutable")
        if self.files.pop(name, None) is not None:
            (self.folder / path_component(name, "file name")).unlink()

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


def _is_version(name: str) -> bool:
    day, dot, n = name.partition(".")
    return bool(dot) and n.isdigit() and len(day) == 10


def content_hash(*parts: bytes) -> str:
    """The hash of the parts' contents, in order."""
    return combined_hash(hashlib.sha256(part).hexdigest() for part in parts)


def combined_hash(digests: Iterable[str]) -> str:
    """`content_hash` of the parts whose SHA-256 digests (hex) these are, in order."""
    digest = hashlib.sha256()
    for part in digests:
        digest.update(bytes.fromhex(part))
    return digest.hexdigest()
