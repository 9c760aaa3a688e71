"""High-precision evidence for an error mode, strongest first: reason tag, comment, edit, response.

Each function returns, per negative trace, the mode its evidence points to (or NA) and a short
description of the evidence. `assign.py` takes the strongest one available.
"""

from __future__ import annotations

import json
import re
import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.error_modes.refusal import refusal_evidence
from feedback_loop.lib.parallel import in_chunks, in_processes
from feedback_loop.lib.text import lowered, lowered_words, matches

REASON_TO_MODE = {
    "not_factual": "hallucination",
    "formatting": "format",
    "refusal": "refusal",
    "too_long": "length",
    "too_short": "length",
    "incomplete": "length",
    "harmful": "other",
}

COMMENT_LEXICON: dict[str, str] = {
    "hallucination": r"\b(?:wrong|incorrect|not true|untrue|false|inaccurate|not correct|doesn't exist|does not exist|made up|making things up|hallucinat\w*|fake|fabricat\w*|no such|factually|check your facts|not a real|misinformation|error in the facts)\b",
    "format": r"\b(?:format\w*|json|table|bullet\w*|markdown|parse|parsing|indent\w*|syntax|code block|not valid|invalid|list of|numbered|structure)\b",
    "refusal": r"\b(?:refus\w*|won't you|wouldn't you|why won't|why can't|why cant|censor\w*|just answer|answer the question|harmless question|not allowed to say|decline\w*|preach\w*|lecture)\b",
    "length": r"\b(?:too long|too short|verbose|concise|brief\w*|shorter|longer|wordy|rambl\w*|tl;?dr|get to the point|more detail|too much text|incomplete|cut off)\b",
    "other": r"\b(?:irrelevant|off[- ]topic|not what i asked|doesn't answer|does not answer|didn't answer|wrong language|in english|spanish|french|german|unrelated|nonsense|makes no sense)\b",
}
# Listed in the order ties are broken: a comment that says "wrong format" is about format.
COMMENT_ORDER = ("format", "refusal", "length", "other", "hallucination")

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}")
BULLET_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}", re.MULTILINE)
FENCE = re.compile(r"```")
WORDS_LIMIT = re.compile(r"\b(?:in|at most|under|no more than|maximum of|max|within|less than|fewer than)\s+(\d{1,4})\s+words\b")
BULLET_COUNT = re.compile(r"\b(?:exactly\s+)?(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:bullet|bullet points|points|items|bullets)\b")
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
BRIEF = r"\b(?:briefly|in one sentence|in a sentence|one[- ]line|short answer|be concise|concisely|in a few words|tl;?dr|keep it short)\b"
DETAILED = r"\b(?:in detail|detailed|elaborate|thorough\w*|comprehensive|step[- ]by[- ]step|at least \d+ words)\b"
ASKS_JSON = r"\bjson\b"
ASKS_TABLE = r"\b(?:markdown table|a table|as a table|in a table|table of)\b"
WORD = re.compile(r"[^\W\d_]+")
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are was of to in that it for with you this what how can not but have be".split()),
    "es": frozenset("el la los las que es de en por para una un con no se su del al lo como pero muy".split()),
    "fr": frozenset("le la les des est et que une un pour dans pas ce qui sur avec au du sont mais vous".split()),
    "de": frozenset("der die das und ist nicht ein eine zu mit den dem sich auf für von ich sie es auch".split()),
    "it": frozenset("il lo la gli che di non per una un con del della sono come ma anche questo".split()),
    "pt": frozenset("os as que de não para uma um com do da em por mas se mais como".split()),
}
FUNCTION_VOCABULARY = pa.array(sorted(set().union(*FUNCTION_WORDS.values())))
# word x language: whether the word is one of the language's function words (a word may be several's)
FUNCTION_WORD_OF = np.array([[word in FUNCTION_WORDS[name] for name in FUNCTION_WORDS] for word in FUNCTION_VOCABULARY.to_pylist()], dtype=float)
MIN_LANGUAGE_HITS = 4
MIN_LANGUAGE_SHARE = 0.15
ASKS_CODE = r"\b(?:write|give me|show me|implement)\b[^.?!]{0,40}\b(?:function|code|script|class|snippet|program|query)\b"


