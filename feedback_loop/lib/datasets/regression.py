"""The regression suite: hard cases for the next prompt or model, grouped by error mode.

Cumulative: a new version is the previous version's cases plus at most `max_new_cases_per_mode`
of the window's new hard cases per mode (negative traces, and responses the user regenerated away
from), where
- new cases are taken stratified: round-robin over (model, prompt version), each stratum in order
  of priority (a user reference first, then the mode's confidence, then the older trace);
- a case's id is the hash of its normalized prompt, so the same prompt is the same case;
- a new case whose prompt is a near-duplicate (MinHash LSH) of a kept case collapses into it;
  among new near-duplicates the one with a user reference, then the highest confidence, wins;
- each mode keeps at most `max_cases_per_mode` cases; past that the oldest (by source date)
  are evicted first, so the suite follows what users hit lately.
Each case carries assertions derived from its mode and its lineage back to the trace.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pandas as pd

from feedback_loop.lib.columns import is_in
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.datasets.allocation import to_suite
from feedback_loop.lib.datasets.near_duplicates import PromptIndex
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.signals import normalize_prompt
from feedback_loop.lib.tables import Table
from feedback_loop.lib.text import sha256_hex

# What a prompt asks for, read into the suite's assertions.
WORDS_LIMIT = re.compile(r"\b(?:in|at most|under|no more than|maximum of|max|within|less than|fewer than)\s+(\d{1,4})\s+words\b")
BULLET_COUNT = re.compile(r"\b(?:exactly\s+)?(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:bullet|bullet points|points|items|bullets)\b")
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
BRIEF = r"\b(?:briefly|in one sentence|in a sentence|one[- ]line|short answer|be concise|concisely|in a few words|tl;?dr|keep it short)\b"
DETAILED = r"\b(?:in detail|detailed|elaborate|thorough\w*|comprehensive|step[- ]by[- ]step|at least \d+ words)\b"
ASKS_JSON = r"\bjson\b"
ASKS_TABLE = r"\b(?:markdown table|a table|as a table|in a table|table of)\b"
ASKS_CODE = r"\b(?:write|give me|show me|implement)\b[^.?!]{0,40}\b(?:function|code|script|class|snippet|program|query)\b"
BRIEF_MAX_WORDS = 60
DETAILED_MIN_WORDS = 80


def prompt_hashes(prompts: pd.Series) -> pd.Series:
    """SHA-256 (first 16 hex digits) of each prompt, case- and white-space-insensitive. Each value
    is hashed as it comes: finding the distinct ones first costs more than hashing them all."""
    return sha256_hex(normalize_prompt(prompts), digits=16)


def case_id(prompt: str) -> str:
    """A case's id: the hash of its prompt, so the same prompt is the same case."""
    return "case-" + prompt_hashes(pd.Series([prompt], dtype="string")).iloc[0]


def messages_of(input_json: str | None, prompt: str | None) -> list[dict]:
    """The trace input as chat messages (a plain string input is one user message)."""
    if input_json:
        value = json.loads(input_json)
        if isinstance(value, list):
            return [{"role": str(m.get("role", "user")), "content": m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))} for m in value if isinstance(m, dict)]
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
    return [{"role": "user", "content": prompt or ""}]


def assertions_for(mode: str, prompt: str, reference: str | None, evidence: str) -> list[dict]:
    """What a better response must satisfy, in a neutral form the exporters translate."""
    text = prompt.lower()
    if mode == "refusal":
        return [{"type": "not_refusal"}]
    if mode == "format":
        found = []
        if re.search(ASKS_JSON, text):
            found.append({"type": "valid_json"})
        if re.search(ASKS_TABLE, text):
            found.append({"type": "has_table"})
        if re.search(ASKS_CODE, text):
            found.append({"type": "has_code"})
        bullets = BULLET_COUNT.search(text)
        if bullets:
            found.append({"type": "bullet_count", "value": int(NUMBER_WORDS.get(bullets.group(1), bullets.group(1)))})
        return found or [{"type": "rubric", "value": f"Follows the format the user asked for. Earlier failure: {evidence}"}]
    if mode == "length":
        limit = WORDS_LIMIT.search(text)
        if limit:
            return [{"type": "max_words", "value": int(limit.group(1))}]
        if re.search(BRIEF, text):
            return [{"type": "max_words", "value": BRIEF_MAX_WORDS}]
        if re.search(DETAILED, text):
            return [{"type": "min_words", "value": DETAILED_MIN_WORDS}]
        if reference:
            return [{"type": "max_words", "value": max(10, math.ceil(1.5 * len(reference.split())))}]
        return [{"type": "rubric", "value": f"Has a length appropriate to the request. Earlier failure: {evidence}"}]
    if mode == "hallucination":
        if reference:
            return [{"type": "reference_facts", "value": reference}]
        return [{"type": "rubric", "value": f"States only true facts. Earlier failure: {evidence}"}]
    return [{"type": "rubric", "value": f"Answers the request. Earlier failure: {evidence}"}]


