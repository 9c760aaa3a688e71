"""Serializers for the consumers of the datasets: promptfoo, Langfuse, OpenAI evals, TRL, OpenAI fine-tuning."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import duckdb
import orjson
import pandas as pd
import pyarrow as pa

# A promptfoo `javascript` assertion: the response does not open with a refusal (cf. lib/error_modes/refusal.py).
JS_NOT_REFUSAL = (
    "!/^(?:i'm |i am )?(?:so |very |really )?(?:sorry|i apologi[sz]e)[^.!?]{0,80}\\bbut\\b|"
    "\\b(?:i|we)(?:'m| am)?\\s*(?:cannot|can't|won't|will not|am unable to|'m unable to|am not able to|'m not able to|must decline)"
    "\\b[^.!?]{0,60}?\\b(?:help|assist|provide|answer|fulfil|fulfill|comply|share|give|do that|do this)|"
    "\\bas an ai\\b[^.!?]{0,80}?\\b(?:cannot|can't|unable|not able)\\b/i.test(output.slice(0, 300).replace(/\\u2019/g, \"'\"))"
)
JS_BULLETS = "(output.match(/^\\s*(?:[-*\\u2022]|\\d+[.)])\\s+/gm) || []).length === {n}"
JS_MAX_WORDS = "output.trim().split(/\\s+/).filter(Boolean).length <= {n}"
JS_MIN_WORDS = "output.trim().split(/\\s+/).filter(Boolean).length >= {n}"


def jsonl(rows: Iterable[dict]) -> bytes:
    """JSON lines, keys sorted, UTF-8 as is (orjson: compact separators). Rows may come one at a
    time (a generator): only the file's bytes are held, not every row as Python objects."""
    out = io.BytesIO()
    for row in rows:
        out.write(orjson.dumps(row, option=ORJSON_OPTIONS))
    return out.getvalue()


ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def promptfoo_assert(assertion: dict) -> dict:
    kind, value = assertion["type"], assertion.get("value")
    if kind == "not_refusal":
        return {"type": "javascript", "value": JS_NOT_REFUSAL}
    if kind == "valid_json":
        return {"type": "is-json"}
    if kind == "has_table":
        return {"type": "regex", "value": "\\|\\s*:?-{3,}"}
    if kind == "has_code":
        return {"type": "contains", "value": "```"}
    if kind == "bullet_count":
        return {"type": "javascript", "value": JS_BULLETS.format(n=int(value))}
    if kind == "max_words":
        return {"type": "javascript", "value": JS_MAX_WORDS.format(n=int(value))}
    if kind == "min_words":
        return {"type": "javascript", "value": JS_MIN_WORDS.format(n=int(value))}
    if kind == "reference_facts":
        return {"type": "factuality", "value": value}
    return {"type": "llm-rubric", "value": value}


def promptfoo_tests(cases: list[dict]) -> list[dict]:
    """One promptfoo test case per suite case; the prompt is `{{prompt}}` (or `{{messages}}` as chat JSON)."""
    return [
        {
            "description": f"[{c['error_mode']}] {c['prompt'][:80]}",
            "vars": {"prompt": c["prompt"], "messages": json.dumps(c["input"], ensure_ascii=False, sort_keys=True)},
            "assert": [promptfoo_assert(a) for a in c["assertions"]],
            "metadata": {"case_id": c["case_id"], "error_mode": c["error_mode"], "error_mode_id": c["error_mode_id"], **c["lineage"]},
        }
        for c in cases
    ]


def langfuse_items(cases: list[dict]) -> list[dict]:
    """Langfuse dataset items, linked back to their source trace and observation; the case id is
    the item's id, so publishing a new version updates an item instead of adding one."""
    return [
        {
            "id": c["case_id"],
            "input": {"messages": c["input"]},
            "expectedOutput": c["reference_output"],
            "metadata": {"case_id": c["case_id"], "error_mode": c["error_mode"], "assertions": c["assertions"], "bad_output": c["output"], **c["lineage"]},
            "sourceTraceId": c["lineage"]["source_trace_id"],
            "sourceObservationId": c["lineage"]["source_span_id"],
        }
        for c in cases
    ]


def openai_evals(cases: list[dict]) -> list[dict]:
    """OpenAI evals samples; only cases with a user reference have an `ideal` answer."""
    return [{"input": c["input"], "ideal": c["reference_output"]} for c in cases if c["reference_output"]]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def dpo_standard(pairs: pd.DataFrame) -> Iterator[dict]:
    """TRL standard preference format: prompt, chosen, rejected as text."""
    return ({"prompt": p, "chosen": c, "rejected": r} for p, c, r in _columns(pairs, "prompt", "chosen", "rejected"))


def dpo_conversational(pairs: pd.DataFrame) -> Iterator[dict]:
    """TRL conversational preference format: the prompt as messages, each completion one assistant turn."""
    return ({"prompt": m, "chosen": assistant(c), "rejected": assistant(r)} for m, c, r in _columns(pairs, "messages", "chosen", "rejected"))


def openai_preference(pairs: pd.DataFrame) -> Iterator[dict]:
    """OpenAI preference fine-tuning (DPO) format."""
    return ({"input": {"messages": m}, "preferred_output": assistant(c), "non_preferred_output": assistant(r)} for m, c, r in _columns(pairs, "messages", "chosen", "rejected"))


def kto(examples: pd.DataFrame) -> list[dict]:
    """TRL unpaired preference (KTO) format."""
    return [{"prompt": p, "completion": c, "label": bool(label)} for p, c, label in _columns(examples, "prompt", "completion", "label")]


def _columns(frame: pd.DataFrame, *names: str, rows: int = 10_000) -> Iterator[tuple]:
    """Rows of the named columns as tuples (reads only those columns), converted to Python
    objects `rows` at a time."""
    for start in range(0, len(frame), rows):
        part = frame.iloc[start : start + rows]
        yield from zip(*(part[name].tolist() for name in names), strict=True)


def kto_jsonl_into(out: BinaryIO, examples: pd.DataFrame, split: str | None = None) -> None:
    """Write `kto(examples)` (of one `split`, when given) as JSON lines into `out`, by DuckDB from
    Arrow (the KTO set is the large one: DuckDB filters it without a copy in pandas)."""
    if examples.empty:
        return
    columns = ["completion", "label", "prompt"] + (["split"] if split is not None else [])
    table = pa.Table.from_pandas(examples[columns].astype({"label": bool}), preserve_index=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/kto.jsonl"
        con = duckdb.connect()
        con.register("kto", table)
        where = "WHERE split = ?" if split is not None else ""
        con.execute(f"COPY (SELECT completion, label, prompt FROM kto {where}) TO '{path}' (FORMAT json)", [split] if split is not None else [])
        con.close()
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, out)