def reason_tag_mode(reason_tags: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The mode of the first reason tag that maps to one (`other` tags say nothing specific)."""
    modes = pd.Series(pd.NA, index=reason_tags.index, dtype="string")
    evidence = pd.Series(pd.NA, index=reason_tags.index, dtype="string")
    tags = reason_tags.fillna("").str.split(",")
    for tag, mode in REASON_TO_MODE.items():
        has = tags.map(lambda t, tag=tag: tag in t).astype(bool) & modes.isna()
        modes[has] = mode
        evidence[has] = f"reason tag '{tag}'"
    return modes, evidence


def comment_mode(comments: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The mode whose lexicon the user's comment matches."""
    text = lowered(comments)
    modes = pd.Series(pd.NA, index=comments.index, dtype="string")
    evidence = pd.Series(pd.NA, index=comments.index, dtype="string")
    for mode in COMMENT_ORDER:
        hit = matches(text, COMMENT_LEXICON[mode]) & modes.isna().to_numpy()
        modes[hit] = mode
        evidence[hit] = "comment: " + comments[hit].str.extract(EVIDENCE_QUOTE, expand=False)
    return modes, evidence


# The first 60 characters of a comment and the rest of the token they end in: a secret or an id is
# quoted whole or not at all, so the scrubber that later runs over the evidence sees all of it.
EVIDENCE_QUOTE = r"(?s)^(.{0,60}\S*)"


def edit_mode(outputs: pd.Series, edits: pd.Series) -> tuple[pd.Series, pd.Series]:
    """What the user's edit changed: structure (format), a large cut (length), facts (hallucination)."""
    modes = pd.Series(pd.NA, index=outputs.index, dtype="string")
    evidence = pd.Series(pd.NA, index=outputs.index, dtype="string")
    rows = edits.index[edits.notna().to_numpy()]
    texts = list(zip(outputs.reindex(rows).astype("string").fillna("").tolist(), edits[rows].astype(str).tolist(), strict=True))
    found = [(idx, f) for idx, f in zip(rows, in_processes(_edit_evidence_of, texts, PARALLEL_MIN_EDITS), strict=True) if f]
    if found:
        modes[[idx for idx, _ in found]] = [f[0] for _, f in found]
        evidence[[idx for idx, _ in found]] = [f[1] for _, f in found]
    return modes, evidence


PARALLEL_MIN_EDITS = 5_000  # below this, starting worker processes costs more than it saves


def _edit_evidence_of(texts: tuple[str, str]) -> tuple[str, str] | None:
    return _edit_evidence(*texts)


def _edit_evidence(output: str, edit: str) -> tuple[str, str] | None:
    if _structure(output) != _structure(edit):
        return "format", f"edit changed structure {_structure(output)} -> {_structure(edit)}"
    ratio = len(edit) / max(len(output), 1)
    if ratio < 0.5 and len(output) > 200 and _kept_share(edit, output) >= 0.8:
        return "length", f"edit cut the answer to {ratio:.0%} of its length, keeping its words"
    if 0.5 <= ratio <= 2.0:
        numbers_out, numbers_edit = set(NUMBER.findall(output)), set(NUMBER.findall(edit))
        if numbers_out - numbers_edit and numbers_edit - numbers_out:
            return "hallucination", f"edit replaced numbers {sorted(numbers_out - numbers_edit)[:3]} -> {sorted(numbers_edit - numbers_out)[:3]}"
        names_out, names_edit = set(PROPER.findall(output)), set(PROPER.findall(edit))
        if names_out - names_edit and names_edit - names_out:
            return "hallucination", f"edit replaced names {sorted(names_out - names_edit)[:3]} -> {sorted(names_edit - names_out)[:3]}"
    if ratio > 3.0 and len(output) < 300:
        return "length", "edit expanded a short answer"
    return None


def _kept_share(edit: str, output: str) -> float:
    """Share of the edit's words that come from the output (a cut keeps them, a rewrite does not)."""
    edit_words = re.findall(r"\w+", edit.lower())
    output_words = set(re.findall(r"\w+", output.lower()))
    return sum(w in output_words for w in edit_words) / max(len(edit_words), 1)


def _structure(text: str) -> str:
    """The coarse structure of a text: json, code, table, list or prose."""
    if _parses_as_json(text):
        return "json"
    if FENCE.search(text):
        return "code"
    if TABLE_RULE.search(text):
        return "table"
    if len(BULLET_LINE.findall(text)) >= 2:
        return "list"
    return "prose"


def _parses_as_json(text: str) -> bool:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    if not stripped.startswith(("{", "[")):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def response_mode(prompts: pd.Series, outputs: pd.Series, peer_length_ratio: pd.Series, peer_length_outlier: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Evidence in the response itself, in order: a refusal; an answer in another language (other);
    a requested format it breaks; a requested length it misses; a far-out length for its peers."""
    modes = pd.Series(pd.NA, index=outputs.index, dtype="string")
    evidence = pd.Series(pd.NA, index=outputs.index, dtype="string")
    refusal = refusal_evidence(outputs)
    hit = refusal.notna()
    modes[hit] = "refusal"
    evidence[hit] = "response refuses (" + refusal[hit] + ")"
    prompt_text = lowered(prompts)
    asks = {
        name: matches(prompt_text, pattern)
        for name, pattern in (
            ("json", ASKS_JSON),
            ("table", ASKS_TABLE),
            ("code", ASKS_CODE),
            ("brief", BRIEF),
            ("detailed", DETAILED),
            ("bullets", BULLET_COUNT.pattern),
            ("words", WORDS_LIMIT.pattern),
        )
    }
    open_rows = np.flatnonzero(modes.isna().to_numpy())
    asked, answered = languages(prompts.iloc[open_rows]), languages(outputs.iloc[open_rows])
    mismatch = np.array([a is not None and b is not None and a != b for a, b in zip(asked, answered, strict=True)], dtype=bool)
    rows = outputs.index[open_rows[mismatch]]
    modes[rows] = "other"
    evidence[rows] = [f"response in '{b}', prompt in '{a}'" for a, b in zip(asked[mismatch], answered[mismatch], strict=True)]
    wants = asks["json"] | asks["table"] | asks["code"] | asks["bullets"] | asks["words"] | asks["brief"] | asks["detailed"]
    found_rows, found_modes, found_evidence = [], [], []
    prompt_values, output_values = prompts.tolist(), outputs.tolist()
    for pos in np.flatnonzero(modes.isna().to_numpy() & wants):
        found = _response_evidence(str(prompt_values[pos] or "").lower(), str(output_values[pos] or ""), {k: v[pos] for k, v in asks.items()})
        if found:
            found_rows.append(outputs.index[pos])
            found_modes.append(found[0])
            found_evidence.append(found[1])
    modes[found_rows] = found_modes
    evidence[found_rows] = found_evidence
    outlier = modes.isna() & peer_length_outlier.fillna(False).astype(bool)
    modes[outlier] = "length"
    evidence[outlier] = "response length a far outlier for its model and prompt version (" + peer_length_ratio[outlier].round(1).astype("string") + "x the median)"
    return modes, evidence


def languages(texts: pd.Series) -> np.ndarray:
    """The language whose function words each text uses most, when it clearly uses one (else None).

    Column-wise: function words are counted with Arrow, per text, in slices on a thread per core."""
    return in_chunks(texts, _languages)


def _languages(texts: pd.Series) -> np.ndarray:
    owner, words = lowered_words(texts, string.punctuation + "\u00bf\u00a1")
    is_word = pc.greater(pc.utf8_length(words), 1).to_numpy(zero_copy_only=False)
    n = len(texts)
    total = np.bincount(owner[is_word], minlength=n)
    names = list(FUNCTION_WORDS)
    found = pc.index_in(words, value_set=FUNCTION_VOCABULARY).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(~np.isnan(found.astype(float)))  # one hash lookup per word, for every language at once
    owners, word_rows = owner[at], found[at].astype(int)
    hits = np.stack([np.bincount(owners, weights=FUNCTION_WORD_OF[word_rows, k], minlength=n) for k in range(len(names))], axis=1) if n else np.zeros((0, len(names)))
    ordered = np.sort(hits, axis=1)
    best, second = (ordered[:, -1], ordered[:, -2]) if n else (np.zeros(0), np.zeros(0))
    clear = (best >= MIN_LANGUAGE_HITS) & (best >= MIN_LANGUAGE_SHARE * total) & (best >= 1.5 * second)
    return np.where(clear, np.array(names, dtype=object)[hits.argmax(axis=1)] if n else np.array([], dtype=object), None)


def _response_evidence(prompt: str, output: str, asks: dict[str, bool]) -> tuple[str, str] | None:
    if asks["json"] and not _parses_as_json(output):
        return "format", "prompt asks for JSON, response does not parse"
    if asks["table"] and not TABLE_RULE.search(output):
        return "format", "prompt asks for a table, response has none"
    if asks["code"] and not (FENCE.search(output) or re.search(r"^\s*(?:def|class|function|import|select|const|let|var)\b", output, re.MULTILINE | re.IGNORECASE)):
        return "format", "prompt asks for code, response has none"
    if asks["bullets"]:
        match = BULLET_COUNT.search(prompt)
        wanted = int(NUMBER_WORDS.get(match.group(1), match.group(1))) if match else None
        got = len(BULLET_LINE.findall(output))
        if wanted and got != wanted:
            return "format", f"prompt asks for {wanted} bullet points, response has {got}"
    words = len(output.split())
    if asks["words"]:
        limit = int(WORDS_LIMIT.search(prompt).group(1))
        if words > 1.5 * limit:
            return "length", f"prompt asks for at most {limit} words, response has {words}"
    if asks["brief"] and words > 80:
        return "length", f"prompt asks for a brief answer, response has {words} words"
    if asks["detailed"] and words < 25:
        return "length", f"prompt asks for detail, response has {words} words"
    return None
