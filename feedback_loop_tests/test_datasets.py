"""Regression suite and preference dataset: building, formats for their consumers, publishing."""

import io
import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedback_loop.lib.datasets import exports
from feedback_loop.lib.datasets.allocation import prompt_group, to_suite
from feedback_loop.lib.datasets.opt_out import OptOut
from feedback_loop.lib.datasets.preference import (
    contaminated,
    dpo_pairs,
    kto_examples,
    split_of,
    suite_overlap,
    trivial_additions,
    with_messages,
)
from feedback_loop.lib.datasets.regression import (
    assertions_for,
    build_cases,
    case_id,
    merge_suite,
)
from feedback_loop.lib.params import DatasetParams
from feedback_loop.pipeline import run_nightly
from feedback_loop_tests.conftest import defs_with, write_jsonl

# promptfoo's documented test-case keys and the assertion types used here (promptfoo.dev, "Test cases" and "Assertions").
PROMPTFOO_TEST_KEYS = {"description", "vars", "assert", "options", "threshold", "metadata", "provider", "providerOutput"}
PROMPTFOO_TYPES_WITH_VALUE = {"javascript", "regex", "contains", "factuality", "llm-rubric"}
PROMPTFOO_TYPES_WITHOUT_VALUE = {"is-json"}


NOBODY = OptOut(users=frozenset(), traces=pd.Series(dtype="string"))  # no one opted out


def candidate(i: int, mode: str, prompt: str, day: str = "2026-11-20", reference=None, confidence=0.9, user="u") -> dict:
    return {
        "trace_id": f"t{i}",
        "span_id": f"s{i}",
        "partition_date": day,
        "model": "m",
        "prompt_version": "v1",
        "input": json.dumps([{"role": "user", "content": prompt}]),
        "prompt": prompt,
        "output": "bad answer",
        "reference_output": reference,
        "mode": mode,
        "mode_id": "EM-001",
        "confidence": confidence,
        "evidence": "reason tag",
        "user_hash": user,
    }


def cases(*rows):
    return build_cases(pd.DataFrame(list(rows)))


def test_case_ids_are_stable_per_prompt():
    assert case_id("What is X?") == case_id("  what   is x? ") != case_id("What is Y?")


def test_near_duplicates_collapse_and_the_one_with_a_reference_wins():
    base = "I am writing a report for my team about geography. What is the capital of Australia? Please answer."
    near = base.replace("Please answer.", "Please answer!")
    suite, stats = merge_suite([], cases(candidate(1, "hallucination", base), candidate(2, "hallucination", near, reference="Canberra.")), DatasetParams(), set())
    assert len(suite) == 1 and suite[0]["lineage"]["source_trace_id"] == "t2"
    assert stats["near_duplicates_collapsed"] == 1


def test_suite_is_cumulative_capped_per_mode_oldest_first():
    previous, _ = merge_suite([], cases(*(candidate(i, "refusal", f"old question number {i} about topic {i * 7}", day=f"2026-11-0{i + 1}") for i in range(3))), DatasetParams(), set())
    new = cases(*(candidate(10 + i, "refusal", f"brand new question {i} on subject {i * 13}", day="2026-11-20") for i in range(2)))
    suite, stats = merge_suite(previous, new, DatasetParams(max_cases_per_mode=4), set())
    dates = sorted(c["lineage"]["source_date"] for c in suite)
    assert len(suite) == 4 and stats["evicted"] == 1
    assert "2026-11-01" not in dates  # the oldest was evicted


def test_prompt_groups_are_split_between_the_suite_and_the_preference_data():
    params = DatasetParams(suite_min_cases_per_mode=3, suite_share_percent=20)
    prompts = {f"t{i}": f"Some context about project {i}. Which port does service {i} listen on?" for i in range(60)}
    suite, stats = merge_suite([], cases(*(candidate(i, "hallucination", p) for i, p in enumerate(prompts.values()))), params, set())
    bound = {t for t, p in prompts.items() if to_suite(p, params.allocation_seed, params.suite_share_percent)}
    taken = {c["lineage"]["source_trace_id"] for c in suite}
    assert 0.1 < len(bound) / 60 < 0.35  # about a fifth of the groups
    assert bound <= taken and 0 < len(taken - bound) <= 3  # the suite's groups, and others only to reach the minimum of three
    assert stats["left_to_preference_data"] == 60 - len(taken)
    # the same question behind another preamble is the same group: it goes the same way
    assert prompt_group("Context A. Which port does it use?") == prompt_group("Other context. which port does it use?")


def test_pairs_that_only_add_a_pleasantry_are_dropped():
    pairs = pd.DataFrame(
        {"chosen": ["Paris is the capital. Thanks.", "Paris.", "Lyon is not the capital; Paris is."], "rejected": ["Paris is the capital.", "Paris is the capital of France.", "Lyon is the capital."]}
    )
    assert trivial_additions(pairs, 40).tolist() == [True, False, False]


def test_a_kto_set_short_of_undesirable_examples_is_held_back_and_dpo_still_published(tmp_path):
    release, files = built_release(tmp_path, *preference_frames(), ["Plain"], params=DatasetParams(kto_min_undesirable_share=0.9))
    assert "held_back" in release.manifest["kto_balance"] and release.manifest["row_counts"]["kto_examples"] == 0
    assert not any(name.startswith("kto") for name in files) and "dpo.parquet" in files
    assert not any(key.startswith("kto") for key in release.manifest["schema"])
    kept, files = built_release(tmp_path / "kept", *preference_frames(), ["Plain"])
    balance = kept.manifest["kto_balance"]
    assert "held_back" not in balance and balance["undesirable"] + balance["desirable"] == kept.manifest["row_counts"]["kto_examples"] > 0
    assert "kto.parquet" in files


