"""The versioned dataset store: immutable versions, atomic publishing, recovery, idempotence."""

import hashlib
import json

import pytest

from feedback_loop.lib.datasets.store import DatasetStore, combined_hash, content_hash
from feedback_loop.lib.paths import UnsafeName


def publish(store, data: bytes, day="2026-11-20"):
    return store.publish("suite", {"cases.jsonl": data}, content_hash(data), {"row_counts": {"total": 1}}, day)


def test_publish_writes_files_manifest_and_latest(tmp_path):
    store = DatasetStore(str(tmp_path))
    first = publish(store, b'{"a": 1}\n')
    assert first.created and first.version == "2026-11-20.1"
    assert store.latest("suite") == "2026-11-20.1"
    manifest = json.loads((tmp_path / "suite" / "2026-11-20.1" / "manifest.json").read_text())
    assert manifest["parent_version"] is None and manifest["row_counts"] == {"total": 1}
    assert manifest["files"]["cases.jsonl"]["sha256"] == hashlib.sha256(b'{"a": 1}\n').hexdigest()


def test_a_draft_hashes_its_files_as_they_are_written_and_commit_publishes_them(tmp_path):
    store = DatasetStore(str(tmp_path))
    with store.draft("prefs", "2026-11-20") as draft:
        published, files, digests = write_and_commit(store, draft)
    folder = tmp_path / "prefs" / published.version
    assert {name: (folder / name).read_bytes() for name in files} == files
    assert published.manifest["files"] == {name: {"sha256": digests[name], "bytes": len(data)} for name, data in files.items()}
    with pytest.raises(ValueError):
        draft.write("a.jsonl", b"again")


def write_and_commit(store, draft):
    files = {"b.jsonl": b"two\n" * 100_000, "a.jsonl": b"one\n", "empty.jsonl": b""}
    with draft.open("b.jsonl") as b, draft.open("a.jsonl") as a:  # several files open at once, written in pieces
        for _ in range(4):
            b.write(b"two\n" * 25_000)
        a.write(b"one\n")
    draft.write("empty.jsonl", b"")
    assert store.versions("prefs") == [] and store.latest("prefs") is None  # not visible before the commit
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert {name: draft.digest(name) for name in files} == digests
    assert combined_hash(digests[name] for name in sorted(files)) == content_hash(*(files[name] for name in sorted(files)))
    return store.commit(draft, content_hash(files["a.jsonl"]), {"row_counts": {"total": 2}}), files, digests


def test_large_blocks_hashed_beside_their_write_give_the_digest_of_the_bytes_in_order(tmp_path):
    """Blocks from 1 MB up are hashed on another thread while they are written; mixed with small
    blocks, memoryviews and a file copied in by `shutil.copyfileobj`, the digest, size and bytes are
    those of the whole, in order."""
    import io
    import random
    import shutil

    rng = random.Random(0)
    blocks = [rng.randbytes(size) for size in (3, 5 << 20, 17, 1 << 20, (1 << 20) - 1, 2 << 20, 0, 9)]
    copied = rng.randbytes((3 << 20) + 12345)
    with DatasetStore(str(tmp_path)).draft("prefs", "2026-11-20") as draft:
        with draft.open("big.bin") as out:
            for i, block in enumerate(blocks):
                out.write(memoryview(block) if i % 2 else block)
            shutil.copyfileobj(io.BytesIO(copied), out)
        whole = b"".join(blocks) + copied
        assert draft.files["big.bin"] == {"sha256": hashlib.sha256(whole).hexdigest(), "bytes": len(whole)}
        assert (draft.folder / "big.bin").read_bytes() == whole


def test_a_draft_with_the_content_of_latest_is_removed_on_commit(tmp_path):
    store = DatasetStore(str(tmp_path))
    first = publish(store, b"one\n")
    with store.draft("suite", "2026-11-21") as draft:
        draft.write("cases.jsonl", b"one\n")
        again = store.commit(draft, content_hash(b"one\n"), {})
    assert not again.created and again.version == first.version
    assert not draft.folder.exists() and store.versions("suite") == [first.version]


def test_same_content_publishes_nothing_and_new_content_exactly_one_version(tmp_path):
    store = DatasetStore(str(tmp_path))
    publish(store, b"one\n")
    again = publish(store, b"one\n", day="2026-11-21")
    assert not again.created and again.version == "2026-11-20.1"
    second = publish(store, b"two\n")
    assert second.created and second.version == "2026-11-20.2" and second.manifest["parent_version"] == "2026-11-20.1"
    assert store.versions("suite") == ["2026-11-20.1", "2026-11-20.2"]


