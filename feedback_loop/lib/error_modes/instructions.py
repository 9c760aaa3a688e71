"""What the system prompt and the user asked for, and where the response breaks it.

`findings(context, prompt, output)` lists, for one response, each broken instruction as
(mode, strength, evidence). `context` is the system prompt and the earlier turns: the facts and
rules the response must respect; `prompt` the user's last message. Checks:

- format: JSON asked and not given (or wrapped in a preamble or fences the instructions forbid),
  keys outside the schema the instructions show, YAML / CSV / tab-separated / a table / a numbered
  list / markdown headings asked and not given, more list items than the exact count asked;
- length: fewer items than asked, a word, sentence or character limit broken, a long answer to a
  request for just one thing, an answer cut off mid-sentence;
- hallucination: a number with a unit (days, hours, %, money…) that the context gives with another
  value, a currency the context does not use, a Python standard-library attribute or keyword
  argument that does not exist;
- other: an answer in another language than the one asked for.

Strength says how far a finding outweighs other evidence (see `assign.py`): a check of an explicit,
countable instruction is stronger than a user's reason tag, which users often click at random.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable
from functools import lru_cache

from feedback_loop.lib.text import last_question

OFF_TOPIC = 4.0  # an answer to another question: whatever else it breaks follows from that
OFF_TOPIC_MIN_WORDS = 40  # a short answer need not repeat the question's words
STRONG = 3.5  # outweighs a reason tag (3.0)
MEDIUM = 2.5
WEAK = 1.5

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a": 1, "a single": 1, "single": 1}
_COUNT = r"(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)"
ITEM_NOUNS = r"(?:bullet points?|bullets?|points|items|steps|ideas|names|tips|options|questions|examples|reasons|taglines|headlines|suggestions|lines|sentences|subject lines|titles|things|ways)"
EXACT_COUNT = re.compile(
    rf"(?:^|\b(?:exactly|give me|list|write|with|in|only|just|make|suggest|name|provide|generate|create|need|want|me)\s+){_COUNT}\s+(?:\w+\s+){{0,2}}?({ITEM_NOUNS})\b", re.I
)  # a count asked for ("give me 5 tips"), not one mentioned ("I have 39 items")
EXACTLY_ANY = re.compile(rf"\bexactly {_COUNT}\s+(\w+)", re.I)  # "exactly 3 colours": any noun
LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s+\S", re.M)
LIST_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s+")
NUMBERED_LINE = re.compile(r"^\s*\d+[.)]\s+\S", re.M)
HEADING_LINE = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*\n]{2,60}\*\*:?\s*$)", re.M)
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}", re.M)
FENCE = re.compile(r"```")
WORD = re.compile(r"[^\W\d_]+")
STEM = 5  # words compared on their first letters: "planet" and "planets", "explain" and "explained"
ENGLISH_WORDS = frozenset("the is are was what how can do does did i you my a an of to in for it this that which why when where".split())
COMMON_WORDS = frozenset(
    "what which when where who whom whose why how does could would should will shall have this that these those with from into about "
    "your yours there their them they tell give show explain please thanks thank know need want like just also some many much more most "
    "very really make made take good best well only other than then over under again still even ever into onto upon being been were "
    "answer question quick something anything thing things help write using used use "
    # the words of instructions about form, not about the topic
    "exactly bullet bullets point points words sentence sentences list lists json yaml return format table brief briefly short "
    "keys reply respond output numbered steps lines items most least under within maximum minimum markdown".split()
)
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")

ASKS_JSON = re.compile(r"\bjson\b", re.I)
FORBIDS_FENCES = re.compile(
    r"\b(?:no|without|never|don't|do not)\b[^.\n]{0,30}\b(?:code fences?|fences|backticks|markdown)\b|\b(?:bare|raw|only(?: the)?|just(?: the)?|pure) json\b|\bjson only\b|\bonly (?:a |one |the )?(?:valid )?json\b|\bno (?:other text|prose|preamble)\b|\bnothing (?:else|but)\b|\bonly (?:output|return|reply with) (?:the|a|valid)\b",
    re.I,
)
ASKS = {
    "yaml": re.compile(r"\byaml\b", re.I),
    "csv": re.compile(r"\bcsv\b|comma[- ]separated", re.I),
    "tsv": re.compile(r"\btsv\b|tab[- ]separated|tab[- ]delimited", re.I),
    "table": re.compile(r"\b(?:markdown table|a table|as a table|in a table|table of|table with)\b", re.I),
    "numbered": re.compile(r"\bnumbered (?:list|steps)\b|\bnumber(?:ed)? (?:the|each) steps?\b", re.I),
    "headings": re.compile(r"###|\b(?:markdown )?(?:headings|headers)\b|\b(?:\d|two|three|four|five|six) (?:\w+ )?sections?\b|\bsections?\b[^.\n]{0,40}\b(?:headings?|titled|named)\b", re.I),
}
ONE_BLOCK = re.compile(r"\b(?:one|a single|single|1)\s+(?:\w+\s+)?(?:code\s+)?block\b", re.I)
TRANSLATE = re.compile(r"\btranslat\w*|\bübersetz\w*|\btradu\w*|\bvertaal\w*|\bprzetłumacz\w*", re.I)
QUOTED = re.compile(r"[\"'“‘«„]([^\"'”’»“]{40,})[\"'”’»“]")
WORD_LIMIT = re.compile(r"\b(?:in|at most|under|no more than|maximum(?: of)?|max|within|less than|fewer than|up to)\s+(\d{1,4})\s+words\b", re.I)
WORD_MINIMUM = re.compile(r"\b(?:at least|minimum(?: of)?|around|about|roughly)\s+(\d{2,4})\s+words\b", re.I)
SENTENCE_LIMIT = re.compile(rf"\b(?:in|at most|no more than|max|up to|within)?\s*(?:{_COUNT}(?:\s*(?:-|to|or)\s*{_COUNT})?)[\s-]+sentences?\b", re.I)
CHAR_LIMIT = re.compile(r"\b(\d{1,3})[- ]char(?:acter)?s?\b|\b(?:at most|under|max(?:imum)?|within|no more than)\s+(\d{1,3})\s+char(?:acter)?s\b", re.I)
ONE_THING = re.compile(
    r"^\W*quick\b\s*[:,-]|\b(?:just (?:the|a|tell me|give me)|only (?:the|a)\b|one[- ]liner|one line|yes or no|yes/no|short answer|in a word|briefly|in short|keep it short|tl;?dr)\b",
    re.I,
)
BRIEF_WORDS = 80
TRANSLATE_STEMS = ("transl", "übersetz", "tradu", "vertaal", "przetłumacz")
# Words one of the length instructions holds (a test before the patterns run).
LENGTH_WORDS = ("word", "sentence", "char", *TRANSLATE_STEMS, "just", "only", "one", "yes", "short", "brief", "quick", "tl", "line")

UNIT = r"(days?|business days|hours?|weeks?|months?|years?|minutes?|%|percent|miles?|km|kg|items?|nights?|units|rows|columns|per cent)"
NUMBER_UNIT = re.compile(rf"(?<![\w.$€£])(\d+(?:[.,]\d+)?)\s*{UNIT}\b", re.I)
MONEY = re.compile(r"([$€£])\s?(\d+(?:[.,]\d+)*)|\b(\d+(?:[.,]\d+)*)\s?(EUR|USD|GBP|euros?|dollars?|pounds)\b|\b(EUR|USD|GBP)\s?(\d+(?:[.,]\d+)*)", re.I)
CURRENCY_OF = {"$": "USD", "€": "EUR", "£": "GBP", "usd": "USD", "eur": "EUR", "gbp": "GBP", "euro": "EUR", "euros": "EUR", "dollar": "USD", "dollars": "USD", "pounds": "GBP"}
BUDGET = re.compile(r"\bbudget\b[^.\n]{0,40}?(?:[$€£]\s?(\d[\d,.]*)|(\d[\d,.]*)\s?(?:EUR|USD|GBP|euros?|dollars?|pounds)\b|(?:EUR|USD|GBP)\s?(\d[\d,.]*))", re.I)

PYTHON_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\b(\([^()]*\))?")
FROM_IMPORT = re.compile(r"^\s*from\s+([a-z_][a-z0-9_]*)\s+import\s+([\w, ]+)$", re.M)
KEYWORD = re.compile(r"\b([a-z_][a-z0-9_]*)\s*=(?!=)")
# Standard-library modules safe to import for a look-up (no side effects, no GUI, no network).
UNSAFE_MODULES = frozenset(
    {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "webbrowser", "pydoc", "ensurepip", "venv", "lib2to3", "msilib", "winreg", "winsound", "_winapi", "msvcrt"}
)


def findings(context: str, prompt: str, output: str) -> list[tuple[str, float, str]]:
    """The instructions the response breaks, as (mode, strength, evidence), strongest first.

    Each check runs only when a substring test says it may apply (most negatives ask for no
    format, give no budget, show no code), and what is read of a system prompt is cached: the same
    system prompt comes with many responses."""
    instructions = context + "\n" + prompt
    lowered = instructions.lower()
    found: list[tuple[str, float, str]] = []
    for check, applies in CHECKS:
        if applies(context, prompt, output, lowered):
            found += check(instructions, context, prompt, output)
    return sorted(found, key=lambda f: -f[1])


Gate = Callable[[str, str, str, str], bool]  # (context, prompt, output, lowered instructions)


def _any(*words: str) -> Gate:
    return lambda context, prompt, output, lowered: any(word in lowered for word in words)


def _in_prompt(*words: str) -> Gate:
    return lambda context, prompt, output, lowered: any(word in prompt.lower() for word in words)


def _off_topic(instructions: str, context: str, prompt: str, output: str) -> list:
    """An answer that shares none of the question's key words answers something else."""
    question = _question(prompt)
    if not question.rstrip().endswith("?"):
        return []  # an instruction ("list common words") is answered in words of its own
    if sum(word in ENGLISH_WORDS for word in question.lower().split()) < 2:
        return []  # stems are compared in English only: inflected languages change their endings
    keys = {w[:STEM] for w in WORD.findall(question.lower()) if len(w) >= 4 and w not in COMMON_WORDS}
    if len(keys) < 3 or len(output.split()) < OFF_TOPIC_MIN_WORDS:
        return []
    said = output.lower()
    # a word of the answer starts with the key's stem (a substring test first: most keys are there)
    if any(key in said and re.search(r"(?<![^\W\d_])" + re.escape(key), said) for key in keys):
        return []
    return [("other", OFF_TOPIC, f"the response shares none of the question's key words ({', '.join(sorted(keys)[:4])})")]