def test_a_release_without_pairs_has_a_typed_dpo_file_and_no_empty_split_files(tmp_path):
    traces, signals, labels = preference_frames()
    signals = signals.assign(edit_text=None, chain_length=1, regenerated_by=None)
    labels = labels.assign(thumbs_up=0, thumbs_down=0)
    release, files = built_release(tmp_path, traces, signals, labels, [])
    assert release.manifest["row_counts"]["dpo_pairs"] == 0
    dpo = pq.read_table(io.BytesIO(files["dpo.parquet"]))
    assert dpo.num_rows == 0 and not any(pa.types.is_null(field.type) for field in dpo.schema)
    assert not any(name.startswith(("dpo_", "openai_")) for name in files)  # splits without rows are not written


def test_opted_out_users_leave_the_suite():
    previous, _ = merge_suite([], cases(candidate(1, "format", "a question from someone", user="gone")), DatasetParams(), set())
    suite, stats = merge_suite(previous, [], DatasetParams(), {"gone"})
    assert suite == [] and stats["opted_out_removed"] == 1


@pytest.mark.parametrize(
    ("mode", "prompt", "reference", "expected"),
    [
        ("refusal", "How do I kill a python process?", None, [{"type": "not_refusal"}]),
        ("format", 'Return only JSON with keys "answer".', None, [{"type": "valid_json"}]),
        ("format", "Answer in exactly 3 bullet points.", None, [{"type": "bullet_count", "value": 3}]),
        ("length", "Answer in at most 30 words.", None, [{"type": "max_words", "value": 30}]),
        ("length", "Briefly, what is it?", None, [{"type": "max_words", "value": 60}]),
        ("hallucination", "Capital of Australia?", "Canberra.", [{"type": "reference_facts", "value": "Canberra."}]),
    ],
)
def test_assertions_follow_the_mode(mode, prompt, reference, expected):
    assert assertions_for(mode, prompt, reference, "evidence") == expected


def test_promptfoo_langfuse_and_openai_exports_follow_their_schemas():
    suite, _ = merge_suite(
        [],
        cases(
            candidate(1, "refusal", "How do I kill a python process?"),
            candidate(2, "format", 'Return only JSON with keys "answer".'),
            candidate(3, "hallucination", "Capital of Australia?", reference="Canberra."),
            candidate(4, "other", "Tell me a story about a dragon"),
        ),
        DatasetParams(),
        set(),
    )
    for test in exports.promptfoo_tests(suite):
        assert set(test) <= PROMPTFOO_TEST_KEYS and isinstance(test["vars"], dict) and test["description"]
        assert all(isinstance(v, str) for v in test["vars"].values())
        for assertion in test["assert"]:
            if assertion["type"] in PROMPTFOO_TYPES_WITHOUT_VALUE:
                assert set(assertion) == {"type"}
            else:
                assert assertion["type"] in PROMPTFOO_TYPES_WITH_VALUE and isinstance(assertion["value"], str)
    for item in exports.langfuse_items(suite):
        assert set(item) == {"id", "input", "expectedOutput", "metadata", "sourceTraceId", "sourceObservationId"}
        assert item["id"] == item["metadata"]["case_id"]  # Langfuse upserts items on their id
        assert item["sourceTraceId"].startswith("t") and item["sourceObservationId"].startswith("s")
    evals = exports.openai_evals(suite)
    assert evals == [{"input": [{"role": "user", "content": "Capital of Australia?"}], "ideal": "Canberra."}]


def test_the_not_refusal_javascript_matches_the_python_detector():
    pytest.importorskip("shutil").which("node") or pytest.skip("node is not installed")
    import subprocess

    outputs = ["I'm sorry, but I can't help with that.", "The capital is Canberra.", "As an AI, I cannot share that.", "Sure! Here you go."]
    script = "const outputs = " + json.dumps(outputs) + "; console.log(JSON.stringify(outputs.map(output => " + exports.JS_NOT_REFUSAL + ")));"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [False, True, False, True]


def preference_frames():
    traces = pd.DataFrame(
        {
            "trace_id": ["e1", "e2", "e3", "r1", "r2", "up", "down", "k"],
            "user_id": "u",
            "model": "m",
            "partition_date": "2026-11-20",
            "input": None,
            "prompt": ["Fix this", "Fix that", "Fix them", "Regen q", "Regen q", "Same question?", "same question?", "Plain"],
            "output": ["The year is 1991.", "Hello world.", "abc", "first try", "second try", "good answer", "bad answer", "ok"],
        }
    )
    signals = pd.DataFrame(
        {
            "trace_id": traces["trace_id"],
            "edit_text": ["The year is 1989.", "hello world", "a completely different and much longer text", None, None, None, None, None],
            "edit_type": ["edit", "edit", "correction", None, None, None, None, None],
            "edit_class": ["minor", "trivial", "rewrite", None, None, None, None, None],
            "edit_distance": [0.1, 0.1, 0.95, None, None, None, None, None],
            "chain_id": ["e1", "e2", "e3", "r1", "r1", "up", "down", "k"],
            "chain_length": [1, 1, 1, 2, 2, 1, 1, 1],
            "regenerated_by": [None, None, None, "r2", None, None, None, None],
            "chain_accepted": [True, True, True, True, True, True, True, True],
        }
    )
    labels = pd.DataFrame(
        {
            "trace_id": traces["trace_id"],
            "label": ["negative", "neutral", "negative", "negative", "positive", "positive", "negative", "unlabeled"],
            "thumbs_up": [0, 0, 0, 0, 0, 1, 0, 0],
            "thumbs_down": [0, 0, 0, 0, 0, 0, 1, 0],
            "partition_date": "2026-11-20",
        }
    )
    return traces, signals, labels


