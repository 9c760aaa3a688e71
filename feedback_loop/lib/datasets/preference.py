"""Preference data from feedback: DPO pairs and KTO examples.

DPO pairs, each with its source:
- `edit` / `correction`: chosen = the user's final text, rejected = the model's output. Dropped:
  `trivial` edits, and edits whose normalized distance is below `min_edit_distance` (too small to
  teach anything) or above `max_edit_distance` (a different answer, not a correction of this one);
- `regenerate`: rejected = a response the user regenerated away from, chosen = the chain's final
  response when it was accepted (not regenerated again, not thumbed down);
- `thumbs`: a thumbed-down and a thumbed-up response to the same normalized prompt in the window.
KTO examples: every response labelled positive (label true) or negative (label false).

Every example is split into train or test by a hash of its normalized prompt, so one prompt never
lands on both sides, and examples whose prompt is a near-duplicate of a regression-suite case are
removed (decontamination).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.datasets.near_duplicates import near_duplicate_of
from feedback_loop.lib.datasets.regression import last_per_trace, messages_of, prompt_hashes
from feedback_loop.lib.params import DatasetParams
from feedback_loop.lib.signals import normalize_prompt
from feedback_loop.lib.text import is_in, positions

PAIR_COLUMNS = ["pair_id", "source", "prompt", "input", "chosen", "rejected", "chosen_trace_id", "rejected_trace_id", "user_id", "model", "source_date"]
SIGNAL_COLUMNS = ["trace_id", "edit_type", "edit_text", "edit_distance", "edit_class", "chain_id", "chain_length", "regenerated_by", "chain_accepted"]  # what the pairs read
KTO_COLUMNS = ["example_id", "prompt", "input", "completion", "label", "trace_id", "user_id", "model", "source_date"]


def dpo_pairs(traces: pd.DataFrame, signals: pd.DataFrame, labels: pd.DataFrame, params: DatasetParams) -> tuple[pd.DataFrame, dict]:
    """All DPO pairs of the window, and how many candidates each quality gate dropped."""
    t = last_per_trace(traces).set_index("trace_id")
    s = signals.set_index("trace_id")
    frames, dropped = [], {}

    edits = s[s["edit_text"].notna()]
    gates = {
        "trivial_edit": edits["edit_class"] == "trivial",
        "edit_too_small": (edits["edit_class"] != "trivial") & (edits["edit_distance"] < params.min_edit_distance),
        "edit_too_total": edits["edit_distance"] > params.max_edit_distance,
    }
    keep = ~(gates["trivial_edit"] | gates["edit_too_small"] | gates["edit_too_total"])
    dropped |= {name: int(mask.sum()) for name, mask in gates.items()}
    good = edits[keep]
    frames.append(_pairs(t, good.index, good.index, good["edit_type"].fillna("edit"), chosen_text=good["edit_text"]))

    chains = s[s["chain_length"] > 1]
    finals = chains[chains["regenerated_by"].isna() & chains["chain_accepted"].fillna(False)]
    final_of_chain = pd.Series(finals.index, index=finals["chain_id"])
    rejected = chains[chains["regenerated_by"].notna() & chains["chain_id"].isin(final_of_chain.index)]
    frames.append(_pairs(t, rejected.index, final_of_chain.reindex(rejected["chain_id"]).to_numpy(), "regenerate"))

    frames.append(_thumbs_pairs(t, labels))
    pairs = pd.concat(frames, ignore_index=True)
    same = pairs["chosen"] == pairs["rejected"]
    dropped["identical_texts"] = int(same.sum())
    pairs = pairs[~same].drop_duplicates("pair_id").sort_values("pair_id", ignore_index=True)
    return pairs, dropped


def _thumbs_pairs(t: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Thumbed-down vs thumbed-up responses to the same normalized prompt, each down paired once."""
    evidence = labels.set_index("trace_id")["evidence"].reindex(t.index).fillna("")
    up = evidence.str.contains("thumbs_up") & ~evidence.str.contains("thumbs_down")
    down = evidence.str.contains("thumbs_down") & ~evidence.str.contains("thumbs_up")
    up, down = up.to_numpy(), down.to_numpy()
    involved = up | down
    key = normalize_prompt(t["prompt"].iloc[np.flatnonzero(involved)]).to_numpy()
    ups = pd.DataFrame({"trace_id": t.index[up], "key": key[up[involved]]}).sort_values(["key", "trace_id"])
    downs = pd.DataFrame({"trace_id": t.index[down], "key": key[down[involved]]}).sort_values(["key", "trace_id"])
    if ups.empty or downs.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    downs["rank"] = downs.groupby("key").cumcount()
    ups["rank"] = ups.groupby("key").cumcount()
    ups["count"] = ups.groupby("key")["trace_id"].transform("size")
    counts = ups.drop_duplicates("key").set_index("key")["count"]
    downs = downs[downs["key"].isin(counts.index)]
    downs["rank"] = downs["rank"] % counts.reindex(downs["key"]).to_numpy()
    matched = downs.merge(ups[["key", "rank", "trace_id"]], on=["key", "rank"], suffixes=("_down", "_up"))
    return _pairs(t, matched["trace_id_down"].to_numpy(), matched["trace_id_up"].to_numpy(), "thumbs")