def _question(prompt: str) -> str:
    """The prompt's last question sentence (users put context first), or the whole prompt."""
    return last_question(prompt) or prompt


def _json(instructions: str, context: str, prompt: str, output: str) -> list:
    if not ASKS_JSON.search(instructions) or ASKS["yaml"].search(prompt):
        return []
    stripped = output.strip()
    value = _json_value(stripped)
    if value is None:
        inner = _json_value(_unfenced(stripped))
        if inner is None:
            # No JSON at all where only the system prompt asks for it: the response did something
            # else than the task (a deflection, an answer to another question), not a format slip.
            strength = STRONG if ASKS_JSON.search(prompt) or "{" in stripped else WEAK
            return [("format", strength, "JSON asked, the response does not parse as JSON")]
        if FORBIDS_FENCES.search(instructions):
            return [("format", STRONG, "bare JSON asked, the response wraps it in text or fences")]
        value = inner
    schema = _schema_keys(context) or _schema_keys(prompt)
    if schema and isinstance(value, dict):
        extra, missing = sorted(set(value) - schema), sorted(schema - set(value))
        if extra or missing:
            return [("format", STRONG, f"keys outside the schema {extra[:3]} or missing {missing[:3]}")]
    return []


def _requested_structure(instructions: str, context: str, prompt: str, output: str) -> list:
    asked = {name for name, pattern in ASKS.items() if pattern.search(prompt) or (name in ("headings", "numbered") and pattern.search(context))}
    found = []
    if "yaml" in asked and (_json_value(_unfenced(output.strip())) is not None and output.strip()[:1] in "{[`"):
        found.append(("format", STRONG, "YAML asked, the response is JSON"))
    if "csv" in asked and (TABLE_RULE.search(output) or "," not in output):
        found.append(("format", STRONG, "CSV asked, the response is not comma-separated"))
    if "tsv" in asked and "\t" not in output:
        found.append(("format", STRONG, "tab-separated text asked, the response has no tabs"))
    if "table" in asked and not ({"csv", "tsv"} & asked) and not TABLE_RULE.search(output):
        found.append(("format", STRONG, "a table asked, the response has none"))
    if "numbered" in asked and len(NUMBERED_LINE.findall(output)) < 2:
        found.append(("format", STRONG, "a numbered list asked, the response has none"))
    if ONE_BLOCK.search(prompt) and len(FENCE.findall(output)) > 2:
        found.append(("format", STRONG, f"one block asked, the response has {len(FENCE.findall(output)) // 2}"))
    if "headings" in asked and not HEADING_LINE.search(output):
        found.append(("format", MEDIUM, "headings or sections asked, the response has none"))
    return found