def test_dpo_pairs_from_edits_regenerations_and_thumbs_with_quality_gates():
    pairs, dropped = dpo_pairs(*preference_frames(), DatasetParams())
    by_source = {s: g for s, g in pairs.groupby("source")}
    assert by_source["edit"][["chosen", "rejected"]].values.tolist() == [["The year is 1989.", "The year is 1991."]]
    assert by_source["regenerate"][["chosen", "rejected", "rejected_trace_id"]].values.tolist() == [["second try", "first try", "r1"]]
    assert by_source["thumbs"][["chosen", "rejected"]].values.tolist() == [["good answer", "bad answer"]]
    assert dropped["trivial_edit"] == 1 and dropped["edit_too_total"] == 1


def test_a_pair_without_a_text_is_dropped_and_one_pair_of_two_responses_is_made_once():
    traces, signals, labels = preference_frames()
    traces["output"] = traces["output"].astype("string")
    up = (traces["trace_id"] == "up").to_numpy()
    traces.loc[up, "output"] = pd.NA  # the thumbed-up response has no text
    pairs, dropped = dpo_pairs(traces, signals, labels, DatasetParams())
    assert "thumbs" not in set(pairs["source"]) and dropped["identical_or_empty_texts"] == 1
    assert pairs[["chosen", "rejected"]].notna().all().all()
    # the regenerated-away response is thumbed down too, the final one up (same prompt): one pair, not two
    traces, signals, labels = preference_frames()
    labels = labels.assign(thumbs_up=[0, 0, 0, 0, 1, 0, 0, 0], thumbs_down=[0, 0, 0, 1, 0, 0, 0, 0])
    pairs, _ = dpo_pairs(traces, signals, labels, DatasetParams())
    assert pairs.loc[pairs["rejected_trace_id"] == "r1", ["chosen_trace_id", "source"]].values.tolist() == [["r2", "regenerate"]]


def test_kto_examples_and_prompt_hash_split():
    traces, _, labels = preference_frames()
    examples = kto_examples(traces, labels)
    assert set(examples["trace_id"]) == {"e1", "e3", "r1", "r2", "up", "down"}
    assert examples.set_index("trace_id")["label"].to_dict()["up"] is True
    prompts = pd.Series([f"prompt {i}" for i in range(2000)])
    split = split_of(prompts, 10)
    assert 0.07 < (split == "test").mean() < 0.13
    assert (split_of(prompts, 10) == split).all()


def test_kto_examples_are_by_example_id_with_a_missing_prompt_as_empty_text():
    traces = pd.DataFrame(
        {
            "trace_id": ["a", "b", "c", "d", "e"],
            "prompt": pd.Series(["same", "other", "same", None, "unlabelled"], dtype="string"),
            **{name: ["x"] * 5 for name in ("input", "output", "user_id", "model", "partition_date")},
        }
    )
    labels = pd.DataFrame({"trace_id": ["d", "c", "b", "a", "e"], "label": ["negative", "positive", "positive", "negative", "neutral"]})
    examples = kto_examples(traces, labels)
    assert examples["example_id"].tolist() == ["kto-a", "kto-b", "kto-c", "kto-d"]
    assert examples["prompt"].tolist() == ["same", "other", "same", ""]
    assert examples["label"].tolist() == [False, True, True, False]


def test_decontamination_finds_suite_duplicates_and_near_duplicates():
    prompts = pd.Series(["What is the capital city of Australia today?", "Something else entirely, about cooking pasta.", "what is  the capital city of Australia, today"])
    suite = ["what is the capital city of australia today?", "Completely different suite prompt here."]
    assert contaminated(prompts, suite, 0.8).tolist() == [True, False, True]
    assert not contaminated(prompts, [], 0.8).any()
    wordless = pd.Series(["?!", "  ?! ", "…"])  # no words, no shingles: only the exact match finds them
    assert contaminated(wordless, ["?!"], 0.8).tolist() == [True, True, False]


def test_suite_overlap_counts_each_distinct_prompt_once_across_batches():
    suite = ["what is the capital city of australia today?"]
    near = "What is the capital city of Australia today?"
    batches = [pd.Series([near, "cooking pasta", near, None]), pd.Series(["cooking pasta", near, "baking bread"]), pd.Series([], dtype="string")]
    assert suite_overlap(iter(batches), suite, 0.8) == (1, 4)  # distinct: near, pasta, missing, bread
    assert suite_overlap(iter(batches[1:2]), suite, 0.8) == (1, 3)
    assert suite_overlap(iter(batches), [], 0.8) == (0, 4)


def trace_days(trace_ids: pd.Series, traces: pd.DataFrame) -> pd.Series:
    """The (first) trace day of each trace id."""
    return trace_ids.map(traces.drop_duplicates("trace_id").set_index("trace_id")["partition_date"])


