"""Privacy at export: scrub PII and secrets from text, pseudonymize user ids, honour opt-outs.

Detectors are well-kept libraries where they exist: presidio-analyzer's pattern recognizers
(e-mail addresses, phone numbers, credit cards, IP addresses, IBANs with their checksum, national
ids: US SSN, Spanish NIF/NIE, Italian fiscal code, Polish PESEL, German tax id, Finnish and Swedish
personal codes, UK NINO) and detect-secrets' token plugins (its entropy plugins are left out
because they flag ordinary words). `secret_patterns` adds what they miss or find only in part:
whole PEM blocks and JWTs, today's API-key families, URL credentials and random-looking values
after words such as password or token. Each finding is replaced whole by a placeholder such as
`<EMAIL_ADDRESS>` or `<SECRET>`. Person names and street addresses: `people`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from functools import cache, lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import tldextract
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DeTaxIdRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    FiPersonalIdentityCodeRecognizer,
    IbanRecognizer,
    IpRecognizer,
    ItFiscalCodeRecognizer,
    PhoneRecognizer,
    PlPeselRecognizer,
    SePersonnummerRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)

from feedback_loop.lib.columns import large_text, per_distinct, replaced
from feedback_loop.lib.datasets.opt_out import user_key
from feedback_loop.lib.datasets.people import PEOPLE_HINTS, find_people, ner_model
from feedback_loop.lib.datasets.secret_patterns import SECRET_HINTS, find_secrets
from feedback_loop.lib.parallel import in_processes
from feedback_loop.lib.text import matches

# Presidio validates e-mail domains with tldextract; use its bundled suffix list, never the network.
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

SECRET_PLUGINS = [
    "ArtifactoryDetector",
    "AWSKeyDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
]
MIN_SCORE = 0.4

# What every enabled detector needs to find anything: an "@" (e-mail, basic auth), a run of digits
# with separators (phone, card, IPv4), two colons in hex groups (IPv6), an unbroken run of 20+ token
# characters (every token format above but two), an Artifactory token's prefix (AKC + 10, AP + 9:
# shorter than 20), or a key marker ("BEGIN … PRIVATE KEY", npm's "_authToken"). Keywords such as
# "password" or "secret" are not needed: the detectors that look for them also need a value of 24+
# token characters. Texts without any of these skip the (slow) detectors: this pre-filter only
# decides what to scan. (So the placeholders `<SECRET>`, `<EMAIL_ADDRESS>` … flag nothing.)
AT_SIGN = r"@"
DIGIT_RUN = r"\d[\d\s().+/-]{5,}\d"
IPV6_GROUPS = r"[0-9a-f]{0,4}:[0-9a-f]{0,4}:[0-9a-f]"
SECRET_NEEDS = r"[a-z0-9_+/=.-]{20,}|akc[a-z0-9]{10}|ap[0-9a-f][a-z0-9]{8}|begin|private key|_authtoken|" + SECRET_HINTS
# National ids: an IBAN's country and check digits; an Italian fiscal code (letters, then digits);
# a UK NINO (two letters, then digit pairs). The others are digit runs.
ID_NEEDS = r"\b[a-z]{2}\d{2}\s?[a-z0-9]{4}|\b[a-z]{6}\d{2}[a-z]\d{2}|\b[a-z]{2}\s?\d{2}\s?\d{2}\s?\d{2}"
PREFILTER = "|".join((AT_SIGN, DIGIT_RUN, IPV6_GROUPS, SECRET_NEEDS, ID_NEEDS))  # case ignored; PEOPLE_HINTS is matched with case


# Presidio's default phone regions less CA: Canada shares the +1 numbering plan, and the US pass
# already finds (and validates) Canadian numbers, so a CA pass only repeats it.
PHONE_REGIONS = tuple(region for region in PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS if region != "CA")


NATIONAL_IDS = (
    UsSsnRecognizer,
    EsNifRecognizer,
    EsNieRecognizer,
    ItFiscalCodeRecognizer,
    PlPeselRecognizer,
    DeTaxIdRecognizer,
    FiPersonalIdentityCodeRecognizer,
    SePersonnummerRecognizer,
    UkNinoRecognizer,
)


@cache
def _recognizers() -> tuple:
    return (
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=PHONE_REGIONS),
        CreditCardRecognizer(),
        IpRecognizer(),
        IbanRecognizer(),
        *(recognizer() for recognizer in NATIONAL_IDS),
    )


@cache
def _secret_patterns() -> tuple:
    """The token regexes of detect-secrets' plugins (whole matches, not just their first group)."""
    plugins = [cls() for cls in get_mapping_from_secret_type_to_class().values() if cls.__name__ in SECRET_PLUGINS]
    return tuple(pattern for plugin in plugins for pattern in getattr(plugin, "denylist", ()))