def _item_count(instructions: str, context: str, prompt: str, output: str) -> list:
    match = EXACT_COUNT.search(prompt) or EXACTLY_ANY.search(prompt)
    if not match:
        return []
    wanted = _number(match.group(1))
    noun = match.group(2).lower()
    if noun.startswith("sentence") or wanted is None or wanted < 2:
        return []
    got = len(LIST_LINE.findall(output)) or (len([line for line in output.splitlines() if line.strip()]) if noun.startswith("line") else 0)
    if got > wanted:
        return [("format", STRONG, f"{wanted} {noun} asked, the response has {got}")]
    if got == 0 and not noun.startswith(("idea", "name", "way", "thing", "example", "reason", "option", "suggestion", "question")):
        return [("format", STRONG, f"{wanted} {noun} asked, the response has no list")]
    if 0 < got < wanted:
        return [("length", STRONG, f"{wanted} {noun} asked, the response has {got}")]
    return []


def _enumerated_parts(instructions: str, context: str, prompt: str, output: str) -> list:
    """A plan or test file that stops short: "a 5-day plan" answered up to "Day 2", "four test
    cases" answered with one `def test_`."""
    wanted = PARTS_ASKED.search(prompt)
    if not wanted:
        return []
    count, noun = _number(wanted.group(1)), wanted.group(2).lower()
    if count is None or count < 2:
        return []
    if noun.startswith(("test", "case")):
        got = len(re.findall(r"^\s*(?:async\s+)?def test\w*|^\s*(?:it|test)\(", output, re.M))
    else:
        labels = [int(n) for n in re.findall(rf"\b{noun.rstrip('s')}\s+(\d{{1,2}})\b", output, re.I)]
        got = max(labels, default=0)
    if 0 < got < count:
        return [("length", STRONG, f"{count} {noun} asked, the response stops at {got}")]
    return []