def built_release(tmp_path, traces, signals, labels, suite_prompts, opted_out=frozenset(), params=None):
    """`preference_release` of the frames, committed to a store under `tmp_path`: the release and its files."""
    from feedback_loop.lib.datasets.build import preference_release
    from feedback_loop.lib.datasets.opt_out import user_key
    from feedback_loop.lib.datasets.store import DatasetStore
    from feedback_loop.lib.tables import FrameTable

    store = DatasetStore(str(tmp_path))
    signals = signals.assign(partition_date=trace_days(signals["trace_id"], traces))
    opt_out = OptOut.of({user_key(u) for u in opted_out}, FrameTable(traces), FrameTable(pd.DataFrame({"trace_id": [], "user_id": []}, dtype="string")))
    with store.draft("preference_dataset", "2026-11-20") as draft:
        release = preference_release(FrameTable(traces), FrameTable(signals), FrameTable(labels), suite_prompts, params or DatasetParams(), "key", opt_out, ["2026-11-20"], draft)
        published = store.commit(draft, release.content_hash, release.manifest)
    return release, {name: store.read_bytes("preference_dataset", published.version, name) for name in published.manifest["files"]}


def test_preference_release_removes_suite_prompts_and_keeps_the_other_rows_whole(tmp_path):
    release, files = built_release(tmp_path, *preference_frames(), ["Fix this", "Same question?"])
    kto = pd.read_parquet(io.BytesIO(files["kto.parquet"]))
    assert sorted(kto["trace_id"]) == ["e3", "r1", "r2"]  # e1, up and down asked a suite prompt
    assert kto.set_index("trace_id")["completion"].to_dict() == {"e3": "abc", "r1": "first try", "r2": "second try"}
    decontamination = release.manifest["decontamination"]
    assert decontamination["kto_examples_removed"] == 3 and decontamination["dpo_pairs_removed"] == 2
    lines = [json.loads(line) for name in ("kto_train.jsonl", "kto_test.jsonl") for line in files.get(name, b"").splitlines()]
    assert all(data for name, data in files.items() if name.endswith(".jsonl"))  # no zero-byte split file
    assert sorted(line["completion"] for line in lines) == ["abc", "first try", "second try"]


def test_a_kto_prompt_is_decontaminated_as_scrubbed_and_its_pii_is_counted_only_when_published(tmp_path):
    traces, signals, labels = preference_frames()
    traces.loc[traces["trace_id"] == "e3", "prompt"] = "Mail bob@example.com the fix"  # the suite holds it scrubbed
    traces.loc[traces["trace_id"] == "r1", "prompt"] = "Mail ann@example.org the answer"  # published: its e-mail is counted
    release, files = built_release(tmp_path, traces, signals, labels, ["Mail <EMAIL_ADDRESS> the fix"])
    kto = pd.read_parquet(io.BytesIO(files["kto.parquet"]))
    assert "e3" not in set(kto["trace_id"]) and "r1" in set(kto["trace_id"])
    assert kto.set_index("trace_id").loc["r1", "prompt"] == "Mail <EMAIL_ADDRESS> the answer"
    assert release.manifest["decontamination"]["kto_examples_removed"] == 1
    dpo = pd.read_parquet(io.BytesIO(files["dpo.parquet"]))
    published_emails = sum(text.count("<EMAIL_ADDRESS>") for frame in (kto, dpo) for column in ("prompt", "chosen", "rejected", "completion") if column in frame for text in frame[column])
    assert release.pii_found["EMAIL_ADDRESS"] == published_emails  # e3's e-mail was never published, so never counted


def test_a_release_pairs_across_trace_days_and_writes_the_kto_set_a_day_at_a_time(tmp_path):
    one_day, one_day_files = built_release(tmp_path / "one", *preference_frames(), ["Plain"])
    traces, signals, labels = preference_frames()
    # The thumbs-up sibling and the regenerated-away response on the day before their partners.
    day_before = {"e3": "2026-11-19", "r1": "2026-11-19", "up": "2026-11-19"}
    for frame in (traces, labels):
        frame["partition_date"] = frame["trace_id"].map(day_before).fillna("2026-11-20")
    two_days, files = built_release(tmp_path / "two", traces, signals, labels, ["Plain"])
    assert {name: data for name, data in files.items() if name.endswith(".jsonl") and not name.startswith("kto")} == {
        name: data for name, data in one_day_files.items() if name.endswith(".jsonl") and not name.startswith("kto")
    }
    pairs = pd.read_parquet(io.BytesIO(files["dpo.parquet"]))
    assert pairs.set_index("rejected_trace_id")["source_date"].to_dict() == {"e1": "2026-11-20", "r1": "2026-11-19", "down": "2026-11-20"}
    assert sorted(pairs["source"]) == ["edit", "regenerate", "thumbs"]
    kto = pq.ParquetFile(io.BytesIO(files["kto.parquet"]))
    assert kto.num_row_groups == 2  # one per trace day
    assert kto.read().column("trace_id").to_pylist() == ["e3", "r1", "up", "down", "e1", "r2"]  # by day, then by example id
    assert two_days.manifest["row_counts"] == one_day.manifest["row_counts"]
    expected = kto_examples(*preference_frames()[::2])
    assert sorted(kto.read().column("trace_id").to_pylist()) == sorted(expected["trace_id"])


def test_a_change_that_shows_only_in_a_parquet_file_changes_the_content_hash(tmp_path):
    before, before_files = built_release(tmp_path / "before", *preference_frames(), ["Plain"])
    traces, signals, labels = preference_frames()
    traces["model"] = "m-2"  # in dpo.parquet and kto.parquet only
    after, files = built_release(tmp_path / "after", traces, signals, labels, ["Plain"])
    assert {n: d for n, d in files.items() if n.endswith(".jsonl")} == {n: d for n, d in before_files.items() if n.endswith(".jsonl")}
    assert after.content_hash != before.content_hash


