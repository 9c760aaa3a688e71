"""Build a release (files, content hash, manifest fields) of the regression suite and of the preference dataset.

Privacy is applied before anything is serialized: rows of opted-out users are dropped, user ids
are replaced by keyed hashes, and every text field is scrubbed of PII and secrets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedback_loop.lib.datasets import exports
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.datasets.preference import (
    KTO_COLUMNS,
    LABEL_COLUMNS,
    SIGNAL_COLUMNS,
    TRACE_TEXT_COLUMNS,
    contaminated,
    KtoRows,
    kto_examples_of,
    kto_rows,
    pair_plan,
    pairs_of_plan,
    plan_trace_ids,
    split_of_hashes,
    plan_labels,
    plan_signals,
    with_messages,
)
from feedback_loop.lib.datasets.privacy import pseudonymize, scrub_frame, scrub_frames
from feedback_loop.lib.datasets.regression import build_cases, merge_suite, prompt_hashes, shortlist
from feedback_loop.lib.datasets.store import Draft, combined_hash
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.tables import Table
from feedback_loop.lib.text import is_in, large_text, positions, sort_order

CASES_FILE = "cases.jsonl"
SPLITS = ("train", "test")
KTO_SCHEMA = pa.schema([(name, pa.bool_() if name == "label" else pa.large_string()) for name in [*KTO_COLUMNS, "split"]])  # every day's row group


@dataclass
class Release:
    """What a build wrote into its `Draft`, and what its version's manifest says."""

    content_hash: str
    manifest: dict
    preview: pd.DataFrame
    pii_found: Counter = field(default_factory=Counter)


def code_version() -> str:
    return f"feedback_loop {version('feedback_loop')}"


def regression_release(
    candidates: pd.DataFrame,
    texts: Callable[[pd.DataFrame], pd.DataFrame],
    previous: list[dict],
    params: DatasetParams,
    hash_key: str,
    opted_out: set[str],
    source_partitions: list[str],
    draft: Draft,
) -> Release:
    """The next regression suite from the window's candidates and the previous version's cases,
    written into `draft`. `candidates` come without their texts (`suite_candidates`): `texts` adds
    them to the shortlisted ones (`case_texts`), so only those are read."""
    kept = candidates[~candidates["user_id"].isin(opted_out)]
    kept = texts(shortlist(kept[kept["confidence"] >= params.min_case_confidence], params))
    kept["user_hash"] = pseudonymize(kept["user_id"], hash_key)
    scrubbed, pii = scrub_frame(kept, ["prompt", "input", "output", "reference_output", "evidence"], json_columns=("input",))
    dropped_users = set(pseudonymize(pd.Series(sorted(opted_out), dtype="string"), hash_key).dropna())
    cases, stats = merge_suite(previous, build_cases(scrubbed), params, dropped_users)
    draft.write(CASES_FILE, exports.jsonl(cases))
    draft.write("tests.jsonl", exports.jsonl(exports.promptfoo_tests(cases)))
    draft.write("langfuse_items.jsonl", exports.jsonl(exports.langfuse_items(cases)))
    draft.write("openai_evals.jsonl", exports.jsonl(exports.openai_evals(cases)))
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
    return Release(content_hash=combined_hash([draft.digest(CASES_FILE)]), manifest=manifest, preview=preview, pii_found=pii)