PARTS_ASKED = re.compile(rf"\b{_COUNT}[- ](days?|weeks?|steps?|tests?|test cases|cases)\b", re.I)


def _length_limits(instructions: str, context: str, prompt: str, output: str) -> list:
    words = len(output.split())
    asked = prompt.lower()
    limit = WORD_LIMIT.search(prompt) if "word" in asked else None
    if limit and words > 1.5 * int(limit.group(1)):
        return [("length", STRONG, f"at most {limit.group(1)} words asked, the response has {words}")]
    minimum = WORD_MINIMUM.search(prompt) if "word" in asked else None
    if minimum and words < 0.5 * int(minimum.group(1)):
        return [("length", STRONG, f"about {minimum.group(1)} words asked, the response has {words}")]
    sentences = SENTENCE_LIMIT.search(prompt) if "sentence" in asked else None
    if sentences:
        allowed = max(n for n in (_number(sentences.group(1)), _number(sentences.group(2) or "")) if n is not None)
        got = len(SENTENCE_END.findall(_prose(output)))
        if got > max(allowed * 2, allowed + 2):
            return [("length", STRONG, f"{allowed} sentence(s) asked, the response has {got}")]
    chars = (CHAR_LIMIT.search(prompt) if "char" in asked else None) or (CHAR_LIMIT.search(context) if "char" in context.lower() else None)
    if chars:
        cap = int(chars.group(1) or chars.group(2))
        lines = [_item_text(line) for line in output.splitlines() if line.strip()]
        over = [line for line in lines if len(line) > cap]
        if over and len(over) * 2 >= len(lines):
            return [("length", STRONG, f"at most {cap} characters asked, {len(over)} of {len(lines)} lines are longer")]
    quoted = QUOTED.search(prompt) if any(stem in asked for stem in TRANSLATE_STEMS) else None
    if quoted and TRANSLATE.search(prompt):
        source = len(SENTENCE_END.findall(quoted.group(1) + " "))
        got = len(SENTENCE_END.findall(_prose(output) + " "))
        if source >= 3 and got < 0.6 * source:
            return [("length", STRONG, f"{source} sentences to translate, the response has {got}")]
    if words > BRIEF_WORDS and ONE_THING.search(prompt):
        return [("length", MEDIUM, f"a short answer asked, the response has {words} words")]
    return []