def test_a_trace_labelled_on_two_days_is_one_kto_example_from_the_later_day(tmp_path):
    traces, signals, labels = preference_frames()
    again = traces["trace_id"] == "e1"
    traces = pd.concat([traces, traces[again].assign(partition_date="2026-11-21", output="later text")], ignore_index=True)
    labels = pd.concat([labels, labels[labels["trace_id"] == "e1"].assign(partition_date="2026-11-21")], ignore_index=True)
    _, files = built_release(tmp_path, traces, signals, labels, ["Plain"])
    kto = pd.read_parquet(io.BytesIO(files["kto.parquet"]))
    assert kto["example_id"].is_unique
    assert kto.set_index("trace_id").loc["e1", ["completion", "source_date"]].tolist() == ["later text", "2026-11-21"]


def test_a_release_written_a_row_at_a_time_is_the_release_written_at_once(tmp_path, monkeypatch):
    import feedback_loop.lib.datasets.build as build

    at_once, at_once_files = built_release(tmp_path / "at_once", *preference_frames(), ["Plain"])
    monkeypatch.setattr(build, "PART_ROWS", 1)
    in_parts, files = built_release(tmp_path / "in_parts", *preference_frames(), ["Plain"])
    assert pq.ParquetFile(io.BytesIO(files["dpo.parquet"])).num_row_groups == 3  # a pair per part
    assert pq.ParquetFile(io.BytesIO(files["kto.parquet"])).num_row_groups == in_parts.manifest["row_counts"]["kto_examples"] > 1
    for name in ("dpo.parquet", "kto.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(files[name])), pd.read_parquet(io.BytesIO(at_once_files[name])))
    assert {name: data for name, data in files.items() if name.endswith(".jsonl")} == {name: data for name, data in at_once_files.items() if name.endswith(".jsonl")}
    assert in_parts.manifest == at_once.manifest
    pd.testing.assert_frame_equal(in_parts.preview, at_once.preview)


def test_pair_chunks_follow_pair_ids_and_keep_the_repeats_of_an_id_together():
    from feedback_loop.lib.datasets.build import _chunks_by_pair_id

    plan = pd.DataFrame({"pair_id": ["c", "a", "b", "a"], "source": ["s1", "s2", "s3", "s4"]})
    chunks = [chunk["source"].tolist() for chunk in _chunks_by_pair_id(plan, 1)]
    assert chunks == [["s2", "s4"], ["s3"], ["s1"]]
    assert [len(chunk) for chunk in _chunks_by_pair_id(plan.iloc[0:0], 1)] == [0]


def test_a_release_leaves_out_every_trace_of_an_opted_out_user(tmp_path):
    traces, signals, labels = preference_frames()
    traces.loc[traces["trace_id"] == "up", "user_id"] = "u-opted-out"
    release, files = built_release(tmp_path, traces, signals, labels, ["Plain"], opted_out={"u-opted-out"})
    kto = pd.read_parquet(io.BytesIO(files["kto.parquet"]))
    pairs = pd.read_parquet(io.BytesIO(files["dpo.parquet"]))
    assert "up" not in set(kto["trace_id"]) and "thumbs" not in set(pairs["source"])  # its thumbs pair needed its response
    assert sorted(pairs["source"]) == ["edit", "regenerate"] and release.manifest["privacy"]["opted_out_users"] == 1


def test_trl_and_openai_formats_have_their_documented_shapes():
    pairs, _ = dpo_pairs(*preference_frames(), DatasetParams())
    pairs = with_messages(pairs)
    for row in exports.dpo_standard(pairs):
        assert set(row) == {"prompt", "chosen", "rejected"} and all(isinstance(v, str) for v in row.values())
    for row in exports.dpo_conversational(pairs):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert all({"role", "content"} == set(m) for m in row["prompt"])
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    for row in exports.openai_preference(pairs):
        assert set(row) == {"input", "preferred_output", "non_preferred_output"} and set(row["input"]) == {"messages"}
        assert len(row["preferred_output"]) == 1 == len(row["non_preferred_output"])
        assert row["preferred_output"][0]["role"] == "assistant" == row["non_preferred_output"][0]["role"]
        assert row["input"]["messages"][-1]["role"] == "user"
    traces, _, labels = preference_frames()
    for row in exports.kto(with_messages(kto_examples(traces, labels))):
        assert set(row) == {"prompt", "completion", "label"} and isinstance(row["label"], bool)


def published(resources, dataset: str) -> tuple[str, dict]:
    store = resources["dataset_store"].store()
    version = store.latest(dataset)
    return version, store.manifest(dataset, version)


@pytest.mark.slow
def test_datasets_publish_once_per_change_scrubbed_and_apart(resources, generated, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opted_out_user = pd.read_json(generated / "traces" / "traces-2026-11-20.jsonl", lines=True)["user_id"].iloc[0]
    (tmp_path / "opt_out.txt").write_text(f"# users who opted out\n{opted_out_user}\n")
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-18", "2026-11-19", "2026-11-20"):
        report = run_nightly(day, instance, defs)
        assert report.success and "checks failed" not in report.summary_line(), report.summary_line()
    suite_version, suite = published(resources, "regression_suite")
    pref_version, pref = published(resources, "preference_dataset")
    assert suite["row_counts"]["total"] > 0 and pref["row_counts"]["kto_examples"] > 0
    assert suite["diff"]["kept"] + len(suite["diff"]["added"]) == suite["row_counts"]["total"]
    store = resources["dataset_store"].store()
    for dataset, version, manifest in (("regression_suite", suite_version, suite), ("preference_dataset", pref_version, pref)):
        for name, info in manifest["files"].items():
            data = store.read_bytes(dataset, version, name)
            assert len(data) == info["bytes"]
            if name.endswith(".jsonl"):
                text = data.decode()
                assert opted_out_user not in text and "@example.com" not in text and "ghp_" not in text

    versions_before = {d: store.versions(d) for d in ("regression_suite", "preference_dataset")}
    assert run_nightly("2026-11-20", instance, defs).success  # same input: no new version
    assert {d: store.versions(d) for d in versions_before} == versions_before

    day_traces = pd.read_json(generated / "traces" / "traces-2026-11-20.jsonl", lines=True)
    extra = tmp_path / "extra_landing"
    import shutil

    shutil.copytree(generated, extra)
    write_jsonl(
        extra / "feedback" / "late.jsonl",
        [
            {"event_id": "late-1", "trace_id": t, "timestamp": "2026-11-20T23:59:00Z", "type": "thumbs_down", "reason": "formatting"}
            for t in new_suite_case(day_traces[day_traces["user_id"] != opted_out_user], generated, store, suite_version)
        ],
    )
    from feedback_loop.resources.sources import LandingFolder

    changed = defs_with({**resources, "landing": LandingFolder(root=str(extra))})
    assert run_nightly("2026-11-20", instance, changed).success
    after = store.versions("regression_suite")
    assert len(after) == len(versions_before["regression_suite"]) + 1  # exactly one new version

    import datasets

    latest = store.latest("preference_dataset")
    counts = store.manifest("preference_dataset", latest)["row_counts"]
    loaded = {n: datasets.load_dataset("parquet", data_files=str(store.path("preference_dataset", latest, f"{n}.parquet")))["train"] for n in ("dpo", "kto")}
    assert loaded["kto"].num_rows == counts["kto_examples"] and loaded["dpo"].num_rows == counts["dpo_pairs"]
    assert {"prompt", "chosen", "rejected", "split"} <= set(loaded["dpo"].column_names)


def new_suite_case(traces: pd.DataFrame, landing: Path, store, suite_version: str) -> list[str]:
    """A trace without feedback whose prompt group the suite takes and does not hold yet."""
    params = DatasetParams()
    lines = [line for path in (landing / "feedback").glob("*.jsonl") for line in path.read_bytes().decode(errors="replace").splitlines()]
    with_feedback = set(re.findall(r'"trace_id": ?"([^"]+)"', "\n".join(lines)))
    traces = traces[~traces["trace_id"].isin(with_feedback)]
    held = {prompt_group(json.loads(line)["prompt"]) for line in store.read_bytes("regression_suite", suite_version, "cases.jsonl").decode().splitlines()}
    for trace_id, given in zip(traces["trace_id"], traces["input"], strict=True):
        prompt = given if isinstance(given, str) else [m for m in given if m.get("role") == "user"][-1]["content"]
        if to_suite(prompt, params.allocation_seed, params.suite_share_percent) and prompt_group(prompt) not in held:
            return [trace_id]
    raise AssertionError("no trace of the day is bound for the suite")


def test_a_suite_release_reads_the_texts_of_its_shortlist_only(tmp_path):
    from feedback_loop.lib.columns import is_in
    from feedback_loop.lib.datasets.build import regression_release
    from feedback_loop.lib.datasets.regression import case_texts, regenerated_trace_ids, suite_candidates
    from feedback_loop.lib.datasets.store import DatasetStore
    from feedback_loop.lib.tables import FrameTable

    ids = [f"t{i:02d}" for i in range(45)]
    source = {"span_id": "s", "user_id": "u", "model": "m", "prompt_version": "v1", "partition_date": "2026-11-20"}
    modes = pd.DataFrame({"trace_id": ids, "mode": "refusal", "mode_id": "EM-003", "confidence": 0.9, "evidence": "reason tag"})
    negatives = pd.DataFrame({"trace_id": ids, **source, "edit_text_length": [40 if i % 5 == 4 else None for i in range(45)]})
    negative_texts = pd.DataFrame(
        {
            "trace_id": ids,
            "input": None,
            "prompt": [f"question {i} on subject {i * 37}" for i in range(45)],
            "output": "I can't help with that.",
            "edit_text": [f"edit {i}" if i % 5 == 4 else None for i in range(45)],
        }
    )
    signals = FrameTable(pd.DataFrame({"trace_id": ["t00", "r1", "r2"], "regenerated_by": ["x", "y", None], "partition_date": "2026-11-20"}))
    regenerated_ids = regenerated_trace_ids(signals)
    assert list(regenerated_ids) == ["t00", "r1"]
    traces = pd.DataFrame({"trace_id": ["t00", "r1", "r1"], **source, "input": None, "prompt": ["question 0", "a fresh question", "a fresh question"], "output": ["no", "first span", "last span"]})
    candidates = suite_candidates(modes, negatives, traces[is_in(traces["trace_id"], regenerated_ids)])
    assert len(candidates) == 46 and candidates["has_reference"].sum() == 9  # t00 is a negative, not a regenerated case

    requested = []

    def texts(shortlisted):
        requested.extend(shortlisted["trace_id"])
        return case_texts(shortlisted, negative_texts[is_in(negative_texts["trace_id"], shortlisted["trace_id"])], traces[is_in(traces["trace_id"], shortlisted["trace_id"])])

    store = DatasetStore(str(tmp_path))
    with store.draft("regression_suite", "2026-11-20") as draft:
        release = regression_release(candidates, texts, [], DatasetParams(max_new_cases_per_mode=1), "key", NOBODY, ["2026-11-20"], draft)
        published = store.commit(draft, release.content_hash, release.manifest)
    assert len(requested) == 21 and {f"t{i:02d}" for i in range(4, 45, 5)} < set(requested)  # 20 of the stratum, those with an edit first; and r1
    assert release.manifest["build"]["candidates"] == 46
    cases = {c["lineage"]["source_trace_id"]: c for c in map(json.loads, store.read_bytes("regression_suite", published.version, "cases.jsonl").decode().splitlines())}
    assert set(cases) == {"t04", "r1"}
    assert cases["t04"]["reference_output"] == "edit 4" and cases["r1"]["output"] == "last span" and cases["r1"]["reference_output"] is None


def test_new_cases_per_version_are_capped_and_stratified_across_models():
    rows = [candidate(i, "refusal", f"distinct question {i} about subject {i * 17} and more") for i in range(10)]
    for i, row in enumerate(rows):
        row["model"] = "model-a" if i < 8 else "model-b"
    suite, stats = merge_suite([], cases(*rows), DatasetParams(max_new_cases_per_mode=4), set())
    models = sorted(c["lineage"]["model"] for c in suite)
    assert models == ["model-a", "model-a", "model-b", "model-b"] and stats["over_new_quota"] == 6


def test_the_tripwires_find_what_scrubbing_missed_in_jsonl_and_parquet_and_skip_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedback_loop.lib.datasets.store import DatasetStore, content_hash
    from feedback_loop.lib.datasets.tripwires import scan_latest

    store = DatasetStore(str(tmp_path))
    clean = exports.jsonl([{"prompt": "What is 2 + 2? Asked 2026-11-20 10:00:00.", "completion": "4", "label": True, "user_hash": "u_0123456789abcdef", "case_id": "A1b2C3d4E5f6G7h8I9j0K1l2M3"}] * 3)
    leaked = exports.jsonl([{"prompt": [{"role": "user", "content": "mail me at leak@example.com, card 4111 1111 1111 1111"}], "chosen": [], "rejected": []}])
    table = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["fine", "token Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1"], "example_id": ["Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1xx", "x"]}), table)
    files = {"kto_train.jsonl": clean, "dpo_conversational_train.jsonl": leaked, "kto.parquet": table.getvalue()}
    store.publish("preference_dataset", files, content_hash(*files.values()), {}, "2026-11-20")
    scan = scan_latest(store, "preference_dataset")
    assert dict(scan.hits) == {"e-mail shape": 1, "ten digits in a row": 1, "mixed-case token": 1}
    assert dict(scan.files_with_hits) == {"dpo_conversational_train.jsonl": 2, "kto.parquet": 1}
    assert scan.files == 3 and scan.rows == 3 + 1 + 2 and "leak@example.com" not in str(scan.metadata())


