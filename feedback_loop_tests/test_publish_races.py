"""Publishing under concurrency and kills: two writers at once, or a writer killed (SIGKILL) at a
random point, never leave a reader with a partial version, never reuse a version, and the next
publish recovers."""

import hashlib
import json
import multiprocessing
import random
import time

from feedback_loop.lib.datasets.store import DatasetStore, content_hash

TRIALS = 20
FILES = 6
FILE_BYTES = 1 << 20
DAY = "2026-11-20"


def files_of(tag: str) -> dict[str, bytes]:
    return {f"part-{i}.jsonl": (json.dumps({"writer": tag, "part": i}) + "\n").encode() * (FILE_BYTES // 40) for i in range(FILES)}


def publisher(root: str, tag: str, start, out) -> None:
    """Publish a version whose every file names this writer; report the version published."""
    start.wait()
    files = files_of(tag)
    published = DatasetStore(root).publish("suite", files, content_hash(*(files[name] for name in sorted(files))), {"writer": tag}, DAY)
    out.put((tag, published.version, published.created))


def reader(root: str, stop, out) -> None:
    """Read LATEST and its version's files until told to stop; report every inconsistency seen."""
    store = DatasetStore(root)
    problems, reads = [], 0
    while not stop.is_set():
        try:
            version = store.latest("suite")
            if version is None:
                continue
            manifest = store.manifest("suite", version)
            for name, info in manifest["files"].items():
                data = store.read_bytes("suite", version, name)
                if hashlib.sha256(data).hexdigest() != info["sha256"] or manifest["writer"].encode() not in data[:100]:
                    problems.append(f"{version}/{name} does not match its manifest")
            reads += 1
        except FileNotFoundError as err:  # a version LATEST named lost a file
            problems.append(f"missing: {err}")
    out.put((problems, reads))


def complete_and_consistent(store: DatasetStore) -> None:
    for version in store.versions("suite"):
        manifest = store.manifest("suite", version)
        for name, info in manifest["files"].items():
            assert hashlib.sha256(store.read_bytes("suite", version, name)).hexdigest() == info["sha256"]
    latest = store.latest("suite")
    assert latest is None or latest in store.versions("suite")


def test_two_writers_at_once_publish_two_distinct_complete_versions(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    for trial in range(TRIALS):
        root = str(tmp_path / f"trial-{trial}")
        start, stop, out, seen = spawn.Event(), spawn.Event(), spawn.Queue(), spawn.Queue()
        watcher = spawn.Process(target=reader, args=(root, stop, seen))
        writers = [spawn.Process(target=publisher, args=(root, tag, start, out)) for tag in ("a", "b")]
        for process in [watcher, *writers]:
            process.start()
        start.set()
        results = [out.get(timeout=120) for _ in writers]
        for process in writers:
            process.join(60)
        stop.set()
        problems, _ = seen.get(timeout=60)
        watcher.join(60)
        assert problems == []
        versions = sorted(version for _, version, created in results if created)
        assert versions == [f"{DAY}.1", f"{DAY}.2"]  # both published, under different numbers
        store = DatasetStore(root)
        assert store.versions("suite") == versions and store.latest("suite") == versions[-1]
        assert {store.manifest("suite", v)["writer"] for v in versions} == {"a", "b"}
        assert store.manifest("suite", versions[-1])["parent_version"] == versions[0]
        complete_and_consistent(store)


def test_a_writer_killed_at_any_point_leaves_the_store_readable_and_the_next_publish_recovers(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    rng = random.Random(0)
    root = str(tmp_path / "store")
    first = files_of("first")
    DatasetStore(root).publish("suite", first, content_hash(*(first[n] for n in sorted(first))), {"writer": "first"}, DAY)
    started = time.monotonic()
    probe = spawn.Process(target=publisher, args=(root, "probe", _set_event(spawn), spawn.Queue()))
    probe.start()
    probe.join(120)
    duration = time.monotonic() - started  # a whole publish, process start included
    killed_before_the_end = 0
    for trial in range(TRIALS):
        start, out = _set_event(spawn), spawn.Queue()
        writer = spawn.Process(target=publisher, args=(root, f"killed-{trial}", start, out))
        writer.start()
        time.sleep(rng.uniform(0, duration))
        writer.kill()  # SIGKILL: no cleanup runs
        writer.join(60)
        killed_before_the_end += out.empty()
        store = DatasetStore(root)
        complete_and_consistent(store)  # whatever point it died at
    assert killed_before_the_end >= TRIALS // 2  # most kills land inside the publish, not after it
    store = DatasetStore(root)
    after = files_of("after")
    published = store.publish("suite", after, content_hash(*(after[n] for n in sorted(after))), {"writer": "after"}, DAY)
    assert published.created and store.latest("suite") == published.version
    numbers = [int(v.split(".")[1]) for v in store.versions("suite")]
    assert numbers == sorted(set(numbers))  # no number published twice
    assert {p.name for p in (tmp_path / "store" / "suite").iterdir() if p.is_dir()} == set(store.versions("suite"))  # the dead drafts are gone
    complete_and_consistent(store)


def _set_event(context):
    event = context.Event()
    event.set()
    return event