# Words no sentence ends on: an answer ending on one was cut off.
DANGLING_WORDS = frozenset(
    "and or but the a an to of with in for from by as that which when if because und oder der die das mit et ou le la les de des y o el los con e il di che en het van met i w z".split()
)


def _field_limits(instructions: str, context: str, prompt: str, output: str) -> list:
    """A JSON field over the word limit the instructions give it ("summary: under 25 words"), or a
    date not in the format they name (YYYY-MM-DD)."""
    value = _json_value(_unfenced(output.strip()))
    if not isinstance(value, dict):
        return []
    for field_name, text in value.items():
        if not isinstance(text, str):
            continue
        limit = re.search(rf"\b{re.escape(str(field_name))}\b[^.\n]{{0,60}}?\b(?:under|at most|max(?:imum)?|no more than|fewer than|less than|up to|within)\s+(\d{{1,4}})\s+words", instructions, re.I)
        if limit and len(text.split()) > 1.5 * int(limit.group(1)):
            return [("length", STRONG, f"'{field_name}' is limited to {limit.group(1)} words, the response's has {len(text.split())}")]
        if ISO_DATE_ASKED.search(instructions) and OTHER_DATE.fullmatch(text.strip()):
            return [("format", STRONG, f"dates as YYYY-MM-DD asked, '{field_name}' is {text.strip()!r}")]
    return []


ISO_DATE_ASKED = re.compile(r"YYYY-MM-DD|ISO[- ]?8601", re.I)
OTHER_DATE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2} \w+ \d{4}|\w+ \d{1,2},? \d{4}")


QUANTITY = re.compile(rf"[$€£]\s?\d+(?:[.,]\d+)?|\b\d+(?:[.,]\d+)?\s?{UNIT}", re.I)


REPEATED_FIGURE = 4  # a dose or a price may well be said three times


def _repetition(instructions: str, context: str, prompt: str, output: str) -> list:
    """Padding: one figure said again and again in prose ("$55 per day" three times over); lists
    and tables repeat values by nature."""
    if not _most_repeated(QUANTITY.findall(output.lower())) >= REPEATED_FIGURE:
        return []
    prose = "\n".join(line for line in _prose(output).splitlines() if not LIST_LINE.match(line) and "|" not in line and "<" not in line)
    if len(prose.split()) < 60:
        return []
    most = _most_repeated(QUANTITY.findall(prose.lower()))
    if most >= REPEATED_FIGURE:
        return [("length", MEDIUM, f"the response repeats one figure {most} times")]
    return []