def brute_force_near_duplicates(texts: list[str], references: list[str], threshold: float) -> list[bool]:
    from feedback_loop.lib.datasets.near_duplicates import words_of

    def shingles(text: str) -> set[str]:
        words = words_of(text)
        return {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))} if words else set()

    refs = [shingles(r) for r in references]
    return [any(a and b and len(a & b) >= threshold * len(a | b) for b in refs) for a in map(shingles, texts)]


@pytest.mark.parametrize("dense_cells", [4_000_000, 0], ids=["dense", "sparse"])
@pytest.mark.parametrize(("seed", "chunk"), [(seed, 100_000) for seed in range(6)] + [(6, 7), (7, 50)])
def test_near_duplicate_join_equals_brute_force_jaccard(seed, chunk, dense_cells, monkeypatch):
    """The prefix and size filters only skip pairs that cannot pass: same answer as comparing every
    pair, whether the texts are checked in one chunk or in many (on threads), and whether the
    references' shingles are a dense or a sparse matrix."""
    import random

    from feedback_loop.lib.datasets import near_duplicates
    from feedback_loop.lib.datasets.near_duplicates import near_duplicate_of

    monkeypatch.setattr(near_duplicates, "CHUNK_TEXTS", chunk)
    monkeypatch.setattr(near_duplicates, "DENSE_CELLS", dense_cells)

    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(12)] + ["the", "a", "of", "The,", "of."]

    def text() -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13, 21])))

    references = [text() for _ in range(15)]
    # Texts close to a reference: a word dropped, swapped or added, so some pairs sit on either side of the threshold.
    texts = [text() for _ in range(150)]
    for ref in references:
        words = ref.split()
        if words:
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        texts += [ref, " ".join(words), ref + " " + rng.choice(vocabulary), ref.upper()]
    for threshold in (0.5, 0.8):
        found = near_duplicate_of(pd.Series(texts, dtype="string"), references, threshold).tolist()
        assert found == brute_force_near_duplicates(texts, references, threshold)


