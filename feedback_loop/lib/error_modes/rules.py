"""Evidence for an error mode from each source: reason tag, comment, edit, and the response itself.

`reason_tag_mode`, `comment_mode` and `edit_mode` return, per negative trace, the mode their
evidence points to (or NA) and a short description; `response_votes` lists every finding of the
response with its strength. `assign.py` sums the votes.
"""

from __future__ import annotations

import difflib
import json
import re
import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedback_loop.lib.comments import MODE_ORDER, comment_modes
from feedback_loop.lib.error_modes.instructions import FENCE, TABLE_RULE, findings
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

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}")
BULLET_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are was of to in that it for with you this what how can not but have be".split()),
    "es": frozenset("el la los las que es de en por para una un con no se su del al lo como pero muy".split()),
    "fr": frozenset("le la les des est et que une un pour dans pas ce qui sur avec au du sont mais vous".split()),
    "de": frozenset("der die das und ist nicht ein eine zu mit den dem sich auf für von ich sie es auch".split()),
    "it": frozenset("il lo la gli che di non per una un con del della sono come ma anche questo".split()),
    "pt": frozenset("os as que de não para uma um com do da em por mas se mais como".split()),
    "nl": frozenset("de het een en is van dat niet ik je op te voor met zijn er maar ook wat".split()),
    "pl": frozenset("nie się jest to na że do jak ale co za tak czy już mi jestem".split()),
}
FUNCTION_VOCABULARY = pa.array(sorted(set().union(*FUNCTION_WORDS.values())))
# word x language: whether the word is one of the language's function words (a word may be several's)
FUNCTION_WORD_OF = np.array([[word in FUNCTION_WORDS[name] for name in FUNCTION_WORDS] for word in FUNCTION_VOCABULARY.to_pylist()], dtype=float)
MIN_LANGUAGE_HITS = 3
MIN_LANGUAGE_SHARE = 0.15


