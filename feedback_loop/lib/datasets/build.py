"""Build a release (files, content hash, manifest fields) of the regression suite and of the preference dataset.

Privacy is applied before anything is serialized: rows of opted-out users are dropped, user ids
are replaced by keyed hashes, and every text field is scrubbed of PII and secrets.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedback_loop.lib.datasets import exports
from feedback_loop.lib.datasets.preference import (
    contaminated,
    dpo_pairs,
    kto_examples,
    split_of_hashes,
    with_messages,
)
from feedback_loop.lib.datasets.privacy import pseudonymize, scrub_frame, scrub_frames
from feedback_loop.lib.datasets.regression import build_cases, merge_suite, prompt_hashes, shortlist
from feedback_loop.lib.datasets.store import combined_hash, file_digests
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.text import is_in, positions

CASES_FILE = "cases.jsonl"
SPLITS = ("train", "test")


@dataclass
class Release:
    files: dict[str, bytes]
    content_hash: str
    manifest: dict
    preview: pd.DataFrame
    pii_found: Counter = field(default_factory=Counter)
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 of each file


def code_version() -> str:
    return f"feedback_loop {version('feedback_loop')}"


def regression_release(
    candidates: pd.DataFrame,
    previous: list[dict],
    params: DatasetParams,
    hash_key: str,
    opted_out: set[str],
    source_partitions: list[str],
) -> Release:
    """The next regression suite from the window's candidates and the previous version's cases."""
    kept = candidates[~candidates["user_id"].isin(opted_out)]
    kept = shortlist(kept[kept["confidence"] >= params.min_case_confidence], params).copy()
    kept["user_hash"] = pseudonymize(kept["user_id"], hash_key)
    scrubbed, pii = scrub_frame(kept, ["prompt", "input", "output", "reference_output", "evidence"], json_columns=("input",))
    dropped_users = set(pseudonymize(pd.Series(sorted(opted_out), dtype="string"), hash_key).dropna())
    cases, stats = merge_suite(previous, build_cases(scrubbed), params, dropped_users)
    files = {
        CASES_FILE: exports.jsonl(cases),
        "tests.jsonl": exports.jsonl(exports.promptfoo_tests(cases)),
        "langfuse_items.jsonl": exports.jsonl(exports.langfuse_items(cases)),
        "openai_evals.jsonl": exports.jsonl(exports.openai_evals(cases)),
    }
    previous_ids, ids = {c["case_id"] for c in previous}, {c["case_id"] for c in cases}
    manifest = {
        "code_version": code_version(),
        "source_partitions": source_partitions,
        "row_counts": {"total": len(cases), "per_error_mode": dict(Counter(c["error_mode"] for c in cases))},
        "schema": {"cases.jsonl": ["case_id", "input", "prompt", "output", "reference_output", "error_mode", "error_mode_id", "confidence", "evidence", "assertions", "lineage"]},
        "diff": {"added": sorted(ids - previous_ids), "removed": sorted(previous_ids - ids), "kept": len(ids & previous_ids)},
        "build": {**stats, "candidates": len(candidates), "opted_out_rows_dropped": int(candidates["user_id"].isin(opted_out).sum()), "pii_replaced": dict(pii)},
    }
    preview = pd.DataFrame([{"case_id": c["case_id"], "error_mode": c["error_mode"], "prompt": c["prompt"], "assertions": json.dumps(c["assertions"])} for c in cases[:10]])
    digests = file_digests(files)
    return Release(files=files, content_hash=combined_hash([digests[CASES_FILE]]), manifest=manifest, preview=preview, pii_found=pii, digests=digests)


def preference_release(
    traces: pd.DataFrame,
    signals: pd.DataFrame,
    labels: pd.DataFrame,
    suite_prompts: list[str],
    params: DatasetParams,
    hash_key: str,
    opted_out: set[str],
    source_partitions: list[str],
    consume_inputs: bool = False,
) -> Release:
    """DPO pairs and KTO examples of the window, split, decontaminated against the suite, scrubbed.

    `consume_inputs`: empty the given frames once the pairs and examples are built (for inputs loaded
    for this call alone, as the asset's are: at 1M traces the traces hold ~1.5 GB that nothing needs
    after that, and the caller's references would keep them to the end)."""
    inputs = (traces, signals, labels)
    if opted_out:
        traces = traces[~is_in(traces["user_id"], opted_out)]
        signals = signals[is_in(signals["trace_id"], traces["trace_id"])]
    pairs, gates = dpo_pairs(traces, signals, labels, params)
    examples = kto_examples(traces, labels, consume=consume_inputs)
    if consume_inputs:
        del traces, signals, labels
        for frame in inputs:
            for column in list(frame.columns):
                del frame[column]
        pa.default_memory_pool().release_unused()
    (pairs, examples), pii = scrub_frames([(pairs, ["prompt", "input", "chosen", "rejected"]), (examples, ["prompt", "input", "completion"])], json_columns=("input",), in_place=True)
    pairs = with_messages(pairs)  # the KTO formats take the prompt as text; its Parquet keeps `input`
    # The suite's prompts are scrubbed: compare scrubbed with scrubbed, each distinct prompt once.
    prompts = pd.concat([pairs["prompt"], examples["prompt"]]).drop_duplicates().reset_index(drop=True)
    hashes = prompt_hashes(prompts)
    overlapping = prompts[contaminated(prompts, suite_prompts, params.near_duplicate_threshold, hashes)]
    pair_overlap, example_overlap = is_in(pairs["prompt"], overlapping), is_in(examples["prompt"], overlapping)
    pairs_removed, examples_removed = int(pair_overlap.sum()), int(example_overlap.sum())
    pairs, examples = _consumed_without(pairs, pair_overlap), _consumed_without(examples, example_overlap)
    split_of_prompt = split_of_hashes(hashes, params.test_percent).to_numpy()  # once per distinct prompt
    pairs, examples = _pseudonymized_and_split(pairs, hash_key, split_of_prompt, prompts), _pseudonymized_and_split(examples, hash_key, split_of_prompt, prompts)
    # The KTO set first, and let it go: it is the largest frame, and the files add up to ~1.4 GB at 1M traces.
    files: dict[str, bytes] = {"kto.parquet": _parquet(examples)}
    for split in SPLITS:
        files[f"kto_{split}.jsonl"] = exports.kto_jsonl(examples, split)
    kto_counts = {"kto_examples": len(examples), "kto_desirable": int(examples["label"].sum()) if len(examples) else 0}
    kto_split, kto_columns = examples["split"].value_counts().to_dict(), list(examples.columns)
    del examples
    pa.default_memory_pool().release_unused()  # hand its Arrow buffers back: the DPO files are built by Python's allocator
    for split in SPLITS:
        # Only the columns the exports write: a split of a set with every column is gigabytes.
        p = pairs.loc[(pairs["split"] == split).to_numpy(), ["prompt", "messages", "chosen", "rejected"]]
        files[f"dpo_standard_{split}.jsonl"] = exports.jsonl(exports.dpo_standard(p))
        files[f"dpo_conversational_{split}.jsonl"] = exports.jsonl(exports.dpo_conversational(p))
        files[f"openai_preference_{split}.jsonl"] = exports.jsonl(exports.openai_preference(p))
    files["dpo.parquet"] = _parquet(pairs)
    manifest = {
        "code_version": code_version(),
        "source_partitions": source_partitions,
        "row_counts": {
            "dpo_pairs": len(pairs),
            "per_pair_source": pairs["source"].value_counts().to_dict(),
            **kto_counts,
            "per_split": {"dpo": pairs["split"].value_counts().to_dict(), "kto": kto_split},
        },
        "schema": {
            "dpo_standard_*.jsonl": ["prompt", "chosen", "rejected"],
            "dpo_conversational_*.jsonl": ["prompt", "chosen", "rejected"],
            "openai_preference_*.jsonl": ["input", "preferred_output", "non_preferred_output"],
            "kto_*.jsonl": ["prompt", "completion", "label"],
            "dpo.parquet": list(pairs.columns),
            "kto.parquet": kto_columns,
        },
        "quality_gates_dropped": gates,
        "decontamination": {"near_duplicate_threshold": params.near_duplicate_threshold, "dpo_pairs_removed": pairs_removed, "kto_examples_removed": examples_removed, "suite_prompts": len(suite_prompts)},
        "privacy": {"opted_out_users": len(opted_out), "pii_replaced": dict(pii)},
    }
    digests = file_digests(files)
    digest = combined_hash(digests[name] for name in sorted(files) if name.endswith(".jsonl"))
    preview = pairs[["pair_id", "source", "split", "prompt", "chosen", "rejected"]].head(8)
    return Release(files=files, content_hash=digest, manifest=manifest, preview=preview, pii_found=pii, digests=digests)


def _pseudonymized_and_split(frame: pd.DataFrame, hash_key: str, split_of_prompt: np.ndarray, prompts: pd.Series) -> pd.DataFrame:
    """The builder's own frame with pseudonymous user ids and the split of its prompt."""
    frame["user_id"] = pseudonymize(frame["user_id"], hash_key)
    frame["split"] = split_of_prompt[positions(frame["prompt"], prompts)]
    return frame


def _consumed_without(frame: pd.DataFrame, drop: np.ndarray) -> pd.DataFrame:
    """`frame` without the rows where `drop` is set, built column by column while `frame` gives up
    each column it has copied (the builder's own frame, consumed: at 1M traces the KTO set is
    ~1.3 GB, and a take of every column at once holds it twice)."""
    if not drop.any():
        return frame
    rows = np.flatnonzero(~drop)
    kept = {}
    for column in list(frame.columns):
        kept[column] = frame[column].take(rows).reset_index(drop=True)
        del frame[column]
    return pd.DataFrame(kept)


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), buffer)
    return buffer.getvalue()