def preference_release(
    traces: Table,
    signals: Table,
    labels: Table,
    suite_prompts: list[str],
    params: DatasetParams,
    hash_key: str,
    opted_out: set[str],
    source_partitions: list[str],
    draft: Draft,
) -> Release:
    """DPO pairs and KTO examples of the window, split, decontaminated against the suite, scrubbed,
    written into `draft`.

    The window's traces, signals and labels are read as needed: the DPO pairs are planned from the
    signals and labels (no texts), then built, scrubbed and written DPO_CHUNK_PAIRS at a time, in
    pair id order, each chunk with the texts of its own traces; the KTO set (nearly every trace) is
    built, scrubbed and written one trace day at a time (a trace's example belongs to its label's
    day), by example id within each day. Memory is bounded by the window's plan, a chunk's or a
    day's texts."""
    opted = pd.Series(sorted(opted_out), dtype="string")
    dropped = traces.read(columns=["trace_id"], rows_where=("user_id", opted))["trace_id"] if opted_out else opted
    window_labels = _read_by_day(labels, LABEL_COLUMNS, dropped, plan_labels)
    prompts = last_per_trace(traces.read(columns=["trace_id", "prompt"], rows_where=("trace_id", window_labels["trace_id"])))
    plan, gates = pair_plan(_read_by_day(signals, SIGNAL_COLUMNS, dropped, plan_signals), window_labels, prompts, params)
    del prompts, window_labels
    finish = _Finishing(suite_prompts, params, hash_key)
    dpo = _write_dpo(traces, plan, finish, draft)
    gates["identical_texts"] = dpo["identical_texts"]
    del plan
    kto = _write_kto(traces, labels, dropped, finish, draft)
    manifest = {
        "code_version": code_version(),
        "source_partitions": source_partitions,
        "row_counts": {
            "dpo_pairs": dpo["pairs"],
            "per_pair_source": dict(dpo["per_pair_source"].most_common()),
            "kto_examples": kto["examples"],
            "kto_desirable": kto["desirable"],
            "per_split": {"dpo": {k: v for k, v in dpo["per_split"].items() if v}, "kto": {k: v for k, v in kto["per_split"].items() if v}},
        },
        "schema": {
            "dpo_standard_*.jsonl": ["prompt", "chosen", "rejected"],
            "dpo_conversational_*.jsonl": ["prompt", "chosen", "rejected"],
            "openai_preference_*.jsonl": ["input", "preferred_output", "non_preferred_output"],
            "kto_*.jsonl": ["prompt", "completion", "label"],
            "dpo.parquet": dpo["columns"],
            "kto.parquet": KTO_SCHEMA.names,
        },
        "quality_gates_dropped": gates,
        "decontamination": {"near_duplicate_threshold": params.near_duplicate_threshold, "dpo_pairs_removed": dpo["removed"], "kto_examples_removed": kto["removed"], "suite_prompts": len(suite_prompts)},
        "privacy": {"opted_out_users": len(opted_out), "pii_replaced": dict(finish.pii)},
    }
    digest = combined_hash(draft.digest(name) for name in sorted(draft.files) if name.endswith(".jsonl"))
    return Release(content_hash=digest, manifest=manifest, preview=dpo["preview"], pii_found=finish.pii)