def _most_repeated(figures: list[str]) -> int:
    normalized = [" ".join(f.split()) for f in figures]
    return max((normalized.count(f) for f in set(normalized)), default=0)


def _cut_off(instructions: str, context: str, prompt: str, output: str) -> list:
    text = output.rstrip()
    last_line = text.splitlines()[-1] if text else ""
    last_word = last_line.split()[-1].lower() if last_line.split() else ""
    if last_word.startswith(("#", "@", "http")):
        return []  # a post ending on its hashtags, a mention or a link
    if len(text) >= 40 and last_word in DANGLING_WORDS:
        return [("length", MEDIUM, f"the response stops on '{last_word}'")]
    if len(last_line) < 40 or FENCE.search(last_line):
        return []
    if LIST_LINE.match(last_line):
        # list items often end without a period; one cut off does when its siblings do not
        siblings = [line.rstrip() for line in text.splitlines()[:-1] if LIST_LINE.match(line) and len(line) >= 40]
        if not siblings or not all(line[-1] in ".!?)" for line in siblings):
            return []
    if text[-1].isalpha() or text[-1] in ",;-–(" or text.endswith(("...", "…")):
        return [("length", MEDIUM, "the response stops mid-sentence")]
    return []


EXTRACTION = re.compile(r"\bnever invent\b|\bdo not invent\b|\bdon't invent\b|\bnot in the (?:document|text|input|receipt|invoice)\b|\bextract(?:ion)?\b", re.I)


def _invented_values(instructions: str, context: str, prompt: str, output: str) -> list:
    """An extraction that returns an identifier the document does not hold: a value made up."""
    if not EXTRACTION.search(context + "\n" + prompt):
        return []
    value = _json_value(_unfenced(output.strip()))
    if not isinstance(value, dict):
        return []
    source = " ".join((context + "\n" + prompt).lower().split())
    for key, text in value.items():
        if isinstance(text, str) and len(text) >= 4 and re.search(r"\d", text) and not ISO_DAY.fullmatch(text.strip()) and " ".join(text.lower().split()) not in source:
            return [("hallucination", MEDIUM, f"'{key}' is {text!r}, which the document does not hold")]
    return []


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


NO_EXCLAMATION = re.compile(r"\bno exclamation (?:marks?|points?)\b|\bnever use exclamation|\bwithout exclamation", re.I)
NO_EMOJI = re.compile(r"\bno emojis?\b|\bwithout emojis?\b|\bnever use emojis?\b", re.I)
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


def _style_rules(instructions: str, context: str, prompt: str, output: str) -> list:
    """A style rule of the instructions the answer breaks (brand voice: no exclamation marks, no emojis)."""
    if NO_EXCLAMATION.search(instructions) and "!" in _prose(output):
        return [("other", MEDIUM, "exclamation marks where the instructions rule them out")]
    if NO_EMOJI.search(instructions) and EMOJI.search(output):
        return [("other", MEDIUM, "emojis where the instructions rule them out")]
    return []


def _budget(instructions: str, context: str, prompt: str, output: str) -> list:
    """A budget the user or the profile gives, and prices in the answer above it."""
    found = BUDGET.search(prompt) or BUDGET.search(context)
    if not found:
        return []
    budget = float(next(g for g in found.groups() if g).replace(",", ""))
    over = [a for a in _amounts(_prose(output)) if a > budget]
    if over:
        return [("other", MEDIUM, f"a budget of {budget:g} given, the response suggests {max(over):g}")]
    return []