# Each detector's part of PREFILTER: it runs only around a match of its own.
_NEEDS = {
    "EmailRecognizer": re.compile(AT_SIGN),
    "PhoneRecognizer": re.compile(DIGIT_RUN),
    "CreditCardRecognizer": re.compile(DIGIT_RUN),
    "IpRecognizer": re.compile(DIGIT_RUN + "|" + IPV6_GROUPS, re.IGNORECASE),
    "IbanRecognizer": re.compile(ID_NEEDS, re.IGNORECASE),
    **{recognizer.__name__: re.compile(DIGIT_RUN + "|" + ID_NEEDS, re.IGNORECASE) for recognizer in NATIONAL_IDS},
}
_NEEDS_SECRETS = re.compile(AT_SIGN + "|" + SECRET_NEEDS, re.IGNORECASE)
_NEEDS_PEOPLE = re.compile(PEOPLE_HINTS)


WINDOW = 48  # characters of context kept around a detector's prerequisite when scanning


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every PII or secret finding in `text`.

    Each detector runs only where the text has what that detector needs (see PREFILTER): on
    windows of `WINDOW` characters around those places, merged when they overlap. A finding is a
    contiguous span around its prerequisite, so this finds what a scan of the whole text finds."""
    spans = []
    for recognizer in _recognizers():
        for start, end in _windows(_NEEDS[type(recognizer).__name__], text):
            chunk = text[start:end]
            for result in recognizer.analyze(chunk, entities=recognizer.supported_entities, nlp_artifacts=None) or []:
                if result.score >= MIN_SCORE or (result.score > 0 and _has_context(chunk, recognizer)):
                    spans.append((start + result.start, start + result.end, result.entity_type))
    if _NEEDS_SECRETS.search(text):
        for pattern in _secret_patterns():
            spans.extend((m.start(), m.end(), "SECRET") for m in pattern.finditer(text) if m.end() - m.start() >= 8)
        spans.extend(find_secrets(text))
    if ner_model() is not None or _NEEDS_PEOPLE.search(text):
        spans.extend(find_people(text))
    return sorted(set(spans))


def _has_context(chunk: str, recognizer) -> bool:
    """A weak match (an SSN without dashes) counts when one of its recognizer's context words
    ("ssn", "social security", …) is near it, as presidio's context enhancer would raise it."""
    lowered = chunk.lower()
    return any(word in lowered for word in getattr(recognizer, "context", None) or ())


def _windows(need: re.Pattern, text: str) -> list[tuple[int, int]]:
    """Windows around each match of `need`, widened to the nearest white space (no token is cut
    in half) and merged when they overlap."""
    merged: list[list[int]] = []
    for match in need.finditer(text):
        start = max(0, match.start() - WINDOW)
        end = min(len(text), match.end() + WINDOW)
        # Widened to white space at most `WIDEN` characters away: a search to the text's ends would
        # make a text with many windows quadratic.
        start = _WORD_START.search(text, max(0, start - WIDEN), start).end() if start else 0
        after = _SPACE.search(text, end, end + WIDEN)
        end = after.start() if after else min(len(text), end + WIDEN)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [piece for start, end in merged for piece in _pieces(text, start, end)]