def build_cases(candidates: pd.DataFrame) -> list[dict]:
    """Cases from candidate rows (trace_id, span_id, partition_date, model, prompt_version, input,
    prompt, output, reference_output, mode, mode_id, confidence, evidence, user_hash)."""
    cases = []
    plain = candidates.astype(object).where(candidates.notna(), None)  # JSON has null, not pandas' NA
    ids = "case-" + prompt_hashes(candidates["prompt"].astype("string").fillna(""))
    for row, identifier in zip(plain.itertuples(index=False), ids, strict=True):
        reference = row.reference_output if isinstance(row.reference_output, str) and row.reference_output else None
        prompt = row.prompt if isinstance(row.prompt, str) else ""
        cases.append(
            {
                "case_id": identifier,
                "input": row.input if isinstance(row.input, list) else messages_of(row.input, prompt),
                "prompt": prompt,
                "output": row.output if isinstance(row.output, str) else "",
                "reference_output": reference,
                "error_mode": row.mode,
                "error_mode_id": row.mode_id,
                "confidence": float(row.confidence),
                "evidence": row.evidence,
                "assertions": assertions_for(row.mode, prompt, reference, str(row.evidence)),
                "lineage": {
                    "source_trace_id": row.trace_id,
                    "source_span_id": row.span_id,
                    "source_date": row.partition_date,
                    "model": row.model,
                    "prompt_version": row.prompt_version,
                    "user_hash": row.user_hash,
                },
            }
        )
    return cases


def _priority(case: dict) -> tuple:
    return (case["reference_output"] is None, -case["confidence"], case["lineage"]["source_date"], case["lineage"]["source_trace_id"])


def stratified(cases: list[dict]) -> list[dict]:
    """Round-robin over (mode, model, prompt version) strata, each in priority order."""
    seen: dict[tuple, int] = {}
    ranked = []
    for case in sorted(cases, key=_priority):
        stratum = (case["error_mode"], case["lineage"]["model"] or "", case["lineage"]["prompt_version"] or "")
        ranked.append((seen.get(stratum, 0), case))
        seen[stratum] = seen.get(stratum, 0) + 1
    return [case for _, case in sorted(ranked, key=lambda rc: (rc[0], _priority(rc[1])))]


def merge_suite(previous: list[dict], new: list[dict], params: DatasetParams, dropped_users: set[str], dropped_traces: set[str] = frozenset()) -> tuple[list[dict], dict]:
    """The next suite: previous cases (minus those of opted-out users, by their user hash or by
    their trace) + new ones, deduplicated and capped; a new case joins only if its mode is still
    short of cases or its prompt group is the suite's (`allocation.py`)."""
    kept = [c for c in previous if c["lineage"].get("user_hash") not in dropped_users and c["lineage"].get("source_trace_id") not in dropped_traces]
    stats = {"opted_out_removed": len(previous) - len(kept), "near_duplicates_collapsed": 0, "evicted": 0, "already_present": 0, "over_new_quota": 0, "left_to_preference_data": 0}
    per_mode = Counter(c["error_mode"] for c in kept)
    index = PromptIndex(params.near_duplicate_threshold)
    ids = set()
    for case in kept:
        index.add(case["case_id"], case["prompt"])
        ids.add(case["case_id"])
    added: dict[str, int] = {}
    for case in stratified(new):
        mode = case["error_mode"]
        if case["case_id"] in ids:
            stats["already_present"] += 1
            continue
        if per_mode[mode] >= params.suite_min_cases_per_mode and not to_suite(case["prompt"], params.allocation_seed, params.suite_share_percent):
            stats["left_to_preference_data"] += 1  # its prompt group belongs to the preference data
            continue
        if added.get(mode, 0) >= params.max_new_cases_per_mode:
            stats["over_new_quota"] += 1
            continue
        if index.near(case["prompt"]):
            stats["near_duplicates_collapsed"] += 1
            continue
        index.add(case["case_id"], case["prompt"])
        ids.add(case["case_id"])
        kept.append(case)
        added[mode] = added.get(mode, 0) + 1
        per_mode[mode] += 1
    suite = []
    for mode in sorted({c["error_mode"] for c in kept}):
        in_mode = sorted((c for c in kept if c["error_mode"] == mode), key=lambda c: (c["lineage"]["source_date"], c["case_id"]), reverse=True)
        suite.extend(in_mode[: params.max_cases_per_mode])
        stats["evicted"] += max(0, len(in_mode) - params.max_cases_per_mode)
    return sorted(suite, key=lambda c: (c["error_mode"], c["case_id"])), stats


