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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedback_loop.lib.columns import is_in, positions, repeats, rows_kept, sort_order
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.datasets import exports
from feedback_loop.lib.datasets.opt_out import OptOut
from feedback_loop.lib.datasets.preference import (
    KTO_COLUMNS,
    PREFERENCE_LABEL_COLUMNS,
    PREFERENCE_SIGNAL_COLUMNS,
    PREFERENCE_TRACE_COLUMNS,
    contaminated,
    kto_example_parts,
    pair_plan,
    pairs_of_plan,
    plan_labels,
    plan_signals,
    plan_trace_ids,
    split_of,
    trivial_additions,
    with_messages,
)
from feedback_loop.lib.datasets.privacy import Scrubber, key_id, pseudonymize, scrub_frame
from feedback_loop.lib.datasets.published import CASES_FILE
from feedback_loop.lib.datasets.regression import build_cases, merge_suite, shortlist
from feedback_loop.lib.datasets.store import Draft, combined_hash
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.tables import Table

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
    opt_out: OptOut,
    source_partitions: list[str],
    draft: Draft,
    previous_key_id: str | None = None,
) -> Release:
    """The next regression suite from the window's candidates and the previous version's cases,
    written into `draft`. `candidates` come without their texts (`suite_candidates`): `texts` adds
    them to the shortlisted ones (`case_texts`), so only those are read; the `opt_out` traces, and
    the earlier cases of its users, leave.
    `previous_key_id`: the `key_id` the previous version was built under; when it is another key,
    the previous cases with a user are dropped (their pseudonyms cannot be checked)."""
    out = is_in(candidates["trace_id"], opt_out.traces)
    kept = candidates[~out]
    kept = texts(shortlist(kept[kept["confidence"] >= params.min_case_confidence], params))
    kept["user_hash"] = pseudonymize(kept["user_id"], hash_key)
    scrubbed, pii = scrub_frame(kept, ["prompt", "input", "output", "reference_output", "evidence"], json_columns=("input",))
    dropped_users = set(pseudonymize(pd.Series(sorted(opt_out.users), dtype="string"), hash_key).dropna())
    # Pseudonyms made under another key cannot be checked against the opt-out list: fail closed.
    unverifiable = [c for c in previous if c["lineage"].get("user_hash")] if previous_key_id not in (None, key_id(hash_key)) else []
    previous = [c for c in previous if c not in unverifiable]
    cases, stats = merge_suite(previous, build_cases(scrubbed), params, dropped_users, set(opt_out.traces))
    stats["dropped_after_key_change"] = len(unverifiable)
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
        "build": {**stats, "candidates": len(candidates), "opted_out_rows_dropped": int(out.sum()), "pii_replaced": dict(pii)},
        "privacy": {"user_hash_key_id": key_id(hash_key)},
    }
    preview = pd.DataFrame([{"case_id": c["case_id"], "error_mode": c["error_mode"], "prompt": c["prompt"], "assertions": json.dumps(c["assertions"])} for c in cases[:10]])
    return Release(content_hash=combined_hash(draft.digest(name) for name in sorted(draft.files)), manifest=manifest, preview=preview, pii_found=pii)


