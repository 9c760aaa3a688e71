"""Records of several sources as one frame, where a key two sources both give is quarantined in
the later source instead of being taken as a duplicate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from feedback_loop.lib.columns import replaced
from feedback_loop.lib.landing import Kind

KEYS: dict[Kind, list[str]] = {"traces": ["trace_id", "span_id"], "feedback": ["event_id"]}


def combined(kind: Kind, pulled: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The sources' records in source order (`pulled` is ordered)."""
    frames = [f for f in pulled.values() if len(f)]
    if len(frames) <= 1:
        return frames[0] if frames else next(iter(pulled.values()))
    names = [name for name, f in pulled.items() if len(f)]
    out = pd.concat(frames, ignore_index=True)
    origin = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    key = out[KEYS[kind][0]].astype("string")
    if kind == "traces":
        key = key + "\x00" + out["span_id"].fillna(out["trace_id"]).astype("string")
    usable = out["_problem"].isna().to_numpy() & key.notna().to_numpy()
    first_origin = pd.Series(origin[usable], index=key[usable].to_numpy()).groupby(level=0).min()
    owner = first_origin.reindex(key.to_numpy()).to_numpy()
    clash = np.flatnonzero(usable & (owner != origin))
    if len(clash):
        what = " and ".join(KEYS[kind])
        reasons = [f"{what} also come from source '{names[int(owner[i])]}'" for i in clash]
        out["_problem"] = replaced(out["_problem"].astype("string"), clash, pd.Series(reasons, dtype="string"))
    return out
