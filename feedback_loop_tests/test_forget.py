"""Erasure: `feedback-loop forget` and `erase_users_job` rewrite every published version holding a
user's data without it, delete the old files, and leave every other version as it was."""

import hashlib
import json
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

from feedback_loop import cli
from feedback_loop.defs.datasets.erasure import erase_users_job
from feedback_loop.pipeline import run_nightly
from feedback_loop.resources.sources import LandingFolder
from feedback_loop_tests.conftest import defs_with
from feedback_loop_tests.test_canaries import published_texts
from feedback_loop_tests.test_opt_out import DAYS, planted

MARKERS = ("OPTED-OUTPUT-A", "OPTED-EDIT-A", "OPTED-EDIT-B", "OPTED-OUTPUT-C")


def version_hashes(root) -> dict[str, str]:
    """Each version folder by a hash of its files."""
    out = {}
    for manifest in sorted(root.rglob("manifest.json")):
        folder = manifest.parent
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json")).hexdigest()
        out[f"{folder.parent.name}/{folder.name}"] = digest
    return out


def published_nights(resources, generated, tmp_path) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(generated, landing)
    for day in DAYS:
        planted(landing, day)
    defs = defs_with({**resources, "landing": LandingFolder(root=str(landing))})
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        report = run_nightly(day, instance, defs)
        assert report.success, report.summary_line()


@pytest.mark.slow
def test_forget_rewrites_the_versions_with_the_user_and_leaves_the_others(resources, generated, tmp_path, monkeypatch, capsys):
    published_nights(resources, generated, tmp_path)
    datasets = tmp_path / "datasets"
    assert any(marker in text for text in published_texts(datasets).values() for marker in MARKERS)  # published while not opted out
    before = version_hashes(datasets)
    monkeypatch.setenv("FEEDBACK_LOOP_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.setenv("FEEDBACK_LOOP_DATASETS", str(datasets))
    monkeypatch.setenv("FEEDBACK_LOOP_USER_HASH_KEY", "test-key")
    monkeypatch.setenv("FEEDBACK_LOOP_OPT_OUT", str(tmp_path / "opt_out.txt"))
    assert cli.main(["forget", "--user", " OPTED.user"]) == 0
    out = capsys.readouterr()
    assert "versions rewritten" in out.out and "add  OPTED.user to the opt-out list" in out.err

    texts = published_texts(datasets)
    assert not [(name, marker) for name, text in texts.items() for marker in MARKERS if marker in text]
    assert any("CONTROL-EDIT-D" in text for text in texts.values())  # other users' data stays
    after = version_hashes(datasets)
    rewritten = sorted(set(before) - set(after))
    assert rewritten and all(not (datasets / name).exists() for name in rewritten)  # the old files are gone
    assert {name: h for name, h in after.items() if name in before} == {name: h for name, h in before.items() if name not in rewritten}  # the rest untouched
    for dataset in ("regression_suite", "preference_dataset"):
        latest = (datasets / dataset / "LATEST").read_text().strip()
        manifest = json.loads((datasets / dataset / latest / "manifest.json").read_text())
        assert f"{dataset}/{manifest['rewritten'][0]['replaces']}" in rewritten and manifest["rewritten"][0]["users"] == 1
    latest = datasets / "preference_dataset" / (datasets / "preference_dataset" / "LATEST").read_text().strip()
    kto = pq.read_table(latest / "kto.parquet").to_pandas()
    for split in kto["split"].unique():
        lines = [json.loads(line) for line in (latest / f"kto_{split}.jsonl").read_text().splitlines()]
        assert [line["completion"] for line in lines] == kto.loc[kto["split"] == split, "completion"].tolist()  # the formats still match row for row
    assert json.loads((latest / "manifest.json").read_text())["row_counts"]["kto_examples"] == len(kto)

    assert cli.main(["forget", "--user", "opted.user"]) == 0  # nothing left to erase: nothing changes
    assert version_hashes(datasets) == after


@pytest.mark.slow
def test_the_erasure_job_does_what_the_command_does(resources, generated, tmp_path):
    published_nights(resources, generated, tmp_path)
    result = erase_users_job.execute_in_process(
        run_config={"ops": {"erase_users_from_datasets": {"config": {"users": ["Opted.User"]}}}},
        resources={name: resources[name] for name in ("dataset_store", "privacy", "io_manager")},
    )
    assert result.success
    texts = published_texts(tmp_path / "datasets")
    assert not [(name, marker) for name, text in texts.items() for marker in MARKERS if marker in text]