def test_versions_sort_by_day_then_number(tmp_path):
    store = DatasetStore(str(tmp_path))
    for i in range(11):
        publish(store, f"{i}\n".encode())
    assert store.latest("suite") == "2026-11-20.11"


def test_a_crash_before_the_manifest_leaves_no_visible_version_and_is_cleaned(tmp_path):
    store = DatasetStore(str(tmp_path))
    publish(store, b"one\n")
    half = tmp_path / "suite" / "2026-11-20.2"
    half.mkdir()
    (half / "cases.jsonl").write_text("partial")
    assert store.latest("suite") == "2026-11-20.1" and store.versions("suite") == ["2026-11-20.1"]
    recovered = publish(store, b"two\n")
    assert recovered.version == "2026-11-20.2" and (tmp_path / "suite" / "2026-11-20.2" / "cases.jsonl").read_text() == "two\n"


def test_a_crash_before_latest_is_adopted_by_the_next_publish_and_reading_never_writes(tmp_path):
    store = DatasetStore(str(tmp_path))
    publish(store, b"one\n")
    publish(store, b"two\n")
    (tmp_path / "suite" / "LATEST").write_text("2026-11-20.1")  # as if the run died before LATEST moved
    assert store.latest("suite") == "2026-11-20.1"
    assert (tmp_path / "suite" / "LATEST").read_text() == "2026-11-20.1"
    assert publish(store, b"three\n").manifest["parent_version"] == "2026-11-20.2"


def test_latest_only_moves_forward(tmp_path):
    store = DatasetStore(str(tmp_path))
    publish(store, b"new window\n", day="2026-11-22")
    older = publish(store, b"older window\n", day="2026-11-20")
    assert not older.created and older.version == "2026-11-22.1" and "newer window" in older.held_back
    assert store.versions("suite") == ["2026-11-22.1"] and store.newer_than("suite", "2026-11-20") == "2026-11-22.1"
    assert store.newer_than("suite", "2026-11-22") is None
    assert publish(store, b"same day, new content\n", day="2026-11-22").version == "2026-11-22.2"


def test_an_error_inside_the_draft_leaves_no_version_and_frees_the_lock(tmp_path):
    store = DatasetStore(str(tmp_path))
    with pytest.raises(RuntimeError), store.draft("suite", "2026-11-20") as draft:
        draft.write("cases.jsonl", b"half")
        raise RuntimeError("the build failed")
    assert not draft.folder.exists() and store.latest("suite") is None
    assert publish(store, b"one\n").version == "2026-11-20.1"


def test_a_published_version_is_never_rewritten(tmp_path):
    store = DatasetStore(str(tmp_path))
    publish(store, b"one\n")
    before = (tmp_path / "suite" / "2026-11-20.1" / "cases.jsonl").read_bytes()
    publish(store, b"two\n")
    assert (tmp_path / "suite" / "2026-11-20.1" / "cases.jsonl").read_bytes() == before
    with pytest.raises(FileExistsError):
        (tmp_path / "suite" / "2026-11-20.1").mkdir(exist_ok=False)


def test_store_works_on_an_fsspec_url():
    store = DatasetStore("memory://datasets-test")
    assert publish(store, b"x\n").created
    assert store.read_bytes("suite", store.latest("suite"), "cases.jsonl") == b"x\n"


@pytest.mark.parametrize("name", ["../outside", "..", ".", "a/b", "a\\b", "", "x\x00y"])
def test_names_that_could_leave_the_store_are_refused(tmp_path, name):
    store = DatasetStore(str(tmp_path / "store"))
    store.publish("suite", {"cases.jsonl": b"{}\n"}, "h1", {}, "2026-11-20")
    with pytest.raises(UnsafeName):
        store.versions(name)
    with pytest.raises(UnsafeName):
        store.path("suite", name, "cases.jsonl")
    with pytest.raises(UnsafeName):
        store.path("suite", "2026-11-20.1", name)
    with pytest.raises(UnsafeName), store.draft("suite", "2026-11-21") as draft:
        draft.write(name, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_latest_that_names_a_path_outside_the_store_is_not_followed(tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "suite" / "9999-01-01.1").mkdir(parents=True)
    (outside / "suite" / "9999-01-01.1" / "manifest.json").write_text('{"stolen": true}')
    store = DatasetStore(str(tmp_path / "store"))
    store.publish("suite", {"cases.jsonl": b"{}\n"}, "h1", {}, "2026-11-20")
    for pointer in ("../../elsewhere/suite/9999-01-01.1", str(outside / "suite" / "9999-01-01.1"), "9999-01-01.1"):
        (tmp_path / "store" / "suite" / "LATEST").write_text(pointer)
        assert store.latest("suite") == "2026-11-20.1"
        assert "stolen" not in store.manifest("suite", store.latest("suite"))
