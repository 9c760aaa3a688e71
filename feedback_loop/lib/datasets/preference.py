"""Preference data from feedback: DPO pairs and KTO examples.

DPO pairs, each with its source:
- `edit` / `correction`: chosen = the user's final text, rejected = the model's output. Dropped:
  `trivial` edits, and edits whose normalized distance is below `min_edit_distance` (too small to
  teach anything) or above `max_edit_distance` (a different answer, not a correction of this one);
- `regenerate`: rejected = a response the user regenerated away from, chosen = the chain's final
  response when it was accepted (not regenerated again, not thumbed down);
- `thumbs`: a thumbed-down and a thumbed-up response to the same normalized prompt in the window.
Dropped too: pairs whose chosen text is the rejected one plus a trivial addition (" Thanks.").
KTO examples: every response labelled positive (label true) or negative (label false).

Every example is split into train or test by a hash of its normalized prompt, so one prompt never
lands on both sides, and examples whose prompt is a near-duplicate of a regression-suite case are
removed (decontamination).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from feedback_loop.lib.columns import is_in, large_text, positions, repeats, replaced, sort_order
from feedback_loop.lib.contract import last_per_trace
from feedback_loop.lib.datasets.near_duplicates import near_duplicate_of
from feedback_loop.lib.datasets.regression import messages_of, prompt_hashes
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.signals import normalize_prompt
from feedback_loop.lib.text import hash64

PAIR_COLUMNS = ["pair_id", "source", "prompt", "input", "chosen", "rejected", "chosen_trace_id", "rejected_trace_id", "user_id", "model", "source_date"]
# What the preference dataset reads of the signals, the labels and the traces.
PREFERENCE_SIGNAL_COLUMNS = ["trace_id", "edit_type", "edit_text", "edit_distance", "edit_class", "chain_id", "chain_length", "regenerated_by", "chain_accepted"]
PREFERENCE_LABEL_COLUMNS = ["trace_id", "label", "thumbs_up", "thumbs_down", "partition_date"]
PREFERENCE_TRACE_COLUMNS = ["trace_id", "prompt", "input", "output", "user_id", "model", "partition_date"]
KTO_COLUMNS = ["example_id", "prompt", "input", "completion", "label", "trace_id", "user_id", "model", "source_date"]
PLAN_COLUMNS = ["pair_id", "rejected_trace_id", "chosen_trace_id", "source", "chosen_text"]  # a pair before its texts


def dpo_pairs(traces: pd.DataFrame, signals: pd.DataFrame, labels: pd.DataFrame, params: DatasetParams) -> tuple[pd.DataFrame, dict]:
    """All DPO pairs of the window, and how many candidates each quality gate dropped."""
    t = last_per_trace(traces).reset_index(drop=True)
    plan, dropped = pair_plan(signals, labels, t, params)
    pairs, dropped["identical_or_empty_texts"] = pairs_of_plan(plan, t)
    trivial = trivial_additions(pairs, params.trivial_addition_max_chars)
    dropped["trivial_addition"] = int(trivial.sum())
    return pairs[~trivial].reset_index(drop=True), dropped


def trivial_additions(pairs: pd.DataFrame, max_chars: int) -> np.ndarray:
    """Pairs whose chosen text is the rejected one plus a little (" Thanks.", a signature), or the
    reverse, white space aside: they teach a model to add pleasantries, not to answer better."""
    chosen = [" ".join(str(text).split()) for text in pairs["chosen"].fillna("")]
    rejected = [" ".join(str(text).split()) for text in pairs["rejected"].fillna("")]
    return np.array([abs(len(c) - len(r)) <= max_chars and (r in c or c in r) for c, r in zip(chosen, rejected, strict=True)], dtype=bool)


def plan_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """The labels `pair_plan` reads: of the traces with a thumbs up or a thumbs down (not both), the
    candidates of thumbs pairs."""
    up, down = _thumbs(labels)
    return labels[up | down]


def plan_signals(signals: pd.DataFrame) -> pd.DataFrame:
    """The signals `pair_plan` reads: of the edited traces and of the traces in regenerate chains."""
    return signals[(signals["edit_text"].notna() | (signals["chain_length"] > 1)).to_numpy(dtype=bool)]


def pair_plan(signals: pd.DataFrame, labels: pd.DataFrame, prompts: pd.DataFrame, params: DatasetParams) -> tuple[pd.DataFrame, dict]:
    """The window's DPO pairs without their texts (`PLAN_COLUMNS`: the rejected trace, the chosen trace
    or the user's own text, the source), and how many candidates each quality gate dropped.
    `prompts`: `trace_id` and `prompt` (the last span's) of at least the traces of `plan_labels`
    (thumbed: the candidates of thumbs pairs)."""
    edits = signals[signals["edit_text"].notna().to_numpy()]
    gates = {
        "trivial_edit": edits["edit_class"] == "trivial",
        "edit_too_small": (edits["edit_class"] != "trivial") & (edits["edit_distance"] < params.min_edit_distance),
        "edit_too_total": edits["edit_distance"] > params.max_edit_distance,
    }
    keep = ~(gates["trivial_edit"] | gates["edit_too_small"] | gates["edit_too_total"])
    dropped = {name: int(mask.sum()) for name, mask in gates.items()}
    good = edits[keep.to_numpy()]
    frames = [_plan(good["trace_id"], good["trace_id"], good["edit_type"].fillna("edit"), chosen_text=good["edit_text"])]

    chains = signals[(signals["chain_length"] > 1).to_numpy()]
    finals = chains[(chains["regenerated_by"].isna() & chains["chain_accepted"].fillna(False)).to_numpy()]
    rejected = chains[chains["regenerated_by"].notna().to_numpy()]
    final_at = positions(rejected["chain_id"], finals["chain_id"])
    rejected, final_at = rejected[final_at >= 0], final_at[final_at >= 0]
    frames.append(_plan(rejected["trace_id"], finals["trace_id"].to_numpy()[final_at], "regenerate"))

    frames.append(_thumbs_plan(prompts, labels))
    plan = pd.concat(frames, ignore_index=True)
    return plan[~repeats(plan[["rejected_trace_id", "chosen_trace_id"]])].reset_index(drop=True), dropped  # one pair of two responses, from its first source


def plan_trace_ids(plan: pd.DataFrame) -> pd.Series:
    """The traces whose texts the planned pairs take."""
    chosen = plan["chosen_trace_id"][plan["chosen_text"].isna().to_numpy()]
    return pd.concat([plan["rejected_trace_id"], chosen], ignore_index=True).drop_duplicates()


def pairs_of_plan(plan: pd.DataFrame, t: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The planned pairs with their texts from `t` (one row per trace, at least the `plan_trace_ids`),
    by pair id, without repeats; and how many were dropped for identical chosen and rejected texts.
    Columns taken in Arrow, without a Python object per text."""
    if plan.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS), 0
    rows = t.iloc[_rows_of(t, plan["rejected_trace_id"])]
    given = plan["chosen_text"].notna().to_numpy()
    chosen = plan["chosen_text"].astype("string")
    if not given.all():
        outputs = t["output"].iloc[_rows_of(t, plan["chosen_trace_id"][~given])].astype("string")
        chosen = replaced(chosen, np.flatnonzero(~given), outputs) if given.any() else outputs.reset_index(drop=True)
    rejected_key, chosen_key, source = plan["rejected_trace_id"].tolist(), plan["chosen_trace_id"].tolist(), plan["source"].tolist()
    pairs = pd.DataFrame(
        {
            "pair_id": plan["pair_id"].tolist(),
            "source": source,
            "prompt": rows["prompt"].fillna("").array,
            "input": rows["input"].array,
            "chosen": chosen.array,
            "rejected": rows["output"].fillna("").array,
            "chosen_trace_id": chosen_key,
            "rejected_trace_id": rejected_key,
            "user_id": rows["user_id"].array,
            "model": rows["model"].array,
            "source_date": rows["partition_date"].array,
        }
    )
    # A pair needs both texts, and different ones; dropped pairs are counted with the identical ones.
    missing = (pairs["chosen"].fillna("") == "").to_numpy(dtype=bool) | (pairs["rejected"] == "").to_numpy(dtype=bool)
    same = (pairs["chosen"] == pairs["rejected"]).to_numpy(dtype=bool, na_value=False) | missing
    pairs = pairs[~same]
    pairs = pairs[~repeats(pairs[["pair_id"]])]
    return pairs.iloc[sort_order(pairs, ["pair_id"])].reset_index(drop=True), int(same.sum())