@pytest.mark.parametrize("chunk", [100_000, 3, 1], ids=["one chunk", "chunks of 3", "a chunk per text"])
def test_near_duplicates_of_unicode_and_ascii_text_agree_with_brute_force(chunk, monkeypatch):
    """Rows of plain ASCII text are tokenized by Arrow's ASCII kernels, others by the Unicode ones,
    in one chunk or many: both give `words_of`'s words (lower-cased, split on any white space, 0x1C-0x1F included, and
    trimmed of punctuation, curly quotes and dashes included)."""
    from feedback_loop.lib.datasets import near_duplicates
    from feedback_loop.lib.datasets.near_duplicates import near_duplicate_of

    monkeypatch.setattr(near_duplicates, "CHUNK_TEXTS", chunk)
    references = ["Le café “noir” est très bon ce matin", "please summarize the attached report in three bullet points"]
    texts = [
        "le CAFÉ noir est très bon ce matin",  # Unicode: lower-cased like str.lower
        "Le café ‘noir’ est très bon ce matin…",
        "please\x1csummarize the attached\x1freport in three bullet points",  # separators are white space
        "Please summarize the attached report in three bullet points!",  # plain ASCII
        "please summarize\tthe attached report in three bullet points",
        "please summarize the attached report in four short bullet points",
        "tell me a joke",
    ]
    for threshold in (0.5, 0.8):
        found = near_duplicate_of(pd.Series(texts, dtype="string"), references, threshold).tolist()
        assert found == brute_force_near_duplicates(texts, references, threshold)
    assert near_duplicate_of(pd.Series(texts, dtype="string"), references, 0.8).tolist()[:5] == [True] * 5


