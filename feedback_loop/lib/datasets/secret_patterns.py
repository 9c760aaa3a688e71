"""Secrets that detect-secrets' token plugins miss or find only in part, as patterns that match the
whole secret: a PEM block from BEGIN to END, a JWT with its signature, the API-key families issued
today (OpenAI project and service keys, Anthropic, GitHub fine-grained, Google, Azure), credentials
in URLs, and a long random-looking value right after a word such as key, secret, token or password.

Each pattern's first character class or literal is what the scrubber's pre-filter looks for
(`SECRET_HINTS`), so a text without any of them is never scanned.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# Key families by their documented prefixes; the lengths are the shortest real keys have.
TOKEN_PATTERNS: dict[str, str] = {
    "private key": r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*)",
    "JWT": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    "OpenAI / Anthropic key": r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-|None-)?[A-Za-z0-9_-]{20,}",
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
    "GitLab token": r"\bgl(?:pat|dt|ptt|rt|cbt|oas|soat)-[A-Za-z0-9_-]{20,}",
    "Slack token": r"\bxox[abposre]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+",
    "Stripe key": r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}",
    "Google key": r"\bAIza[A-Za-z0-9_-]{35}|\bya29\.[A-Za-z0-9_-]{20,}|\bGOCSPX-[A-Za-z0-9_-]{20,}",
    "AWS access key": r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
    "Azure secret": r"\b[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}|AccountKey=[A-Za-z0-9+/=]{40,}|SharedAccessSignature=[^\s;\"']+|\bsig=[A-Za-z0-9%+/=]{30,}",
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{30,}",
    "URL credentials": r"(?<=://)[^\s:/@\"'<>]+:[^\s@/\"'<>]+@",
}

# A value of 16+ token characters right after a secret-naming word (`password: …`, `"api_key": "…"`,
# `AWS_SECRET_ACCESS_KEY=…`), kept when it looks random (see `looks_random`).
SECRET_WORD = r"(?:secret|passw(?:or)?d|passwd|pwd|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret|credential|auth)"
KEYWORD_VALUE_PATTERN = SECRET_WORD + r"[A-Za-z0-9_-]{0,20}[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([A-Za-z0-9_+/=.~!@#$%^&*-]{16,})"
KEYWORD_VALUE = re.compile("(?i)" + KEYWORD_VALUE_PATTERN)

# What a text must hold for any pattern above to match (lower case; the pre-filter ignores case).
SECRET_HINTS = "|".join(
    (
        r"-----begin",
        r"eyj[a-z0-9_-]{8,}\.",
        r"sk-[a-z0-9_-]{16}",
        r"github_pat_|gh[pousr]_|gl[a-z]{1,4}-[a-z0-9_-]{16}|xox[abposre]-|hooks\.slack|[rsp]k_(?:live|test)_|aiza|ya29\.|gocspx-|hf_[a-z0-9]{16}",
        r"\dq~|accountkey=|sharedaccesssignature=|sig=",
        r"://[^\s:/@]+:[^\s@/]+@",
        KEYWORD_VALUE_PATTERN.lower(),
    )
)

_TOKENS = [(kind, re.compile(pattern, re.DOTALL)) for kind, pattern in TOKEN_PATTERNS.items()]


def looks_random(value: str) -> bool:
    """A value with at least 3 bits of entropy per character and both letters and digits, or 24+
    characters of 3.5 bits: a password or key rather than a word or a sentence."""
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    return (entropy >= 3.0 and mixed) or (len(value) >= 24 and entropy >= 3.5)


def find_secrets(text: str) -> list[tuple[int, int, str]]:
    """(start, end, "SECRET") of every secret the patterns above find in `text`."""
    spans = [(m.start(), m.end(), "SECRET") for _, pattern in _TOKENS for m in pattern.finditer(text)]
    spans += [(m.start(1), m.end(1), "SECRET") for m in KEYWORD_VALUE.finditer(text) if looks_random(m.group(1))]
    return spans
