"""Every tunable of the pipeline, as typed, immutable models with documented defaults.

The pure functions in `lib/` take these. The `FeedbackLoopSettings` resource composes their Dagster
config twins (`resources/settings.py`) so that one place (run config, or `defs/resources.py`)
changes them. See docs/configuration.md.
"""

import pydantic


class Params(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class IngestParams(Params):
    max_quarantine_share: float = 0.05  # the quarantine check fails above this share of a partition's records
    allow_empty_day: bool = False  # a day with no trace records fails the run unless this is set (a day with no traffic)
    pull_overlap_hours: float = 24.0  # a nightly pull from a store reaches this far back before its day, for records indexed late (at most the late-feedback window)


class LinkingParams(Params):
    session_max_gap_minutes: float = 360.0  # by_session_time: the trace must precede the event by at most this
    max_orphan_share: float = 0.05  # the orphan check fails above this share of the day's events


class SignalParams(Params):
    edit_minor_max: float = 0.2  # normalized edit distance up to this is `minor` (when not `trivial`)
    edit_major_max: float = 0.6  # up to this `major`; above it `rewrite`
    full_copy_min_share: float = 0.9  # a copy of at least this share of the output is a `full` copy
    abandon_idle_minutes: float = 30.0  # no follow-up for this long after the session's last response
    rephrase_min_similarity: float = 0.8  # next prompt at least this similar (partial ratio, not identical): rephrase


class LabelWeights(Params):
    """Evidence weights in [-1, 1]. Explicit evidence is averaged, implicit evidence summed and clipped."""

    thumbs_up: float = 1.0
    thumbs_down: float = -1.0
    correction: float = -1.0  # the user wrote the right answer: an explicit verdict
    comment_negative: float = -1.0  # a comment that complains, in any language read (lib/comments.py)
    comment_positive: float = 0.5  # a comment that praises: weaker, users thank politely for poor answers too
    rating_1_to_5: float = 1.0  # a rating r counts (r - 3) / 2 times this
    edit_addition: float = 0.1  # the answer kept whole, a line or a name added: the user used it
    edit_minor: float = -0.2
    edit_major: float = -0.5
    edit_rewrite: float = -0.7
    copy_full: float = 0.5
    copy_snippet: float = 0.25
    regenerated: float = -0.6
    rephrased: float = -0.4
    abandoned_explicit: float = -0.4
    abandoned_inferred: float = -0.15
    accepted_after_regenerate: float = 0.3
    explicit_share: float = 0.8  # with explicit evidence: score = share * explicit + (1 - share) * implicit
    positive_min_score: float = 0.2
    negative_max_score: float = -0.2


class ErrorModeParams(Params):
    seed: int = 0  # classifier and clustering are deterministic for a seed


class DatasetParams(Params):
    max_cases_per_mode: int = 200  # regression suite: past this, the oldest cases of a mode are evicted
    max_new_cases_per_mode: int = 50  # regression suite: new cases a version may add per mode (stratified)
    suite_min_cases_per_mode: int = 10  # until a mode holds this many cases, the suite takes its every new case
    suite_share_percent: int = 20  # after that, the share of prompt groups (seeded) the suite takes; the rest feed the preference data
    allocation_seed: int = 0  # seeds the split of prompt groups between the suite and the preference data
    trivial_addition_max_chars: int = 40  # a DPO pair whose chosen is its rejected plus at most this much (" Thanks.") is dropped
    kto_min_undesirable_share: float = 0.1  # a KTO set with a smaller share of undesirable examples is held back (DPO still published)
    near_duplicate_threshold: float = 0.8  # MinHash Jaccard of prompt word 3-grams: same case / contamination
    min_case_confidence: float = 0.5  # negatives with a less certain mode stay out of the suite
    min_edit_distance: float = 0.02  # DPO from edits: smaller edits teach nothing
    max_edit_distance: float = 0.9  # DPO from edits: larger ones replace the answer rather than correct it
    test_percent: int = 10  # preference split: share of prompts (by hash) in the test split
    max_shrink_share: float = 0.5  # a new version with more than this share fewer rows than LATEST's is held back
    shrink_check_min_rows: int = 50  # ... when LATEST has at least this many rows (small datasets swing)
