"""Person names and street addresses.

With a spaCy model installed (`pip install 'feedback_loop[ner]'` and `python -m spacy download
en_core_web_lg`, or any model named by `FEEDBACK_LOOP_NER_MODEL`), presidio's spaCy recognizer
finds PERSON entities anywhere in a text. Without one, and beside it, patterns find the names a
text introduces (an introduction such as "my name is", "je m'appelle", "nazywam się", or "Anna
Berg here"; a title such as Mr, Frau, Sra; a field label such as "Name:"; a sign-off such as
"Regards," or a dash before a name on its own line) and street
addresses (a house number with a street word: "221B Baker Street", "Hauptstraße 5", "12 rue de la
Paix", "Calle Mayor 3", "ul. Długa 12"), in the languages the comments are read in. Places named
alone ("Paris") are not addresses: they are facts the datasets keep.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import cache

NAME_WORD = r"[A-ZÀ-ÖØ-ÞĀ-ſ][a-zà-öø-ÿā-ž'’]+(?:-[A-ZÀ-ÖØ-Þ]?[a-zà-öø-ÿā-ž'’]+)*"
FULL_NAME = rf"{NAME_WORD}(?:[ \t]+(?:(?:van|von|de|der|den|da|di|du|del|la|le)[ \t]+)?{NAME_WORD}){{1,2}}"  # two or three words
ANY_NAME = rf"{NAME_WORD}(?:[ \t]+(?:(?:van|von|de|der|den|da|di|du|del|la|le)[ \t]+)?{NAME_WORD}){{0,2}}"

# Introductions that name the speaker: any name after them ("my name is Ann").
NAMING = r"my name is|my name's|call me|mein name ist|ich heiße|ich heisse|je m'appelle|je m’appelle|mon nom est|me llamo|mi nombre es|mi chiamo|il mio nome è|meu nome é|chamo-me|me chamo|mijn naam is|ik heet|nazywam się|mam na imię|na imię mi"
# Introductions that are often followed by other words ("I am Happy", "this is Python"): a full name only.
BEING = r"i am|i'm|i’m|this is|it's|ich bin|hier ist|je suis|c'est|soy|aquí|sono|qui è|eu sou|aqui é|ik ben|dit is|jestem|tu"
TITLES = r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Herr|Frau|Hr|Fr|Sr|Sra|Srta|Don|Doña|Dña|Sig|Sig\.ra|Signor|Signora|Dott|M|Mme|Mlle|Pan|Pani|Dhr|Mevr|Mevrouw|Meneer"
LABELS = r"name|full name|customer|patient|client|contact|employee|nom|nom complet|nombre|nome|naam|imię|imię i nazwisko|nazwisko|kunde|kundin|vorname|nachname|cliente|paciente"
SIGN_OFFS = r"regards|best regards|kind regards|best|thanks|thank you|cheers|sincerely|yours|mit freundlichen grüßen|viele grüße|grüße|cordialement|bien à vous|saludos|un saludo|atentamente|cordiali saluti|saluti|grazie|atenciosamente|abraços|obrigado|obrigada|met vriendelijke groet|groeten|pozdrawiam|z poważaniem"

_NAME_PATTERNS = [
    re.compile(rf"(?i:\b(?:{NAMING}))[ \t:,]+({ANY_NAME})"),
    re.compile(rf"(?i:\b(?:{BEING}))[ \t]+({FULL_NAME})\b"),
    re.compile(rf"\b(?:{TITLES})\.?[ \t]+({ANY_NAME})"),
    re.compile(rf"(?im:^[ \t]*(?:{LABELS})[ \t]*[:=][ \t]*)({ANY_NAME})"),
    re.compile(rf"(?i:\b(?:{SIGN_OFFS}))[ \t]*[,!.]?[ \t]*(?:\r?\n|[,-][ \t]*)[ \t]*({ANY_NAME})[ \t]*(?:\r?\n|$)"),
    re.compile(rf"(?:^|[.!?\n][ \t]*)({FULL_NAME})[ \t,]+(?i:here|speaking|writing|hier|ici|aquí|qui|aqui|tutaj)\b"),  # "Anna Berg here"
    re.compile(rf"(?m:^[ \t]*(?:--|—|–)[ \t]*)({ANY_NAME})[ \t]*$"),  # "— Anna"
]

STREET_EN = r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|Terrace|Square|Sq|Parkway|Pkwy|Highway|Hwy|Close|Crescent|Row|Mews"
STREET_SUFFIX = r"straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer|laan|straat|gracht|plein|kade|singel|gatan|vägen|vej|gade|veien"
STREET_FR = r"rue|avenue|av\.|boulevard|bd|place|allée|chemin|impasse|quai|route|cours"
STREET_BEFORE = r"Calle|C/|Avenida|Avda\.?|Paseo|Plaza|Camino|Carrer|Via|Viale|Piazza|Corso|Largo|Vicolo|Rua|Travessa|Praça|Alameda|ul\.|ulica|al\.|aleja|os\.|osiedle|pl\."
POSTAL_TAIL = r"(?:,?[ \t]+(?:[A-Z]{2}[ \t]+)?(?:\d{2}-\d{3}|\d{4,5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2})(?:[ \t]+[A-ZÀ-Þ][\w'’-]+){0,2})?"
_ADDRESS_PATTERNS = [
    # 221B Baker Street, 1600 Pennsylvania Ave NW, Apt 4
    re.compile(
        rf"\b\d{{1,5}}[A-Za-z]?[ \t]+(?:[A-Z][\w'’.-]*[ \t]+){{1,4}}(?:{STREET_EN})\b\.?(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W)\b)?(?:,?[ \t]+(?:Apt|Suite|Unit|Flat|#)\.?[ \t]*\w+)?(?:,[ \t]*[A-Z][\w'’ .-]{{1,30}}?(?=,|[ \t]+[A-Z]{{1,2}}\d|[ \t]*\d|$|\n))?{POSTAL_TAIL}"
    ),
    # Hauptstraße 5, Keizersgracht 123, 10115 Berlin
    re.compile(rf"\b[A-ZÄÖÜÅØÆ][\wäöüßåøæ-]*(?i:{STREET_SUFFIX})[ \t]+\d{{1,4}}[a-z]?\b{POSTAL_TAIL}"),
    # 12 rue de la Paix, 75002 Paris
    re.compile(rf"\b\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?i:{STREET_FR})[ \t]+(?:[\w'’-]+[ \t]+){{0,4}}[A-ZÀ-Þ][\w'’-]+{POSTAL_TAIL}"),
    # Calle Mayor 3, Via Roma 10, Rua Augusta 100, ul. Długa 12/4
    re.compile(rf"(?<!\w)(?:{STREET_BEFORE})[ \t]+(?:[\w'’.-]+[ \t]+){{0,4}}\d{{1,4}}[a-zA-Z]?(?:/\d{{1,4}})?\b{POSTAL_TAIL}"),
]

# What a text must hold for a pattern above to match: the scrubber's pre-filter, matched with case
# (a name is capitalized), so that everyday words ("this is", "thanks") alone do not flag a text.
CAP = "[A-ZÀ-ÖØ-Þ]"
_NAMING, _BEING = NAMING.replace("'", "."), BEING.replace("'", ".")  # any apostrophe
PEOPLE_HINTS = "|".join(
    (
        rf"(?i:{_NAMING})[ \t:,]+{CAP}",
        rf"(?i:\b(?:{_BEING}))[ \t]+{CAP}[a-zà-ÿ'-]+[ \t]+{CAP}",
        rf"\b(?:{TITLES})\.?[ \t]+{CAP}",
        rf"(?i:\b(?:{LABELS}))[ \t]*[:=][ \t]*{CAP}",
        rf"(?i:\b(?:{SIGN_OFFS}))[ \t]*[,!.]?[ \t]*(?:\n|,[ \t]*{CAP}[^\n]{{0,40}}$)",
        rf"{CAP}[a-zà-ÿ'-]+[ \t]+{CAP}[a-zà-ÿ'-]+[ \t,]+(?i:here|speaking|writing|hier|ici|aquí|qui|aqui|tutaj)\b",
        rf"(?m:^[ \t]*(?:--|—|–)[ \t]*{CAP})",
        rf"\d[A-Za-z]?[ \t]+(?:[A-Z][\w'.-]*[ \t]+){{1,4}}(?:{STREET_EN})\b",
        rf"(?i:{STREET_SUFFIX})[ \t]+\d",
        rf"\d,?[ \t]+(?i:{STREET_FR})[ \t]",
        rf"(?:{STREET_BEFORE})[ \t]+[\w{CAP[1:-1]}]",
    )
)


def find_people(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the person names (PERSON) and street addresses (STREET_ADDRESS) in `text`."""
    spans = [(m.start(1), m.end(1), "PERSON") for pattern in _NAME_PATTERNS for m in pattern.finditer(text)]
    spans += [(m.start(), m.end(), "STREET_ADDRESS") for pattern in _ADDRESS_PATTERNS for m in pattern.finditer(text)]
    if (ner := _ner()) is not None:
        spans += ner(text)
    return spans


NER_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm")


@cache
def ner_model() -> str | None:
    """The spaCy model names are read with: `FEEDBACK_LOOP_NER_MODEL` (a package or a path), else
    the first of `NER_MODELS` installed; None when there is none (spaCy is imported only then)."""
    return os.environ.get("FEEDBACK_LOOP_NER_MODEL") or next((name for name in NER_MODELS if importlib.util.find_spec(name) is not None), None)


@cache
def _ner():
    """presidio's spaCy PERSON recognizer on `ner_model()`; None without a model."""
    model = ner_model()
    if model is None:
        return None
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    engine.load()
    recognizer = SpacyRecognizer(supported_entities=["PERSON"])

    def persons(text: str) -> list[tuple[int, int, str]]:
        artifacts = engine.process_text(text, "en")
        return [(r.start, r.end, "PERSON") for r in recognizer.analyze(text, ["PERSON"], artifacts) if r.score >= 0.5]

    return persons