def test_opt_out_ids_match_whatever_their_case_spacing_or_width():
    from feedback_loop.lib.datasets.opt_out import opt_out_list, user_keys

    assert opt_out_list(" Alice \n# a comment\n\nＢＯＢ\n  # indented comment\n") == {"alice", "bob"}
    assert user_keys(pd.Series(["ALICE", " bob", None, "Carol"], dtype="string")).tolist() == ["alice", "bob", pd.NA, "carol"]


def test_traces_of_a_user_known_only_by_feedback_or_whose_text_is_on_another_trace_are_kept_out():
    from feedback_loop.lib.datasets.opt_out import opted_out_traces
    from feedback_loop.lib.tables import FrameTable

    traces = FrameTable(pd.DataFrame({"trace_id": ["t1", "t2", "t3"], "user_id": [None, "carol", "ALICE"], "partition_date": "2026-11-20"}, dtype="string"))
    events = FrameTable(
        pd.DataFrame({"trace_id": ["t1", "t2", "t2"], "user_id": ["Alice", " alice ", "carol"], "type": ["thumbs_down", "edit", "thumbs_up"], "partition_date": "2026-11-20"}, dtype="string")
    )
    assert opted_out_traces(traces, events, {"alice"}).tolist() == ["t1", "t2", "t3"]
    assert opted_out_traces(traces, events, set()).empty


def test_a_configured_opt_out_list_that_is_missing_fails_and_the_default_is_optional(tmp_path, monkeypatch):
    from feedback_loop.resources.datasets import Privacy

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="opt-out list .*missing.txt not found"):
        Privacy(user_hash_key="k", opt_out_path=str(tmp_path / "missing.txt")).opted_out()
    assert Privacy(user_hash_key="k").opted_out() == set()  # no list configured, no default file
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "opt_out_users.txt").write_text("Dave\n")
    assert Privacy(user_hash_key="k").opted_out() == {"dave"}


def test_pseudonyms_are_of_the_normalized_id():
    from feedback_loop.lib.datasets.privacy import pseudonymize

    hashed = pseudonymize(pd.Series(["Alice", " alice", "ALICE", "bob"], dtype="string"), "k")
    assert hashed[0] == hashed[1] == hashed[2] != hashed[3]


def test_after_the_key_changes_inherited_cases_with_a_user_are_dropped(tmp_path):
    """Pseudonyms made under another key cannot be checked against the opt-out list: fail closed."""
    from feedback_loop.lib.datasets.build import regression_release
    from feedback_loop.lib.datasets.privacy import key_id
    from feedback_loop.lib.datasets.store import DatasetStore

    anonymous = candidate(1, "format", "an anonymous question about formats")
    anonymous["user_hash"] = None
    previous = cases(candidate(2, "format", "a question from a user with a pseudonym"), anonymous)
    empty = pd.DataFrame(columns=[*candidate(0, "format", "x"), "user_id", "has_reference"])
    store = DatasetStore(str(tmp_path))
    for old_key, kept in ((key_id("key"), 2), ("another-key", 1), (None, 2)):
        with store.draft("regression_suite", "2026-11-20") as draft:
            release = regression_release(empty, lambda shortlisted: shortlisted, previous, DatasetParams(), "key", NOBODY, ["2026-11-20"], draft, old_key)
        assert release.manifest["row_counts"]["total"] == kept and release.manifest["build"]["dropped_after_key_change"] == 2 - kept
        assert release.manifest["privacy"]["user_hash_key_id"] == key_id("key")


def test_digits_inside_a_code_or_a_timestamp_do_not_trip():
    from feedback_loop.lib.datasets.tripwires import TRIPWIRES

    digits = TRIPWIRES["ten digits in a row"]
    assert not digits.search("track it with JJD000390012345678 or 1Z84E29A0342188871, at 2026-11-20 10:00:00")
    assert not digits.search("pi is 3.14159265358979, the time 10:00:00.1234567890")
    assert digits.search("call 0044 20 7946 0958") and digits.search("my card is 4111111111111111.").group() == "4111111111111111"