def shortlist(candidates: pd.DataFrame, params: DatasetParams, factor: int = 20) -> pd.DataFrame:
    """The candidates that can still be chosen: per (mode, model, prompt version), the best
    `factor x max_new_cases_per_mode` by priority. Bounds the work (text reads, PII scrubbing, LSH)
    per run."""
    if candidates.empty:
        return candidates
    ranked = candidates.assign(_no_ref=~candidates["has_reference"].astype(bool), _neg_conf=-candidates["confidence"])
    ranked = ranked.sort_values(["_no_ref", "_neg_conf", "partition_date", "trace_id"], kind="stable")
    strata = [ranked["mode"], ranked["model"].fillna(""), ranked["prompt_version"].fillna("")]
    keep = ranked.groupby(strata, sort=False).cumcount() < factor * params.max_new_cases_per_mode
    return ranked[keep].drop(columns=["_no_ref", "_neg_conf"])


REGENERATED_CONFIDENCE = 0.6


CASE_SOURCE_COLUMNS = ["trace_id", "span_id", "user_id", "model", "prompt_version", "partition_date"]
CASE_TEXT_COLUMNS = ["input", "prompt", "output", "reference_output"]
TRACE_CASE_TEXT_COLUMNS = ["trace_id", "input", "prompt", "output"]  # what `case_texts` takes of a trace; of a negative, with `edit_text`


def regenerated_trace_ids(signals: Table) -> pd.Series:
    """The traces whose response the user regenerated, from `signals` (trace_id, regenerated_by)
    read a day at a time."""
    ids = []
    for key in signals.partitions:
        day = signals.read([key], ["trace_id", "regenerated_by"])
        ids.append(day.loc[day["regenerated_by"].notna().to_numpy(), "trace_id"])
    return pd.concat(ids, ignore_index=True) if ids else pd.Series(dtype="string")


def suite_candidates(error_modes: pd.DataFrame, negatives: pd.DataFrame, regenerated: pd.DataFrame) -> pd.DataFrame:
    """Hard cases of the window, without their texts: negative traces with their mode, and responses
    regenerated away from that were not labelled negative (mode `other`).

    `negatives` and `regenerated` (one row per span, in the window's order) have
    CASE_SOURCE_COLUMNS; `negatives` also `edit_text_length`, null when the user made no edit.
    `has_reference`: the user's edit is the case's reference output. `case_texts` adds the texts.
    """
    negative = error_modes[["trace_id", "mode", "mode_id", "confidence", "evidence"]].merge(negatives[CASE_SOURCE_COLUMNS + ["edit_text_length"]], on="trace_id", how="inner")
    negative = negative.assign(has_reference=negative.pop("edit_text_length").notna().to_numpy())
    regenerated = last_per_trace(regenerated)
    regenerated = regenerated.loc[~is_in(regenerated["trace_id"], negative["trace_id"]), CASE_SOURCE_COLUMNS].assign(
        mode="other", mode_id="EM-999", confidence=REGENERATED_CONFIDENCE, evidence="regenerated away", has_reference=False
    )
    return pd.concat([negative, regenerated], ignore_index=True)


def case_texts(candidates: pd.DataFrame, negative_texts: pd.DataFrame, trace_texts: pd.DataFrame) -> pd.DataFrame:
    """`candidates` with CASE_TEXT_COLUMNS: a negative's from `negative_texts` (TRACE_CASE_TEXT_COLUMNS
    and `edit_text`, the reference output), a regenerated response's from its trace's last span in
    `trace_texts` (TRACE_CASE_TEXT_COLUMNS; no reference)."""
    negative = negative_texts.rename(columns={"edit_text": "reference_output"})
    trace_texts = last_per_trace(trace_texts)
    regenerated = trace_texts[~is_in(trace_texts["trace_id"], negative["trace_id"])].assign(reference_output=None)
    texts = pd.concat([negative[["trace_id", *CASE_TEXT_COLUMNS]], regenerated[["trace_id", *CASE_TEXT_COLUMNS]]], ignore_index=True)
    return candidates.merge(texts, on="trace_id", how="left", validate="one_to_one")


def read_case_texts(shortlisted: pd.DataFrame, negatives: Table, traces: Table) -> pd.DataFrame:
    """`case_texts` of the shortlisted candidates, reading the texts of those traces only."""
    ids = shortlisted["trace_id"]
    negative_texts = negatives.read(columns=[*TRACE_CASE_TEXT_COLUMNS, "edit_text"], rows_where=("trace_id", ids))
    trace_texts = traces.read(columns=TRACE_CASE_TEXT_COLUMNS, rows_where=("trace_id", ids[~is_in(ids, negative_texts["trace_id"])]))
    return case_texts(shortlisted, negative_texts, trace_texts)