def _pairs(t: pd.DataFrame, rejected_ids, chosen_ids, source, chosen_text: pd.Series | None = None) -> pd.DataFrame:
    rejected_ids = pd.Index(rejected_ids)
    if not len(rejected_ids):
        return pd.DataFrame(columns=PAIR_COLUMNS)
    rows = t.loc[rejected_ids]
    chosen = chosen_text.to_numpy() if chosen_text is not None else t.loc[pd.Index(chosen_ids), "output"].to_numpy()
    source = pd.Series(source, index=rejected_ids).astype(str).to_numpy() if not isinstance(source, str) else np.full(len(rejected_ids), source)
    chosen_key = [str(c) for c in chosen_ids]
    return pd.DataFrame(
        {
            "pair_id": [
                "pair-" + hashlib.sha256(f"{r}|{c}|{s}".encode()).hexdigest()[:16] for r, c, s in zip(rejected_ids, chosen_key, source, strict=True)
            ],
            "source": source,
            "prompt": rows["prompt"].fillna("").to_numpy(),
            "input": rows["input"].to_numpy(),
            "chosen": chosen,
            "rejected": rows["output"].fillna("").to_numpy(),
            "chosen_trace_id": chosen_key,
            "rejected_trace_id": rejected_ids.to_numpy(),
            "user_id": rows["user_id"].to_numpy(),
            "model": rows["model"].to_numpy(),
            "source_date": rows["partition_date"].to_numpy(),
        }
    )


def kto_examples(traces: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Every positive or negative response as an unpaired example."""
    labelled = labels[is_in(labels["label"], ["positive", "negative"])]
    t = last_per_trace(traces)
    at = positions(labelled["trace_id"], t["trace_id"])
    found = np.flatnonzero(at >= 0)
    found = found[pc.sort_indices(pa.array(labelled["trace_id"].iloc[found].astype("string"))).to_numpy()]  # by example_id
    rows = t.iloc[at[found]].reset_index(drop=True)
    rows["label"] = labelled["label"].to_numpy()[found]
    return pd.DataFrame(
        {
            "example_id": "kto-" + rows["trace_id"].astype(str),
            "prompt": rows["prompt"].fillna(""),
            "input": rows["input"],
            "completion": rows["output"].fillna(""),
            "label": (rows["label"] == "positive").to_numpy(),
            "trace_id": rows["trace_id"],
            "user_id": rows["user_id"],
            "model": rows["model"],
            "source_date": rows["partition_date"],
        },
        columns=KTO_COLUMNS,
    )


def with_messages(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace the JSON `input` column by `messages`, the prompt as chat messages."""
    messages = [messages_of(i if isinstance(i, str) else None, p) for i, p in zip(frame["input"], frame["prompt"].fillna(""), strict=True)]
    return frame.drop(columns="input").assign(messages=messages)


def split_of(prompts: pd.Series, test_percent: int) -> pd.Series:
    """`test` or `train`, by a hash of the normalized prompt (deterministic, prompt-disjoint)."""
    return split_of_hashes(prompt_hashes(prompts), test_percent)


def split_of_hashes(hashes: pd.Series, test_percent: int) -> pd.Series:
    """`split_of` from the prompts' `prompt_hashes`: the first 8 hex digits, modulo 100."""
    digits = np.frombuffer("".join(h[:8] for h in hashes).encode("ascii"), dtype=np.uint8).reshape(-1, 8).astype(np.int64)
    values = np.where(digits >= ord("a"), digits - ord("a") + 10, digits - ord("0")) @ (16 ** np.arange(7, -1, -1, dtype=np.int64))
    return pd.Series(np.where(values % 100 < test_percent, "test", "train"), index=hashes.index)


def contaminated(prompts: pd.Series, suite_prompts: list[str], threshold: float, hashes: pd.Series | None = None) -> np.ndarray:
    """Whether each prompt is the same as, or a near-duplicate of, a regression-suite prompt.
    `hashes`: the prompts' `prompt_hashes`, when the caller has them."""
    if prompts.empty or not suite_prompts:
        return np.zeros(len(prompts), dtype=bool)
    exact = prompt_hashes(pd.Series(suite_prompts, dtype="string"))
    same = is_in(prompt_hashes(prompts) if hashes is None else hashes, exact)
    return same | near_duplicate_of(prompts, suite_prompts, threshold)