MAX_WINDOW = 2_000  # characters a detector sees at once: its cost grows faster than the text it is given


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) in pieces of at most about `MAX_WINDOW` characters, cut at white space, each
    overlapping the next by `2 * WINDOW` characters: a finding (shorter than that) lies whole in
    one piece. A digit-heavy megabyte is then scanned in linear time."""
    pieces = []
    while end - start > MAX_WINDOW:
        cut = text.rfind(" ", start + MAX_WINDOW // 2, start + MAX_WINDOW)
        cut = cut if cut > 0 else start + MAX_WINDOW
        pieces.append((start, cut))
        back = text.rfind(" ", start + MAX_WINDOW // 4, cut - 2 * WINDOW)  # the next piece starts a quarter on at least
        start = back + 1 if back != -1 else cut - 2 * WINDOW
    pieces.append((start, end))
    return pieces


WIDEN = 256
_SPACE = re.compile(r"\s")
_WORD_START = re.compile(r"(?s).*\s|")  # the longest prefix ending in white space (or nothing)


@lru_cache(maxsize=200_000)
def scrub_text(text: str) -> tuple[str, Counter]:
    """`text` with every finding replaced by `<KIND>`, and the count of findings per kind."""
    spans = sorted(find_pii(text), key=lambda s: (s[0], -(s[1] - s[0])))
    out, last, found = [], 0, Counter()
    for start, end, kind in spans:
        if start < last:
            continue  # overlapped by a longer finding already replaced
        out.append(text[last:start])
        out.append(f"<{kind}>")
        found[kind] += 1
        last = end
    out.append(text[last:])
    return "".join(out), found  # callers must not mutate the (cached) counter


def might_contain_pii(texts: pd.Series) -> np.ndarray:
    """Rows the detectors must scan (see PREFILTER); vectorized over the column."""
    if ner_model() is not None:  # a model reads every text for names
        return texts.notna().to_numpy(dtype=bool)
    text = large_text(texts)
    return matches(text, PREFILTER, ignore_case=True) | matches(text, PEOPLE_HINTS, ignore_case=False)  # missing: False


PARALLEL_MIN_TEXTS = 100  # below this, starting worker processes costs more than it saves


def scrub_frame(frame: pd.DataFrame, columns: list[str], json_columns: tuple[str, ...] = ()) -> tuple[pd.DataFrame, Counter]:
    """Scrub text columns; only rows the pre-filter flags are scanned. `json_columns` hold JSON text
    (e.g. chat messages): their flagged rows are parsed, scrubbed value by value, and serialized again.
    Returns the scrubbed frame and the count of findings per kind."""
    scrubbed, findings = Scrubber().scrubbed(frame, columns, json_columns)
    return scrubbed, sum(findings.values(), Counter())


class Scrubber:
    """`scrub_frame` for a build that scrubs its data in parts sharing texts: each distinct text is
    scanned once over the scrubber's life (the results of the worker processes are kept here)."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[str, Counter]] = {}

    def scrubbed(self, frame: pd.DataFrame, columns: list[str], json_columns: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[int, Counter]]:
        """A copy of `frame` with `columns` scrubbed, and the findings of each row (by position) that had any."""
        flagged, texts = [], set()
        for column in columns:
            rows = np.flatnonzero(might_contain_pii(frame[column]))
            values = frame[column].iloc[rows].tolist()
            parsed = [json.loads(v) for v in values] if column in json_columns else None
            flagged.append((column, rows, values, parsed))
            texts.update(text for value in (parsed if parsed is not None else values) for text in strings_in(value))
        self._scan(texts)
        out = frame.copy(deep=False)  # scrubbed columns are replaced, never written into
        findings: dict[int, Counter] = {}
        for column, rows, values, parsed in flagged:
            if not len(rows):
                continue
            cleaned_values = []
            for row, text, value in zip(rows.tolist(), values, parsed if parsed is not None else values, strict=True):
                cleaned = _scrub_value(value, self.known, findings.setdefault(row, Counter()))
                if parsed is None:
                    cleaned_values.append(cleaned)
                else:  # nothing replaced: the JSON text as it was
                    cleaned_values.append(text if cleaned is value else json.dumps(cleaned, ensure_ascii=False))
            out[column] = replaced(out[column], rows, cleaned_values)
        return out, {row: found for row, found in findings.items() if found}

    def _scan(self, texts: set[str]) -> None:
        """Scan the texts not scanned before that the pre-filter flags."""
        candidates = pd.Series(sorted(texts - self.known.keys()), dtype="string")
        candidates = candidates[might_contain_pii(candidates)].tolist()
        self.known.update(zip(candidates, scrub_texts(candidates), strict=True))