def _thumbs(labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Whether each trace has thumbs up only, and thumbs down only."""
    up = labels["thumbs_up"].to_numpy() > 0
    down = labels["thumbs_down"].to_numpy() > 0
    return up & ~down, down & ~up


def _thumbs_plan(prompts: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Thumbed-down vs thumbed-up responses to the same normalized prompt, each down paired once:
    the k-th down of a prompt (by trace id) with its (k mod #ups)-th up."""
    up_votes, down_votes = _thumbs(labels)
    up = is_in(prompts["trace_id"], labels["trace_id"][up_votes])
    down = is_in(prompts["trace_id"], labels["trace_id"][down_votes])
    involved = np.flatnonzero(up | down)
    codes = np.full(len(prompts), -1)
    codes[involved] = pd.factorize(normalize_prompt(prompts["prompt"].iloc[involved]), use_na_sentinel=False)[0]
    ups, downs = _by_prompt(prompts, codes, up), _by_prompt(prompts, codes, down)
    if ups.empty or downs.empty:
        return pd.DataFrame(columns=PLAN_COLUMNS)
    up_count = np.bincount(ups["code"], minlength=codes.max() + 1)
    downs = downs[up_count[downs["code"].to_numpy()] > 0]
    first_up = np.searchsorted(ups["code"].to_numpy(), np.arange(len(up_count)))
    code = downs["code"].to_numpy()
    partner = first_up[code] + _rank_within(code) % up_count[code]
    return _plan(downs["trace_id"], ups["trace_id"].to_numpy()[partner], "thumbs")


def _by_prompt(t: pd.DataFrame, codes: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """(prompt code, trace id) of the selected traces, sorted by both."""
    frame = pd.DataFrame({"code": codes[rows], "trace_id": t["trace_id"].to_numpy()[rows]})
    return frame.iloc[sort_order(frame, ["code", "trace_id"])].reset_index(drop=True)


def _rank_within(sorted_codes: np.ndarray) -> np.ndarray:
    """0, 1, 2, … within each run of equal codes."""
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return np.arange(len(sorted_codes)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_codes)]))