def preference_release(
    traces: Table,
    signals: Table,
    labels: Table,
    suite_prompts: list[str],
    params: DatasetParams,
    hash_key: str,
    opt_out: OptOut,
    source_partitions: list[str],
    draft: Draft,
) -> Release:
    """DPO pairs and KTO examples of the window, written into `draft`; the `opt_out` traces take no part.

    Plan, then part by part: build, scrub, decontaminate, split, write. The DPO pairs are planned
    from the signals and labels (no texts), then built PART_ROWS at a time in pair id order, each
    part with the texts of its own traces; the KTO set (nearly every trace) is built from one trace
    day's texts at a time (a trace's example belongs to its label's day), PART_ROWS examples at a
    time by example id. Memory is bounded by the window's plan, a day's texts and a part's. Opted-out
    users' traces never enter a part."""
    dropped = opt_out.traces.astype("string")
    plan, gates = _pair_plan(traces, signals, labels, dropped, params)
    finish = _Finishing(suite_prompts, params, hash_key)
    removed = Counter()
    with _PreferenceWriter(draft) as writer:
        for chunk in _chunks_by_pair_id(plan, PART_ROWS):
            pairs, identical = pairs_of_plan(chunk, last_per_trace(traces.read(columns=PREFERENCE_TRACE_COLUMNS, rows_where=("trace_id", plan_trace_ids(chunk)))))
            gates["identical_or_empty_texts"] += identical
            trivial = trivial_additions(pairs, params.trivial_addition_max_chars)
            gates["trivial_addition"] += int(trivial.sum())
            pairs = pairs[~trivial].reset_index(drop=True)
            pairs, contaminated = finish(pairs, ["prompt", "input", "chosen", "rejected"])
            removed["pairs"] += contaminated
            writer.write_pairs(with_messages(pairs))
        superseded = _superseded_labels(labels)
        for day in traces.partitions:
            day_labels = _without(labels.read(partitions=[day], columns=["trace_id", "label"]), pd.concat([dropped, superseded.get(day, _NO_IDS)]))
            for examples in kto_example_parts(traces.read(partitions=[day], columns=PREFERENCE_TRACE_COLUMNS), day_labels, PART_ROWS):
                examples, contaminated = finish(examples, ["prompt", "input", "completion"])
                removed["examples"] += contaminated
                writer.write_examples(examples)
    dpo, kto = writer.pairs, writer.examples
    for name, info in list(draft.files.items()):
        if name.endswith(".jsonl") and not info["bytes"]:
            draft.discard(name)  # a split without rows: a zero-byte JSONL file makes loaders fail
    undesirable = kto.rows - writer.kto_desirable
    share = undesirable / kto.rows if kto.rows else 0.0
    kto_balance = {"desirable": writer.kto_desirable, "undesirable": undesirable, "undesirable_share": round(share, 4), "min_undesirable_share": params.kto_min_undesirable_share}
    kto_held_back = share < params.kto_min_undesirable_share
    if kto_held_back:
        # Trained on, an almost all-desirable set teaches nothing about bad answers: keep it out of the release.
        for name in KTO_FILES:
            draft.discard(name)
        kto_balance["held_back"] = f"{undesirable} of {kto.rows} examples undesirable ({share:.1%}), below the floor of {params.kto_min_undesirable_share:.0%}"
        kto = _SplitCounts()
    manifest = {
        "code_version": code_version(),
        "source_partitions": source_partitions,
        "row_counts": {
            "dpo_pairs": dpo.rows,
            "per_pair_source": dict(writer.per_pair_source.most_common()),
            "kto_examples": kto.rows,
            "kto_desirable": 0 if kto_held_back else writer.kto_desirable,
            "per_split": {"dpo": dpo.per_split(), "kto": kto.per_split()},
        },
        "schema": {
            "dpo_standard_*.jsonl": ["prompt", "chosen", "rejected"],
            "dpo_conversational_*.jsonl": ["prompt", "chosen", "rejected"],
            "openai_preference_*.jsonl": ["input", "preferred_output", "non_preferred_output"],
            "dpo.parquet": DPO_PARQUET_COLUMNS,
            **({"kto_*.jsonl": ["prompt", "completion", "label"], "kto.parquet": KTO_SCHEMA.names} if not kto_held_back else {}),
        },
        "quality_gates_dropped": gates,
        "kto_balance": kto_balance,
        "decontamination": {
            "near_duplicate_threshold": params.near_duplicate_threshold,
            "dpo_pairs_removed": removed["pairs"],
            "kto_examples_removed": removed["examples"],
            "suite_prompts": len(suite_prompts),
        },
        "privacy": {"opted_out_users": len(opt_out.users), "pii_replaced": dict(finish.pii)},
    }
    digest = combined_hash(draft.digest(name) for name in sorted(draft.files))  # every file: a change may show in one format only
    return Release(content_hash=digest, manifest=manifest, preview=writer.preview, pii_found=finish.pii)


