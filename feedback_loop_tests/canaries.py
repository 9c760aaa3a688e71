"""Planted personal data and secrets ("canaries"): random, valid values of many kinds, made from a
seed (checksums computed), and landing records that carry them in every field a user can fill."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Canary:
    kind: str
    text: str  # what is planted
    value: str  # what must never be published (the secret inside `text`, or all of it)


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choices(string.digits, k=18))
    numeric = int(bban + "1314" + "00")  # DE = 13 14
    return f"DE{98 - numeric % 97:02d}{bban}"


def _pesel(rng: random.Random) -> str:
    digits = f"{rng.randrange(50, 99):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}{rng.randrange(10**4):04d}"
    check = (10 - sum(int(d) * w for d, w in zip(digits, (1, 3, 7, 9, 1, 3, 7, 9, 1, 3), strict=True)) % 10) % 10
    return digits + str(check)


def _word(rng: random.Random) -> str:
    """A made-up capitalized name word (no dictionary of real names: what is found must be found by its context)."""
    syllables = ["ka", "lo", "mer", "vin", "dra", "sel", "tor", "bi", "nu", "wen", "gal", "rio", "ste", "fan", "quo", "zel"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()


def _token(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


def canaries(per_kind: int = 14, seed: int = 2026) -> list[Canary]:
    """`per_kind` canaries of each of the kinds below."""
    rng = random.Random(seed)
    out: list[Canary] = []
    for i in range(per_kind):
        card = "4" + "".join(rng.choices(string.digits, k=14))
        card += _luhn_digit(card)
        nif = f"{rng.randrange(10**7, 10**8)}"
        iban = _iban(rng)
        secret_40 = _token(rng, 40, ALNUM + "/+")
        password = _token(rng, 12) + "#" + _token(rng, 5)
        pem_body = "\n".join(_token(rng, 64, ALNUM + "+/") for _ in range(4))
        jwt = "eyJhbGciOiJIUzI1NiJ9." + "eyJ" + _token(rng, 30, ALNUM + "_-") + "." + _token(rng, 43, ALNUM + "_-")
        items = [
            ("email", "mail me at {v} please", f"{_token(rng, 6, string.ascii_lowercase)}.{_token(rng, 5, string.ascii_lowercase)}{i}@{_token(rng, 7, string.ascii_lowercase)}.com"),
            ("phone (US)", "call {v} tonight", f"+1 415-555-01{i:02d}"),
            ("phone (UK)", "my number is {v}", f"+44 20 7946 0{rng.randrange(1000):03d}"),
            ("credit card", "charge card {v} again", " ".join(card[j : j + 4] for j in range(0, 16, 4))),
            ("IBAN", "wire it to {v} today", " ".join(iban[j : j + 4] for j in range(0, len(iban), 4))),
            ("US SSN", "my SSN is {v}", f"{rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"),
            ("ES NIF", "mi DNI es {v}", nif + "TRWAGMYFPDXBNJZSQVHLCKE"[int(nif) % 23]),
            ("PL PESEL", "PESEL {v}", _pesel(rng)),
            ("IPv4", "the host {v} is down", f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
            ("AWS access key", "key id {v}", "AKIA" + _token(rng, 16, UPPER_ALNUM)),
            ("AWS secret key", "aws_secret_access_key = {v}", secret_40),
            ("GitHub token", "use {v} for the CI", "ghp_" + _token(rng, 36)),
            ("GitHub fine-grained token", "token {v}", "github_pat_" + _token(rng, 22) + "_" + _token(rng, 59)),
            ("OpenAI key", "my key {v} stopped working", "sk-proj-" + _token(rng, 120, ALNUM + "_-")),
            ("Anthropic key", "ANTHROPIC_API_KEY={v}", "sk-ant-api03-" + _token(rng, 93, ALNUM + "_-") + "AA"),
            ("Slack token", "bot {v}", f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-{_token(rng, 24)}"),
            ("Stripe key", "stripe {v}", "sk_live_" + _token(rng, 24)),
            ("Google API key", "maps key {v}", "AIza" + _token(rng, 35, ALNUM + "_-")),
            ("JWT", "Authorization: Bearer {v}", jwt),
            ("private key", "{v}", f"-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----"),
            ("URL credentials", "connect to postgres://app:{v}@db.internal/prod", password),
            ("GitLab token", "gitlab {v}", "glpat-" + _token(rng, 20, ALNUM + "_-")),
            ("person name (introduced)", "hello, my name is {v} and it failed", f"{_word(rng)} {_word(rng)}"),
            ("person name (signed)", "it broke again.\nKind regards,\n{v}", f"{_word(rng)} {_word(rng)}"),
            ("person name (title)", "please forward this to Dr. {v} today", _word(rng) + _word(rng).lower()),
            ("street address (EN)", "ship it to {v}, Springfield", f"{rng.randrange(1, 999)} {_word(rng)} Street"),
            ("street address (DE)", "meine Adresse ist {v}, 10115 Berlin", f"{_word(rng)}straße {rng.randrange(1, 99)}"),
            ("street address (FR)", "j'habite au {v}, 75002 Paris", f"{rng.randrange(1, 99)} rue {_word(rng)}"),
            ("street address (ES)", "vivo en {v}, Madrid", f"Calle {_word(rng)} {rng.randrange(1, 99)}"),
        ]
        for kind, template, value in items:
            out.append(Canary(kind=kind, text=template.format(v=value), value=value))
    return out


def secret_parts(canary: Canary) -> list[str]:
    """What to look for: the value, and for a multi-line value each line of 16+ characters (a part
    published alone is a leak too)."""
    lines = [line for line in canary.value.splitlines() if len(line) >= 16 and not line.startswith("-----")]
    return [canary.value, *lines] if len(lines) > 1 else [canary.value]