def _plan(rejected_ids, chosen_ids, source, chosen_text: pd.Series | None = None) -> pd.DataFrame:
    source = np.asarray(source.astype(str)) if not isinstance(source, str) else np.full(len(rejected_ids), source)
    rejected, chosen = [str(r) for r in rejected_ids], [str(c) for c in chosen_ids]
    return pd.DataFrame(
        {
            "pair_id": ["pair-" + hashlib.sha256(f"{r}|{c}|{s}".encode()).hexdigest()[:16] for r, c, s in zip(rejected, chosen, source, strict=True)],
            "rejected_trace_id": rejected,
            "chosen_trace_id": chosen,
            "source": source,
            "chosen_text": chosen_text.astype("string").array if chosen_text is not None else pd.array([pd.NA] * len(rejected_ids), dtype="string"),
        },
        columns=PLAN_COLUMNS,
    )


def _rows_of(t: pd.DataFrame, trace_ids) -> np.ndarray:
    """Positions of `trace_ids` in `t`; every id must be there (as `t.loc` would require)."""
    at = positions(trace_ids, t["trace_id"])
    if (at < 0).any():
        raise KeyError(f"trace ids not among the traces: {list(np.asarray(trace_ids)[at < 0][:5])}")
    return at


def kto_examples(traces: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Every positive or negative response among `traces` as an unpaired example, by example id."""
    return next(kto_example_parts(traces, labels, part_rows=max(len(labels), 1)))


def kto_example_parts(traces: pd.DataFrame, labels: pd.DataFrame, part_rows: int) -> Iterator[pd.DataFrame]:
    """`kto_examples` in parts of `part_rows` examples, in order (at least one part, maybe empty):
    only a part's texts are copied out of `traces` at a time."""
    labelled = labels[is_in(labels["label"], ["positive", "negative"])]
    responses = last_per_trace(traces)
    at = positions(labelled["trace_id"], responses["trace_id"])
    found = np.flatnonzero(at >= 0)
    found = found[sort_order(labelled.iloc[found], ["trace_id"])]  # by example id
    positive = labelled["label"].to_numpy()[found] == "positive"
    for start in range(0, max(len(found), 1), part_rows):
        rows = at[found[start : start + part_rows]]
        taken = {name: responses[name].take(rows).reset_index(drop=True) for name in PREFERENCE_TRACE_COLUMNS}
        yield pd.DataFrame(
            {
                "example_id": "kto-" + taken["trace_id"].astype(str),
                "prompt": taken["prompt"].fillna(""),
                "input": taken["input"],
                "completion": taken["output"].fillna(""),
                "label": positive[start : start + part_rows],
                "trace_id": taken["trace_id"],
                "user_id": taken["user_id"],
                "model": taken["model"],
                "source_date": taken["partition_date"],
            },
            columns=KTO_COLUMNS,
        )


def with_messages(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace the JSON `input` column by `messages`, the prompt as chat messages."""
    messages = [messages_of(i if isinstance(i, str) else None, p) for i, p in zip(frame["input"], frame["prompt"].fillna(""), strict=True)]
    return frame.drop(columns="input").assign(messages=messages)


def split_of(prompts: pd.Series, test_percent: int) -> pd.Series:
    """`test` or `train`, by a hash of the normalized prompt (deterministic, prompt-disjoint): the
    first 8 hex digits of its `prompt_hashes`, modulo 100."""
    buckets = np.array([int(digest[:8], 16) % 100 for digest in prompt_hashes(prompts)], dtype=np.int64)
    return pd.Series(np.where(buckets < test_percent, "test", "train"), index=prompts.index)


def suite_overlap(prompt_batches: Iterable[pd.Series], suite_prompts: list[str], threshold: float) -> tuple[int, int]:
    """How many distinct prompts of the batches are `contaminated` by the suite, and how many distinct
    prompts there are. A batch at a time (a release's files hold millions of prompts); a prompt
    already checked in an earlier batch, known by its 64-bit hash, is not checked again."""
    seen = np.array([], dtype=np.uint64)
    overlap = 0
    for batch in prompt_batches:
        distinct = pd.Series(pc.unique(large_text(batch)), dtype="string")
        keys = hash64(distinct)
        new = ~np.isin(keys, seen)
        overlap += int(contaminated(distinct[new].reset_index(drop=True), suite_prompts, threshold).sum())
        seen = np.union1d(seen, keys)
    return overlap, len(seen)


def contaminated(prompts: pd.Series, suite_prompts: list[str], threshold: float) -> np.ndarray:
    """Whether each prompt is the same as (normalized), or a near-duplicate of, a regression-suite prompt."""
    if prompts.empty or not suite_prompts:
        return np.zeros(len(prompts), dtype=bool)
    suite = pd.Series(suite_prompts, dtype="string")
    return is_in(normalize_prompt(prompts), normalize_prompt(suite)) | near_duplicate_of(prompts, suite_prompts, threshold)