def _context_numbers(instructions: str, context: str, prompt: str, output: str) -> list:
    """Numbers with a unit, and currencies, in the answer's prose that the context gives otherwise
    (code computes its own numbers: `interval '6 days'` for the last 7 days)."""
    if not context.strip():
        return []
    output = re.sub(r"`[^`\n]*`", " ", _prose(output))
    given = {unit: set(values) for unit, values in _numbers_with_units(context).items()}
    for unit, values in _numbers_with_units(prompt).items():
        given.setdefault(unit, set()).update(values)
    for value, unit in NUMBER_UNIT.findall(output):
        known = given.get(_unit(unit))
        if known and _plain_number(value) not in known:
            return [("hallucination", WEAK, f"'{value} {unit}' where the context gives {sorted(known)[:3]} {unit}")]  # weak: answers compute new figures
    context_currencies, output_currencies = _currencies(context) | _currencies(prompt), _currencies(output)
    if len(context_currencies) == 1 and output_currencies and not output_currencies & context_currencies:
        return [("hallucination", MEDIUM, f"amounts in {sorted(output_currencies)}, the context uses {sorted(context_currencies)}")]
    return []


def _python_names(instructions: str, context: str, prompt: str, output: str) -> list:
    code = "\n".join(re.findall(r"```(?:python|py)?\n(.*?)```", output, re.S)) or "\n".join(re.findall(r"`([^`\n]+)`", output))
    newer = re.search(r"python\s*3\.(\d+)", output, re.I)
    if newer and int(newer.group(1)) > sys.version_info.minor:
        return []  # names of a newer Python than the one checking them
    for module_name, names in FROM_IMPORT.findall(code):
        module = _stdlib_module(module_name)
        for name in re.findall(r"\w+", names) if module is not None else []:
            if not hasattr(module, name):
                return [("hallucination", STRONG, f"Python's {module_name} has no '{name}'")]
            for call in re.findall(rf"(?<![\w.]){name}(\([^()]*\))", code):
                unknown = _unknown_keywords(getattr(module, name), KEYWORD.findall(call))
                if unknown:
                    return [("hallucination", STRONG, f"{module_name}.{name} takes no argument '{unknown}'")]
    for module_name, attribute, call in PYTHON_CALL.findall(code):
        module = _stdlib_module(module_name)
        if module is None or attribute.startswith("_"):  # private names come and go between versions
            continue
        if not hasattr(module, attribute):
            return [("hallucination", STRONG, f"Python's {module_name} has no attribute '{attribute}'")]
        unknown = _unknown_keywords(getattr(module, attribute), KEYWORD.findall(call))
        if unknown:
            return [("hallucination", STRONG, f"{module_name}.{attribute} takes no argument '{unknown}'")]
    return []


@lru_cache(maxsize=512)
def _stdlib_module(name: str):
    """The standard-library module `name` if it is one and safe to import, else None."""
    if name not in sys.stdlib_module_names or name in UNSAFE_MODULES or name.startswith("_"):
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # a module missing on this platform
        return None


def _unknown_keywords(function: object, keywords: list[str]) -> str | None:
    if not keywords or not callable(function):
        return None
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return next((k for k in keywords if k not in parameters), None)


def _json_value(text: str) -> object | None:
    if not text.startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _unfenced(text: str) -> str:
    """The first fenced block's body, or the text from its first brace (a preamble dropped)."""
    fenced = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.S)
    if fenced:
        return fenced.group(1).strip()
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    return text[start:].strip() if start >= 0 else text