def scrub_texts(texts: list[str]) -> list[tuple[str, Counter]]:
    """`scrub_text` of each text; many texts are shared out over a process per core (the detectors
    are pure Python)."""
    return in_processes(scrub_text, texts, PARALLEL_MIN_TEXTS)


def strings_in(value) -> list[str]:
    """Every string inside a JSON value."""
    found: list[str] = []
    _collect_strings(value, found)
    return found


def _collect_strings(value, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, found)


def jsonl_strings(lines: list[str]) -> pd.Series:
    """Every string value (not key) in JSON lines: parsed by Arrow's JSON reader into columns, or line
    by line (`strings_in`) when the lines do not share one schema. Arrow reads a field whose values
    are all ISO-8601 dates or times as timestamps: those hold no PII and are left out."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return pd.Series([], dtype="string")
    try:
        table = pa_json.read_json(pa.BufferReader("".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()))
    except pa.ArrowInvalid:
        return pd.Series([text for line in lines for text in strings_in(json.loads(line))], dtype="string")
    leaves = [leaf for column in table.columns for chunk in column.chunks for leaf in _string_leaves(chunk)]
    return pd.Series(pa.concat_arrays(leaves) if leaves else pa.array([], type=pa.string()), dtype="string").dropna().reset_index(drop=True)


def _string_leaves(values: pa.Array) -> list[pa.Array]:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return [values.cast(pa.string())]
    if pa.types.is_struct(values.type):
        return [leaf for child in values.flatten() for leaf in _string_leaves(child)]
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return _string_leaves(values.flatten())
    return []


def _scrub_value(value, scrubbed: dict[str, tuple[str, Counter]], found: Counter):
    """A JSON value (or a plain string) with each string replaced by its entry in `scrubbed`
    (unlisted strings are clean); the findings of the replaced strings are added to `found`. A value with nothing to
    replace is returned itself."""
    if isinstance(value, str):
        hit = scrubbed.get(value)
        if hit is None or hit[0] == value:
            return value
        found.update(hit[1])  # update copies the counts: the shared (cached) counters stay intact
        return hit[0]
    if isinstance(value, list):
        cleaned = [_scrub_value(item, scrubbed, found) for item in value]
        return value if all(c is v for c, v in zip(cleaned, value, strict=True)) else cleaned
    if isinstance(value, dict):
        cleaned = {key: _scrub_value(item, scrubbed, found) for key, item in value.items()}
        return value if all(cleaned[key] is item for key, item in value.items()) else cleaned
    return value


def pseudonymize(user_ids: pd.Series, key: str) -> pd.Series:
    """HMAC-SHA256 of each user id's `user_key` under `key` (first 16 hex digits); missing ids stay
    missing. ` Alice` and `alice` are one user, as on the opt-out list."""
    secret = key.encode()

    def hashed(ids: pd.Series) -> pd.Series:
        return ids.map(lambda u: None if u is pd.NA else "u_" + hmac.new(secret, user_key(str(u)).encode(), hashlib.sha256).hexdigest()[:16]).astype("string")

    return per_distinct(user_ids, hashed)


def key_id(key: str) -> str:
    """A fingerprint of the user-hash key (not the key): versions record it, so a build can tell
    whether the pseudonyms it inherits were made under the key it uses."""
    return hmac.new(key.encode(), b"feedback_loop user-hash key id", hashlib.sha256).hexdigest()[:12]
