"""Which negative prompt groups feed the regression suite and which the preference data.

Both want the same negatives: the suite as hard cases, the preference data as rejected answers
and undesirable examples. If the suite took every negative prompt, decontamination would strip
the preference data of all of them. So each prompt group goes to one side: the suite takes every
new case of a mode while the mode holds fewer than `suite_min_cases_per_mode` cases, and after
that only the cases whose group falls in the suite's seeded `suite_share_percent`; the other
groups stay with the preference data, and decontamination removes only true near-duplicates.

A prompt group is the prompt's question: its last sentence ending in "?" (users put context and
instructions around it), normalized; a prompt without one is its own group. The same question
asked with another preamble lands on the same side.
"""

from __future__ import annotations

import hashlib

from feedback_loop.lib.text import last_question


def prompt_group(prompt: str) -> str:
    """The normalized question of a prompt (its last sentence ending in "?"), else the whole prompt."""
    text = last_question(prompt or "") or prompt or ""
    return " ".join(text.lower().split())


def to_suite(prompt: str, seed: int, share_percent: int) -> bool:
    """Whether the prompt's group is in the suite's seeded share (deterministic, by group)."""
    digest = hashlib.sha256(f"{seed}|{prompt_group(prompt)}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < share_percent