@lru_cache(maxsize=4096)
def _schema_keys(instructions: str) -> frozenset[str] | None:
    """The keys of a JSON object example or schema the instructions show, if any."""
    for candidate in re.findall(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", instructions):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and len(value) >= 2:
            properties = value.get("properties")
            return frozenset(properties) if isinstance(properties, dict) else frozenset(value)
    keys = re.search(r"\bkeys?\b[^.\n:]{0,30}:?\s*((?:`?\"?[a-z_][a-z0-9_]*\"?`?\s*(?:\([^)]*\))?\s*(?:,|and|$)\s*){2,})", instructions, re.I)
    if keys:
        return frozenset(re.findall(r"[a-z_][a-z0-9_]*", re.sub(r"\([^)]*\)|\band\b", " ", keys.group(1))))
    return None


@lru_cache(maxsize=4096)
def _numbers_with_units(text: str) -> dict[str, frozenset[str]]:
    """The numbers a text gives per unit (cached: a system prompt comes with many responses)."""
    given: dict[str, set[str]] = {}
    for value, unit in NUMBER_UNIT.findall(text):
        given.setdefault(_unit(unit), set()).add(_plain_number(value))
    return {unit: frozenset(values) for unit, values in given.items()}


@lru_cache(maxsize=4096)
def _currencies(text: str) -> frozenset[str]:
    found = set()
    for symbol, _, _, code, code2, _ in MONEY.findall(text):
        found.add(CURRENCY_OF[(symbol or code or code2).lower() if not symbol else symbol])
    return frozenset(found)


def _amounts(text: str) -> list[float]:
    values = []
    for _, a, b, _, _, c in MONEY.findall(text):
        try:
            values.append(float((a or b or c).replace(",", "")))
        except ValueError:
            continue
    return values


def _number(text: str) -> int | None:
    text = text.lower().strip()
    if text.isdigit():
        return int(text)
    return NUMBER_WORDS.get(text)


def _plain_number(text: str) -> str:
    return text.replace(",", ".").rstrip("0").rstrip(".") if "." in text or "," in text else text


def _unit(unit: str) -> str:
    unit = unit.lower()
    return {"percent": "%", "per cent": "%"}.get(unit, unit.rstrip("s"))


def _prose(text: str) -> str:
    """The text without fenced code (code has its own periods)."""
    return re.sub(r"```.*?```", " ", text, flags=re.S) if "```" in text else text


def _item_text(line: str) -> str:
    return LIST_PREFIX.sub("", line).strip().strip('"')


DIGIT = re.compile(r"\d")
ITEM_WORDS = ("bullet", "point", "item", "step", "idea", "name", "tip", "option", "question", "example", "reason", "tagline", "headline", "suggestion", "line", "title", "thing", "way")


@lru_cache(maxsize=4096)
def _has_figures(text: str) -> bool:
    """Whether a text gives a number with a unit or an amount (what `_context_numbers` compares)."""
    return bool(_numbers_with_units(text)) or bool(_currencies(text))


STRUCTURE_WORDS = ("yaml", "csv", "tsv", "separated", "delimited", "table", "numbered", "number the", "number each", "heading", "header", "###", "section", "block")
CHECKS: tuple[tuple[Callable, Gate], ...] = (
    (_off_topic, lambda context, prompt, output, lowered: "?" in prompt and output.count(" ") >= OFF_TOPIC_MIN_WORDS - 1),
    (_json, _any("json")),
    (_requested_structure, _any(*STRUCTURE_WORDS)),
    (_item_count, _in_prompt("exactly", *ITEM_WORDS)),
    (_enumerated_parts, _in_prompt("day", "week", "step", "test", "case")),
    (_length_limits, _any(*LENGTH_WORDS)),
    (_field_limits, lambda context, prompt, output, lowered: "{" in output and any(w in lowered for w in ("words", "yyyy", "iso"))),
    (_repetition, lambda context, prompt, output, lowered: output.count(" ") >= 59 and DIGIT.search(output) is not None),
    (_cut_off, lambda context, prompt, output, lowered: True),
    (_style_rules, _any("exclamation", "emoji")),
    (_budget, _any("budget")),
    (_invented_values, lambda context, prompt, output, lowered: "{" in output and any(w in lowered for w in ("invent", "not in the", "extract"))),
    (_context_numbers, lambda context, prompt, output, lowered: DIGIT.search(output) is not None and bool(context.strip()) and (_has_figures(context) or _has_figures(prompt))),
    (_python_names, lambda context, prompt, output, lowered: "`" in output or "import " in output),
)