def _pair_plan(traces: Table, signals: Table, labels: Table, dropped: pd.Series, params: DatasetParams) -> tuple[pd.DataFrame, dict]:
    """The window's `pair_plan` and its quality gates, from the rows of the signals and labels it
    reads (read a day at a time) and the prompts of the thumbed traces."""
    window_labels = _read_by_day(labels, PREFERENCE_LABEL_COLUMNS, dropped, plan_labels)
    prompts = last_per_trace(traces.read(columns=["trace_id", "prompt"], rows_where=("trace_id", window_labels["trace_id"])))
    plan, gates = pair_plan(_read_by_day(signals, PREFERENCE_SIGNAL_COLUMNS, dropped, plan_signals), window_labels, prompts, params)
    plan = plan[~(is_in(plan["rejected_trace_id"], dropped) | is_in(plan["chosen_trace_id"], dropped))].reset_index(drop=True)  # neither side may be kept out
    return plan, {**gates, "identical_or_empty_texts": 0, "trivial_addition": 0}


@dataclass
class _Finishing:
    """What every part of a release goes through between being built and being written: its text
    `columns` scrubbed (a text is scanned once per release: the pairs' texts are mostly KTO texts
    too), the rows whose prompt is a suite case or a near-duplicate of one removed (compared
    scrubbed with scrubbed, as the suite's prompts are), pseudonymous user ids, and the split of
    its prompt. The findings are counted in the rows that remain: those published."""

    suite_prompts: list[str]
    params: DatasetParams
    hash_key: str
    scrubber: Scrubber = field(default_factory=Scrubber)
    pii: Counter = field(default_factory=Counter)

    def __call__(self, rows: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
        """The finished rows, and how many rows decontamination removed."""
        rows, findings = self.scrubber.scrubbed(rows, columns, json_columns=("input",))
        prompts = rows["prompt"].drop_duplicates().reset_index(drop=True)  # each decided once
        at = positions(rows["prompt"], prompts)
        keep = ~contaminated(prompts, self.suite_prompts, self.params.near_duplicate_threshold)[at]
        split = split_of(prompts, self.params.test_percent).to_numpy()[at[keep]]
        for row, found in findings.items():
            if keep[row]:
                self.pii.update(found)
        rows = rows if keep.all() else rows_kept(rows, keep).reset_index(drop=True)
        return rows.assign(user_id=pseudonymize(rows["user_id"], self.hash_key), split=split), int((~keep).sum())


PART_ROWS = 200_000  # pairs or examples built, scrubbed and written at once
KTO_FILES = ("kto.parquet", *(f"kto_{split}.jsonl" for split in SPLITS))
PREVIEW_PAIRS = 8
PREVIEW_COLUMNS = ["pair_id", "source", "split", "prompt", "chosen", "rejected"]
DPO_PARQUET_COLUMNS = ["pair_id", "source", "prompt", "chosen", "rejected", "chosen_trace_id", "rejected_trace_id", "user_id", "model", "source_date", "messages", "split"]
MESSAGE = pa.struct([("role", pa.large_string()), ("content", pa.large_string())])
# Typed up front: a release without pairs still has a dpo.parquet that loaders read (no null-typed columns).
DPO_SCHEMA = pa.schema([(name, pa.list_(MESSAGE) if name == "messages" else pa.large_string()) for name in DPO_PARQUET_COLUMNS])
DPO_FORMATS = {"dpo_standard": exports.dpo_standard, "dpo_conversational": exports.dpo_conversational, "openai_preference": exports.openai_preference}


@dataclass
class _SplitCounts:
    rows: int = 0
    splits: Counter = field(default_factory=Counter)

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        self.splits.update(frame["split"].value_counts().to_dict())

    def per_split(self) -> dict[str, int]:
        return {split: int(self.splits[split]) for split in SPLITS if self.splits[split]}


class _PreferenceWriter:
    """The release's files, open in its draft while the parts are written: `dpo.parquet` and the
    DPO formats of each split, `kto.parquet` (a row group per part) and `kto_<split>.jsonl`."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.pairs, self.examples = _SplitCounts(), _SplitCounts()
        self.per_pair_source: Counter = Counter()
        self.kto_desirable = 0
        self.preview: pd.DataFrame | None = None

    def __enter__(self) -> _PreferenceWriter:
        self.files = ExitStack()
        self.dpo_jsonl = {(name, split): self._open(f"{name}_{split}.jsonl") for split in SPLITS for name in DPO_FORMATS}
        self.dpo_parquet = pq.ParquetWriter(self._open("dpo.parquet"), DPO_SCHEMA)
        self.files.callback(self.dpo_parquet.close)
        self.kto_jsonl = {split: self._open(f"kto_{split}.jsonl") for split in SPLITS}
        self.kto_parquet = pq.ParquetWriter(self._open("kto.parquet"), KTO_SCHEMA)
        self.files.callback(self.kto_parquet.close)  # callbacks run first: each writer closes before its file
        return self

    def __exit__(self, *exc) -> None:
        self.files.__exit__(*exc)

    def _open(self, name: str):
        """A file of the draft, closed when the writer is."""
        return self.files.enter_context(self.draft.open(name))

    def write_pairs(self, pairs: pd.DataFrame) -> None:
        self.pairs.add(pairs)
        self.per_pair_source.update(pairs["source"].value_counts().to_dict())
        first = pairs[PREVIEW_COLUMNS].head(PREVIEW_PAIRS)
        self.preview = first if self.preview is None else pd.concat([self.preview, first], ignore_index=True).head(PREVIEW_PAIRS)
        if pairs.empty:
            return
        for split in SPLITS:
            rows = pairs.loc[(pairs["split"] == split).to_numpy(), ["prompt", "messages", "chosen", "rejected"]]  # what the formats write
            for name, rows_of in DPO_FORMATS.items():
                self.dpo_jsonl[name, split].write(exports.jsonl(rows_of(rows)))
        self.dpo_parquet.write_table(pa.Table.from_pandas(pairs[DPO_PARQUET_COLUMNS], preserve_index=False, schema=DPO_SCHEMA))

    def write_examples(self, examples: pd.DataFrame) -> None:
        self.examples.add(examples)
        self.kto_desirable += int(examples["label"].sum())
        if examples.empty:
            return
        for split in SPLITS:
            exports.kto_jsonl_into(self.kto_jsonl[split], examples, split)
        self.kto_parquet.write_table(pa.Table.from_pandas(examples[KTO_SCHEMA.names].astype({"label": bool}), schema=KTO_SCHEMA, preserve_index=False))


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


def _read_by_day(table: Table, columns: list[str], dropped: pd.Series, keep: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """The rows `keep` selects of `table`'s `columns`, without the `dropped` traces, read a day at a time."""
    frames = [keep(_without(table.read(partitions=[day], columns=columns), dropped)) for day in table.partitions]
    return pd.concat(frames, ignore_index=True) if frames else table.read(columns=columns)


_NO_IDS = pd.Series(dtype="string")


def _superseded_labels(labels: Table) -> dict[str, pd.Series]:
    """Per day, the traces whose label a later day of the window holds too (a trace whose spans
    straddle midnight, or one landed twice): its example comes from the last day only, so an
    example id is written once."""
    ids = labels.read(columns=["trace_id", "partition_date"])
    if ids.empty:
        return {}
    later = repeats(ids[["trace_id"]].iloc[::-1])[::-1]  # a later row has the same trace
    earlier = ids[later]
    return {day: rows["trace_id"] for day, rows in earlier.groupby("partition_date")}


def _without(frame: pd.DataFrame, trace_ids: pd.Series) -> pd.DataFrame:
    """The rows of `frame` whose trace is not among `trace_ids`."""
    return frame[~is_in(frame["trace_id"], trace_ids)] if len(trace_ids) else frame