@dataclass
class _Finishing:
    """What the DPO and KTO writers do to each part before writing it: scrub it (a text is scanned
    once per release: the pairs' texts are mostly KTO texts too), then decontaminate, pseudonymize
    and split it; with the findings so far."""

    suite_prompts: list[str]
    params: DatasetParams
    hash_key: str
    pii: Counter = field(default_factory=Counter)
    scanned: dict[str, tuple[str, Counter]] = field(default_factory=dict)

    def scrubbed(self, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """The builder's own frame with `columns` scrubbed (in place)."""
        (frame,), found = scrub_frames([(frame, columns)], json_columns=("input",), in_place=True, known=self.scanned)
        self.pii.update(found)
        return frame

    def decontaminated_and_split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        return _decontaminated_and_split(frame, self.suite_prompts, self.params, self.hash_key)

    def scrubbed_prompts(self, prompts: pd.Series) -> pd.Series:
        """Distinct raw prompts scrubbed, their findings not counted yet (`count_prompt_findings`
        counts them once per published example)."""
        (scrubbed,), _ = scrub_frames([(pd.DataFrame({"prompt": prompts}), ["prompt"])], known=self.scanned)
        return scrubbed["prompt"]

    def count_prompt_findings(self, raw: pd.Series, scrubbed: pd.Series, at: np.ndarray) -> None:
        """Count the findings of the distinct `raw` prompts (`scrubbed` by `scrubbed_prompts`) once
        for each example at positions `at`."""
        changed = np.flatnonzero(pc.not_equal(large_text(raw), large_text(scrubbed)).to_numpy(zero_copy_only=False))
        uses = np.bincount(at, minlength=len(raw))[changed]
        for text, n in zip(large_text(raw).take(pa.array(changed, type=pa.int64())).to_pylist(), uses.tolist(), strict=True):
            for kind, count in self.scanned[text][1].items():
                self.pii[kind] += count * n


DPO_CHUNK_PAIRS = 200_000  # pairs whose texts are read, scrubbed and written at once


def _write_dpo(traces: Table, plan: pd.DataFrame, finish: _Finishing, draft: Draft) -> dict:
    """Build, `finish` and write the planned DPO pairs (`dpo.parquet` and the JSONL formats of each
    split) DPO_CHUNK_PAIRS at a time, in pair id order, each chunk with the texts of its own traces;
    return the counts, the Parquet columns and a preview."""
    counts = {"pairs": 0, "removed": 0, "identical_texts": 0, "per_pair_source": Counter(), "per_split": dict.fromkeys(SPLITS, 0), "columns": [], "preview": None}
    formats = {"dpo_standard": exports.dpo_standard, "dpo_conversational": exports.dpo_conversational, "openai_preference": exports.openai_preference}
    with ExitStack() as files:
        jsonl = {(name, split): files.enter_context(draft.open(f"{name}_{split}.jsonl")) for split in SPLITS for name in formats}
        parquet_file = files.enter_context(draft.open("dpo.parquet"))
        parquet = None
        for chunk in _chunks_by_pair_id(plan, DPO_CHUNK_PAIRS):
            texts = last_per_trace(traces.read(columns=TRACE_TEXT_COLUMNS, rows_where=("trace_id", plan_trace_ids(chunk))))
            pairs, identical = pairs_of_plan(chunk, texts)
            del texts
            pairs = with_messages(finish.scrubbed(pairs, ["prompt", "input", "chosen", "rejected"]))  # the KTO formats take the prompt as text; its Parquet keeps `input`
            pairs, removed = finish.decontaminated_and_split(pairs)
            counts["pairs"] += len(pairs)
            counts["removed"] += removed
            counts["identical_texts"] += identical
            counts["per_pair_source"].update(pairs["source"].value_counts().to_dict())
            for split, n in pairs["split"].value_counts().items():
                counts["per_split"][split] += int(n)
            for split in SPLITS:
                # Only the columns the exports write: a split of a set with every column is gigabytes.
                p = pairs.loc[(pairs["split"] == split).to_numpy(), ["prompt", "messages", "chosen", "rejected"]]
                for name, rows in formats.items():
                    jsonl[name, split].write(exports.jsonl(rows(p)))
            table = pa.Table.from_pandas(pairs.reset_index(drop=True), preserve_index=False, schema=parquet.schema if parquet else None)
            if parquet is None:  # the first chunk's schema is every chunk's
                parquet = pq.ParquetWriter(parquet_file, table.schema)
                files.callback(parquet.close)  # before its file is closed
                counts["columns"] = list(pairs.columns)
            first = pairs[PREVIEW_COLUMNS].head(PREVIEW_PAIRS)
            counts["preview"] = first if counts["preview"] is None else pd.concat([counts["preview"], first], ignore_index=True).head(PREVIEW_PAIRS)
            parquet.write_table(table)
            del pairs, table
    return counts


PREVIEW_PAIRS = 8
PREVIEW_COLUMNS = ["pair_id", "source", "split", "prompt", "chosen", "rejected"]


def _chunks_by_pair_id(plan: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    """The plan in order of pair id, about `size` pairs at a time (the repeats of a pair id in one
    chunk, where `pairs_of_plan` drops them); an empty plan is one empty chunk."""
    plan = plan.iloc[sort_order(plan, ["pair_id"])].reset_index(drop=True)
    ids = plan["pair_id"].to_numpy()
    start = 0
    while True:
        end = min(start + size, len(plan))
        while 0 < end < len(plan) and ids[end] == ids[end - 1]:
            end += 1
        yield plan.iloc[start:end]
        if end >= len(plan):
            return
        start = end


def _write_kto(traces: Table, labels: Table, dropped: pd.Series, finish: _Finishing, draft: Draft) -> dict:
    """Build, `finish` and write the KTO set a trace day at a time (`kto.parquet`, one row group per
    day, and `kto_<split>.jsonl`), without the `dropped` traces; return the counts."""
    counts = {"examples": 0, "desirable": 0, "removed": 0, "per_split": dict.fromkeys(SPLITS, 0)}
    with ExitStack() as files:
        parquet = pq.ParquetWriter(files.enter_context(draft.open("kto.parquet")), KTO_SCHEMA)
        jsonl = {split: files.enter_context(draft.open(f"kto_{split}.jsonl")) for split in SPLITS}
        for day in traces.partitions:
            day_labels = _without(labels.read(partitions=[day], columns=["trace_id", "label"]), dropped)  # what the examples read
            day_labels = day_labels[is_in(day_labels["label"], ["positive", "negative"])]
            if day_labels.empty:
                continue
            day_traces = traces.read(partitions=[day], columns=TRACE_TEXT_COLUMNS)  # nearly every trace is labelled: no row filter
            selected, hashes, removed = _with_clean_prompts(kto_rows(day_traces, day_labels), finish)
            examples = kto_examples_of(selected, consumed=day_traces)
            del day_traces
            examples = finish.scrubbed(examples, ["input", "completion"])  # the prompts are scrubbed already
            examples = _pseudonymized_and_split(examples, finish.hash_key, finish.params.test_percent, hashes, selected.distinct_prompts()[1])
            counts["removed"] += removed
            counts["examples"] += len(examples)
            counts["desirable"] += int(examples["label"].sum())
            for split, n in examples["split"].value_counts().items():
                counts["per_split"][split] += int(n)
            if examples.empty:
                continue
            for split in SPLITS:
                exports.kto_jsonl_into(jsonl[split], examples, split)
            parquet.write_table(pa.Table.from_pandas(examples[KTO_SCHEMA.names].astype({"label": bool}), schema=KTO_SCHEMA, preserve_index=False))
            del examples
            pa.default_memory_pool().release_unused()
        parquet.close()
    return counts


def _with_clean_prompts(selected: KtoRows, finish: _Finishing) -> tuple[KtoRows, pd.Series, int]:
    """The selected examples with their prompts scrubbed, without those whose scrubbed prompt is
    `contaminated`; the `prompt_hashes` of their distinct prompts; how many examples that removes.
    Decided on the distinct prompts before `kto_examples_of` takes the texts: the day's examples
    are taken once (dropping rows after the take copies ~1.3 GB again at 1M traces), and their
    prompts are neither scanned nor hashed row by row."""
    raw, at = selected.distinct_prompts()
    prompts = finish.scrubbed_prompts(raw)
    hashes = prompt_hashes(prompts)
    drop = contaminated(prompts, finish.suite_prompts, finish.params.near_duplicate_threshold, hashes)[at]
    selected = selected.with_prompts(prompts, at).without(drop)
    finish.count_prompt_findings(raw, prompts, selected.distinct_prompts()[1])
    return selected, hashes, int(drop.sum())


def _decontaminated_and_split(frame: pd.DataFrame, suite_prompts: list[str], params: DatasetParams, hash_key: str) -> tuple[pd.DataFrame, int]:
    """The builder's own frame without the rows whose prompt is a suite case or a near-duplicate of
    one (compared scrubbed with scrubbed, as the suite's prompts are; each distinct prompt once),
    with pseudonymous user ids and the split of its prompt; and how many rows were removed."""
    prompts = frame["prompt"].drop_duplicates().reset_index(drop=True)
    hashes = prompt_hashes(prompts)
    overlap = is_in(frame["prompt"], prompts[contaminated(prompts, suite_prompts, params.near_duplicate_threshold, hashes)])
    frame = _consumed_without(frame, overlap)
    return _pseudonymized_and_split(frame, hash_key, params.test_percent, hashes, positions(frame["prompt"], prompts)), int(overlap.sum())


def _read_by_day(table: Table, columns: list[str], dropped: pd.Series, keep: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """The rows `keep` selects of `table`'s `columns`, without the `dropped` traces, read a day at a time."""
    frames = [keep(_without(table.read(partitions=[day], columns=columns), dropped)) for day in table.partitions]
    return pd.concat(frames, ignore_index=True) if frames else table.read(columns=columns)


def _without(frame: pd.DataFrame, trace_ids: pd.Series) -> pd.DataFrame:
    """The rows of `frame` whose trace is not among `trace_ids`."""
    return frame[~is_in(frame["trace_id"], trace_ids)] if len(trace_ids) else frame


def _pseudonymized_and_split(frame: pd.DataFrame, hash_key: str, test_percent: int, hashes: pd.Series, at: np.ndarray) -> pd.DataFrame:
    """The builder's own frame with pseudonymous user ids and the split of its prompt, from the
    `prompt_hashes` of the distinct prompts and each row's position `at` among them (each split
    once per distinct prompt)."""
    frame["user_id"] = pseudonymize(frame["user_id"], hash_key)
    frame["split"] = split_of_hashes(hashes, test_percent).to_numpy()[at]
    return frame


def _consumed_without(frame: pd.DataFrame, drop: np.ndarray) -> pd.DataFrame:
    """`frame` without the rows where `drop` is set, built column by column while `frame` gives up
    each column it has copied (the builder's own frame, consumed: a take of every column at once
    holds a DPO chunk's texts twice)."""
    if not drop.any():
        return frame
    rows = np.flatnonzero(~drop)
    kept = {}
    for column in list(frame.columns):
        kept[column] = frame[column].take(rows).reset_index(drop=True)
        del frame[column]
    return pd.DataFrame(kept)