def reason_tag_mode(reason_tags: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The mode of the first reason tag that maps to one (`other` tags say nothing specific)."""
    modes = pd.Series(pd.NA, index=reason_tags.index, dtype="string")
    evidence = pd.Series(pd.NA, index=reason_tags.index, dtype="string")
    tags = reason_tags.astype("string").fillna("").str.split(",")
    for tag, mode in REASON_TO_MODE.items():
        has = tags.map(lambda t, tag=tag: tag in t).astype(bool) & modes.isna()
        modes[has] = mode
        evidence[has] = f"reason tag '{tag}'"
    return modes, evidence


def comment_mode(comments: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The mode whose cues the user's comment holds most of (ties: `MODE_ORDER`), in any language
    `comments.py` reads."""
    comments = comments.astype("string")
    counts = comment_modes(comments)
    best = counts.to_numpy().argmax(axis=1) if len(counts) else np.zeros(0, dtype=int)
    hit = counts.to_numpy().max(axis=1, initial=0) > 0
    modes = pd.Series(np.where(hit, np.array(MODE_ORDER, dtype=object)[best], None), index=comments.index, dtype="string")
    evidence = ("comment: " + comments.str.extract(EVIDENCE_QUOTE, expand=False)).where(hit)
    return modes, evidence.astype("string")


# The first 60 characters of a comment and the rest of the token they end in: a secret or an id is
# quoted whole or not at all, so the scrubber that later runs over the evidence sees all of it.
EVIDENCE_QUOTE = r"(?s)^(.{0,60}\S*)"


def edit_mode(outputs: pd.Series, edits: pd.Series) -> tuple[pd.Series, pd.Series]:
    """What the user's edit changed: structure (format), a large cut (length), facts (hallucination)."""
    modes = pd.Series(pd.NA, index=outputs.index, dtype="string")
    evidence = pd.Series(pd.NA, index=outputs.index, dtype="string")
    rows = edits.index[edits.notna().to_numpy()]
    before, after = outputs.reindex(rows).astype("string").fillna(""), edits[rows].astype("string").fillna("")
    texts = list(zip(before.tolist(), after.tolist(), languages(before), languages(after), strict=True))  # languages column-wise
    found = [(idx, f) for idx, f in zip(rows, in_processes(_edit_evidence_of, texts, PARALLEL_MIN_EDITS), strict=True) if f]
    if found:
        modes[[idx for idx, _ in found]] = [f[0] for _, f in found]
        evidence[[idx for idx, _ in found]] = [f[1] for _, f in found]
    return modes, evidence


PARALLEL_MIN_EDITS = 5_000  # below this, starting worker processes costs more than it saves
# Structure changes that say nothing about format: code pasted without its fences, a list cut or
# completed into prose (length), prose rewritten as a list.
NOT_A_FORMAT_FIX = ({"code", "prose"}, {"list", "prose"})


def _edit_evidence_of(texts: tuple[str, str, str | None, str | None]) -> tuple[str, str] | None:
    return _edit_evidence(*texts)


def _edit_evidence(output: str, edit: str, edited_in: str | None, written_in: str | None) -> tuple[str, str] | None:
    """The mode an edit points to; `edited_in` / `written_in`: the languages of the answer and of the edit."""
    renamed = _renamed_keys(output, edit)
    if renamed:
        return "format", f"edit changed the keys {renamed[0][:3]} -> {renamed[1][:3]}"
    before, after = _structure(output), _structure(edit)
    if before != after and {before, after} not in NOT_A_FORMAT_FIX:
        return "format", f"edit changed structure {before} -> {after}"
    ratio = len(edit) / max(len(output), 1)
    if ratio < 0.5 and len(output) > 200 and _kept_share(edit, output) >= 0.8:
        return "length", f"edit cut the answer to {ratio:.0%} of its length, keeping its words"
    if edited_in is not None and written_in is not None and edited_in != written_in:
        return "other", f"edit rewrote the answer from '{edited_in}' into '{written_in}'"
    if 0.5 <= ratio <= 2.0 and _kept_share(edit, output) >= 0.6:  # a fact fixed in place, not a rewrite
        numbers_out, numbers_edit = set(NUMBER.findall(output)), set(NUMBER.findall(edit))
        if numbers_out - numbers_edit and numbers_edit - numbers_out:
            return "hallucination", f"edit replaced numbers {sorted(numbers_out - numbers_edit)[:3]} -> {sorted(numbers_edit - numbers_out)[:3]}"
        names_out, names_edit = set(PROPER.findall(output)), set(PROPER.findall(edit))
        if names_out - names_edit and names_edit - names_out:
            return "hallucination", f"edit replaced names {sorted(names_out - names_edit)[:3]} -> {sorted(names_edit - names_out)[:3]}"
    if ratio > 3.0 and len(output) < 300:
        return "length", "edit expanded a short answer"
    swapped = _word_swaps(output, edit)
    if swapped:
        return "hallucination", "edit replaced " + "; ".join(f"'{a}' -> '{b}'" for a, b in swapped[:3])
    dropped, added = _called(output) - _called(edit), _called(edit) - _called(output)
    if dropped and added:
        return "hallucination", f"edit replaced the call {sorted(dropped)[:2]} -> {sorted(added)[:2]}"
    return None


CALL = re.compile(r"\b([A-Za-z_][\w.]*)\(")


def _called(text: str) -> set[str]:
    """The functions a text calls (code or a formula): an edit that swaps one for another fixes an invented API."""
    return {name.lower() for name in CALL.findall(text)}


SWAP_MAX_WORDS = 6  # a replaced phrase longer than this is a rewrite, not a corrected fact


def _word_swaps(output: str, edit: str) -> list[tuple[str, str]]:
    """The short phrases an edit put in place of others while keeping most of the answer's words:
    a fact corrected in place ("scrivuto" -> "scritto", "port 10255" -> "port 10250")."""
    before, after = output.split(), edit.split()
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    if kept < 0.6 * len(before) or kept < 0.5 * len(after):
        return []
    swaps = [(" ".join(before[i1:i2]), " ".join(after[j1:j2])) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op == "replace"]
    substantive = [(a, b) for a, b in swaps if len(a.split()) <= SWAP_MAX_WORDS and _content(a) != _content(b) and _content(a) and _content(b)]
    return substantive if substantive and len(substantive) == len(swaps) else []


def _content(phrase: str) -> str:
    """A phrase without case and punctuation: a swap of those alone is not a fact."""
    return re.sub(r"[\W_]+", "", phrase.lower())


def _renamed_keys(output: str, edit: str) -> tuple[list[str], list[str]] | None:
    """The keys a JSON answer had and its edit does not, and the reverse, when both are objects."""
    try:
        a, b = json.loads(_unfenced_json(output)), json.loads(_unfenced_json(edit))
    except ValueError:
        return None
    if not isinstance(a, dict) or not isinstance(b, dict) or set(a) == set(b):
        return None
    return sorted(set(a) - set(b)), sorted(set(b) - set(a))


def _unfenced_json(text: str) -> str:
    stripped = text.strip()
    return stripped.strip("`").removeprefix("json").strip() if stripped.startswith("```") else stripped


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
    stripped = _unfenced_json(text)
    if not stripped.startswith(("{", "[")):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


YES_NO_QUESTION = r"(?:^|[.!?:\n]\s*)(?:is|are|was|were|can|could|does|do|did|should|will|would|has|have|may|must)\b[^?.!\n]*\?"
ANSWERS_YES = r"^\W*(?:yes|yeah|sure|absolutely|of course|definitely)\b"
# Deflections: the answer sent elsewhere or withheld, where `refusal.py` looks for declining verbs.
DEFLECTION = (
    r"\b(?:please |you (?:should|may want to|might want to|can|could|need to) |i(?:'d| would) (?:strongly )?(?:recommend|suggest|encourage you to) )"
    r"(?:contact\w*|reach\w* out to|ask\w*|consult\w*|check\w* with|speak\w* (?:to|with)|talk\w* to|coordinate with|refer to|follow your)\b"
    r"|\b(?:contact|consult|coordinate with|check with|reach out to|talk to|speak (?:to|with)|review (?:\w+ ){0,3}with) (?:your|a|an|the) (?:\w+ ){0,2}"
    r"(?:administrator|admin|manager|team|department|professional|doctor|physician|pharmacist|lawyer|attorney|specialist|advisor|adviser|hr|support|provider|vendor|expert|owner)\b"
    r"|\b(?:i|we) (?:don't|do not|can't|cannot) (?:have |get )?(?:access|see|view|browse|open|read)\b"
    r"|\b(?:i|we)(?:'m| am| are|'re) (?:unable|not able) to (?:process|summari[sz]e|read|review|handle|translate|analy[sz]e|look at|work with|share|discuss)\b"
    r"|\b(?:information|data|details|matters|documents?) (?:is |are |that (?:is|are) |which (?:is|are) )?(?:handled )?(?:confidential\w*|private|sensitive|restricted|proprietary)\b"
    r"|\b(?:confidential|sensitive) (?:information|data|details|matters|documents?)\b"
    r"|\b(?:not (?:able|in a position|permitted|qualified) to|outside (?:of )?(?:what|the scope))\b"
    r"|\brather than relying on\b"
)
DEFLECTION_CHARS = 400
TRANSLATION_ASKED = r"\btranslat|\bübersetz|\btradu[cz]|\bvertaal|\bprzetłumacz"
# "answer in Spanish": the language the user asked for, when it is not the prompt's own
LANGUAGE_ASKED = {
    "en": r"\b(?:in|into) english\b|\bauf englisch\b|\ben anglais\b|\ben inglés\b|\bin inglese\b|\bem inglês\b|\bin het engels\b|\bpo angielsku\b",
    "de": r"\b(?:in|into) german\b|\bauf deutsch\b|\ben allemand\b|\ben alemán\b|\bin tedesco\b|\bem alemão\b|\bin het duits\b|\bpo niemiecku\b",
    "fr": r"\b(?:in|into) french\b|\bauf französisch\b|\ben français\b|\ben francés\b|\bin francese\b|\bem francês\b|\bin het frans\b|\bpo francusku\b",
    "es": r"\b(?:in|into) spanish\b|\bauf spanisch\b|\ben espagnol\b|\ben español\b|\bin spagnolo\b|\bem espanhol\b|\bin het spaans\b|\bpo hiszpańsku\b",
    "it": r"\b(?:in|into) italian\b|\bauf italienisch\b|\ben italien\b|\ben italiano\b|\bin italiano\b|\bem italiano\b|\bin het italiaans\b|\bpo włosku\b",
    "pt": r"\b(?:in|into) portuguese\b|\bauf portugiesisch\b|\ben portugais\b|\ben portugués\b|\bin portoghese\b|\bem português\b|\bin het portugees\b|\bpo portugalsku\b",
    "nl": r"\b(?:in|into) dutch\b|\bauf niederländisch\b|\ben néerlandais\b|\ben neerlandés\b|\bin olandese\b|\bem holandês\b|\bin het nederlands\b|\bpo niderlandzku\b",
    "pl": r"\b(?:in|into) polish\b|\bauf polnisch\b|\ben polonais\b|\ben polaco\b|\bin polacco\b|\bem polonês\b|\bin het pools\b|\bpo polsku\b",
}
# Code and JSON keep their own words (keys, identifiers): the answer's language is in its prose.
CODE_AND_JSON = r"(?s)```.*?```|\{.*\}"
PARALLEL_MIN_RESPONSES = 20_000  # below this, starting worker processes costs more than it saves


def _findings_of(texts: tuple[str, str, str]) -> list[tuple[str, float, str]]:
    return findings(*texts)


RESPONSE_STRENGTH = {"refusal": 4.0, "language": 4.0, "peer_length": 1.0}


def response_votes(inputs: pd.Series, prompts: pd.Series, outputs: pd.Series, peer_length_ratio: pd.Series, peer_length_outlier: pd.Series) -> pd.DataFrame:
    """Evidence in the response itself, one row per finding (`row`: position in `outputs`, `mode`,
    `strength`, `evidence`): a refusal; an answer in another language than the prompt's; each
    instruction of the system prompt or the user it breaks (`instructions.py`); a far-out length
    for its peers."""
    votes: list[tuple[int, str, float, str]] = []
    refusal = refusal_evidence(outputs).to_numpy(dtype=object, na_value=None)
    asked, answered = languages(prompts), languages(outputs.astype("string").str.replace(CODE_AND_JSON, " ", regex=True))
    contexts = conversation_context(inputs)
    prompt_values, output_values = prompts.astype("string").fillna("").tolist(), outputs.astype("string").fillna("").tolist()
    outlier = peer_length_outlier.fillna(False).astype(bool).to_numpy()
    ratio = peer_length_ratio.to_numpy(dtype=float, na_value=np.nan)
    prompt_text = lowered(prompts)
    yes_no = matches(prompt_text, YES_NO_QUESTION)
    translation = matches(prompt_text, TRANSLATION_ASKED)
    for code, pattern in LANGUAGE_ASKED.items():  # a named language overrides the prompt's own
        named = matches(prompt_text, pattern)
        asked = np.where(named, code, asked)
        translation &= ~named
    head = pc.utf8_slice_codeunits(lowered(outputs), 0, DEFLECTION_CHARS)
    # a deflection that repeats the prompt's own words ("confidential" in an NDA) is the topic, not a deflection
    deflection = matches(head, DEFLECTION) & ~matches(head, ANSWERS_YES) & ~(matches(prompt_text, r"\b(?:confidential|sensitive|private)") & matches(head, r"\b(?:confidential|sensitive|private)"))
    found = in_processes(_findings_of, list(zip(contexts, prompt_values, output_values, strict=True)), PARALLEL_MIN_RESPONSES)
    for pos in range(len(outputs)):
        if refusal[pos] == "no_opening" and yes_no[pos]:
            refusal[pos] = None  # "No, …" answers a yes/no question
        if refusal[pos] is None and deflection[pos]:
            refusal[pos] = "deflection"
        if refusal[pos] is not None:
            votes.append((pos, "refusal", RESPONSE_STRENGTH["refusal"], f"response refuses ({refusal[pos]})"))
            continue
        if asked[pos] is not None and answered[pos] is not None and asked[pos] != answered[pos] and not translation[pos]:
            votes.append((pos, "other", RESPONSE_STRENGTH["language"], f"response in '{answered[pos]}', prompt in '{asked[pos]}'"))
        votes += [(pos, mode, strength, why) for mode, strength, why in found[pos]]
        if outlier[pos]:
            votes.append((pos, "length", RESPONSE_STRENGTH["peer_length"], f"response length a far outlier for its model and prompt version ({ratio[pos]:.1f}x the median)"))
    return pd.DataFrame(votes, columns=["row", "mode", "strength", "evidence"]).astype({"row": "int64", "mode": "string", "strength": "float64", "evidence": "string"})


def conversation_context(inputs: pd.Series) -> list[str]:
    """Per input, the system prompt and the turns before the last user message (the facts and rules
    a response must respect); empty for a bare-string input."""
    contexts = []
    for value in inputs.astype("string").fillna("").tolist():
        messages = _messages(value)
        last_user = max((i for i, m in enumerate(messages) if m[0] == "user"), default=len(messages))
        contexts.append("\n".join(text for _, text in messages[:last_user]))
    return contexts


def _messages(value: str) -> list[tuple[str, str]]:
    if not value.lstrip().startswith("["):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    out = []
    for message in parsed if isinstance(parsed, list) else []:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            out.append((str(message.get("role", "")), str(content or "")))
    return out


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
