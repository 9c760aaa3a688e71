"""A seeded generator of realistic traces and feedback in the landing format, with ground truth.

Sessions have several turns across models and prompt versions. Each response is good or has one
defect (the error mode): a wrong fact, a broken requested format, a refusal, a length far from
what was asked, or an off-topic / wrong-language answer. Users react as they do in products:
thumbs with reason tags and comments, edits that fix the defect, copies, regenerations (a new
trace with the same prompt), rephrased follow-ups and abandoned sessions. Some feedback arrives
days late, some has no trace id, and a known share of rows is broken on purpose.

Ground truth lands next to the data: `ground_truth/traces.jsonl` (mode per trace) and
`ground_truth/bad_rows.jsonl` (every injected bad row and the reason it must be quarantined).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b")
PROMPT_VERSIONS = ("v1", "v2", "v3")
MODES = ("hallucination", "format", "refusal", "length", "other")

# (question, correct answer, wrong answer, topic)
FACTS: tuple[tuple[str, str, str, str], ...] = (
    ("capital of Australia", "Canberra", "Sydney", "Australian geography"),
    ("boiling point of water at sea level in Celsius", "100 degrees", "90 degrees", "basic physics"),
    ("year the Berlin Wall fell", "1989", "1991", "European history"),
    ("chemical symbol for gold", "Au", "Ag", "chemistry"),
    ("number of bones in the adult human body", "206", "212", "human anatomy"),
    ("author of Pride and Prejudice", "Jane Austen", "Charlotte Bronte", "English literature"),
    ("speed of light in vacuum", "299,792 km per second", "186,000 km per second", "physics"),
    ("largest planet in the solar system", "Jupiter", "Saturn", "astronomy"),
    ("default port of PostgreSQL", "5432", "3306", "databases"),
    ("time complexity of binary search", "O(log n)", "O(n log n)", "algorithms"),
    ("first element of the periodic table", "hydrogen", "helium", "chemistry"),
    ("year Python 3.0 was released", "2008", "2010", "programming history"),
    ("tallest mountain above sea level", "Mount Everest", "K2", "world geography"),
    ("HTTP status code for Not Found", "404", "403", "web protocols"),
    ("currency of Japan", "the yen", "the yuan", "economics"),
    ("longest river in Africa", "the Nile", "the Congo", "African geography"),
    ("inventor of the World Wide Web", "Tim Berners-Lee", "Vint Cerf", "computing history"),
    ("freezing point of water in Fahrenheit", "32 degrees", "28 degrees", "basic physics"),
    ("number of players on a football team on the pitch", "11", "12", "sports"),
    ("main gas in Earth's atmosphere", "nitrogen", "oxygen", "earth science"),
    ("default branch name in new GitHub repositories", "main", "trunk", "software tooling"),
    ("primary key constraint in SQL", "a unique, non-null identifier for each row", "an optional index", "databases"),
    ("largest ocean on Earth", "the Pacific Ocean", "the Atlantic Ocean", "world geography"),
    ("number of continents", "7", "6", "world geography"),
)

CONTEXTS = (
    "I'm preparing a short briefing for my {who} and want to double check one detail for the {what}. ",
    "Quick question while I'm writing the {what} for my {who}. ",
    "My {who} asked me to verify this before we publish the {what} tomorrow. ",
    "I'm studying for an exam next week and keep mixing this up; it is for the {what} my {who} set. ",
    "We are building a quiz app for our {who} and need the facts in the {what} to be accurate. ",
    "Context: I'm reviewing the {what} for my {who}, and it mentions this. ",
)
AUDIENCES = (
    "team",
    "manager",
    "students",
    "book club",
    "grandparents",
    "new hires",
    "sales team",
    "class",
    "readers",
    "investors",
    "volunteers",
    "podcast listeners",
    "teaching assistant",
    "editor",
    "study group",
    "kids",
)
DOCUMENTS = (
    "onboarding guide",
    "newsletter",
    "quiz",
    "slide deck",
    "wiki page",
    "lesson plan",
    "blog post",
    "FAQ",
    "trivia night",
    "report",
    "handout",
    "release notes",
    "museum tour script",
    "podcast episode",
)

FILLER = (
    "This is a commonly cited fact and it appears in most standard references.",
    "It is worth noting that sources agree on this point, so you can rely on it.",
    "If you need more detail, an encyclopedia or a textbook covers the background well.",
    "The value has been measured and confirmed many times over the years.",
    "Many people confuse it with a related figure, which is an easy mistake to make.",
    "In practice this matters when you explain the topic to someone new to it.",
    "Keep in mind that context can change how the answer should be phrased.",
    "You can also cross-check it quickly with a second reliable source.",
    "Teachers often use this example because it is easy to remember.",
    "Historically there was some debate, but the consensus is now clear.",
)

REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I'm unable to provide that information.",
    "As an AI language model, I cannot answer this question.",
    "I apologize, but I won't be able to assist with that.",
    "Sorry, I can't provide an answer to this. Is there something else I can help with?",
)

SPANISH = (
    "Lo siento, la respuesta es la siguiente y espero que sea útil para su trabajo.",
    "Según las fuentes habituales, este dato es correcto y se puede verificar fácilmente.",
    "Esta información aparece en la mayoría de las referencias estándar del tema.",
)

OFF_TOPIC = (
    "Here are some general tips for staying productive: take regular breaks and plan your day.",
    "Great question! Many people enjoy learning new things every day, which keeps the mind sharp.",
    "There are many interesting topics to explore, such as cooking, travel and music.",
)

REASON_BY_MODE = {
    "hallucination": "not_factual",
    "format": "formatting",
    "refusal": "refusal",
    "length": "too_long",
    "other": "other",
}

COMMENTS_BY_MODE = {
    "hallucination": (
        "That's wrong, the answer is {correct}.",
        "This is factually incorrect.",
        "No, that's not true. Please check your facts.",
        "Wrong answer, it's {correct}.",
        "That source doesn't exist.",
    ),
    "format": (
        "I asked for JSON and this isn't valid JSON.",
        "Wrong format, please follow the format I asked for.",
        "The output isn't formatted as requested.",
        "Broken formatting, can't parse this.",
    ),
    "refusal": (
        "Why won't you answer? This is a harmless question.",
        "Stop refusing, just answer the question.",
        "You refused a perfectly normal request.",
        "Why can't you help with this?",
    ),
    "length": (
        "Way too long, I asked for a short answer.",
        "Too verbose. Keep it brief.",
        "I said in a few words, this is far too long.",
        "Too long, please be concise.",
    ),
    "other": (
        "This doesn't answer my question at all.",
        "Not what I asked.",
        "Irrelevant answer.",
        "Why is this in Spanish? I asked in English.",
    ),
}

PII_SNIPPETS = (
    " You can reach me at jane.doe{n}@example.com if needed.",
    " My phone number is +1 415-555-{n:04d}, call me.",
    " Our CI token is ghp_{n:04d}abcdefghijklmnopqrstuvwxyz012345, don't share it.",
    " The AWS key AKIAIOSFODNN{n:04d}XQ leaked in the logs.",
    " The server is at 10.20.{a}.{b} behind the VPN.",
)


@dataclass
class GeneratorConfig:
    """What to generate. `end_date` is the last day (default: yesterday, UTC)."""

    days: int = 7
    traces_per_day: int = 200
    seed: int = 0
    end_date: dt.date | None = None
    bad_row_share: float = 0.02
    late_share: float = 0.05
    missing_trace_id_share: float = 0.15
    bad_response_share: float = 0.3
    prompt_chars: int = 300
    output_chars: int = 800
    file_format: str = "jsonl"
    extra_events_per_trace: float = 0.0  # top-up copies/ratings so large runs reach ~3 events per trace
    users: int = 0  # 0 = about one user per 5 sessions


@dataclass
class Generated:
    traces: list[dict] = field(default_factory=list)
    feedback: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    bad_rows: list[dict] = field(default_factory=list)


def generate(out_dir: str | Path, config: GeneratorConfig) -> dict:
    """Write `config.days` days of landing data under `out_dir`; return a summary of what was written."""
    out = Path(out_dir)
    end = config.end_date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    rng = random.Random(config.seed)
    summary = {"traces": 0, "feedback": 0, "bad_rows": 0, "days": []}
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    truth_file = (out / "ground_truth" / "traces.jsonl").open("w")
    bad_file = (out / "ground_truth" / "bad_rows.jsonl").open("w")
    late: dict[dt.date, list[dict]] = {}
    for offset in range(config.days - 1, -1, -1):
        day = end - dt.timedelta(days=offset)
        data = simulate_day(day, config, rng)
        events_by_day: dict[dt.date, list[dict]] = {}
        for event in data.feedback:
            event_day = dt.datetime.fromisoformat(event["timestamp"]).date() if event.get("timestamp") else day
            events_by_day.setdefault(event_day, []).append(event)
        for event_day, events in events_by_day.items():
            if event_day != day:
                late.setdefault(event_day, []).extend(events)
        todays_events = events_by_day.get(day, []) + late.pop(day, [])
        _write(out / "traces", f"traces-{day.isoformat()}", data.traces, config.file_format)
        lines = _write(out / "feedback", f"feedback-{day.isoformat()}", todays_events, config.file_format)
        bad = _inject_bad_rows(out / "feedback" / f"feedback-{day.isoformat()}-bad.jsonl", day, config, rng, lines)
        for row in data.truth:
            truth_file.write(json.dumps(row) + "\n")
        for row in bad:
            bad_file.write(json.dumps(row) + "\n")
        summary["traces"] += len(data.traces)
        summary["feedback"] += len(todays_events)
        summary["bad_rows"] += len(bad)
        summary["days"].append(day.isoformat())
    for event_day, events in sorted(late.items()):  # late events beyond the last day
        _write(out / "feedback", f"feedback-{event_day.isoformat()}", events, config.file_format)
        summary["feedback"] += len(events)
    truth_file.close()
    bad_file.close()
    (out / "ground_truth" / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def simulate_day(day: dt.date, config: GeneratorConfig, rng: random.Random) -> Generated:
    """Simulate the sessions of one day."""
    data = Generated()
    n_users = config.users or max(3, config.traces_per_day // 15)
    day_start = dt.datetime.combine(day, dt.time(), dt.UTC)
    day_tag = day.strftime("%Y%m%d")
    session_no = 0
    while len(data.traces) < config.traces_per_day:
        session_no += 1
        user = f"user-{rng.randrange(n_users):05d}"
        session = f"s-{day_tag}-{config.seed}-{session_no:07d}"
        start = day_start + dt.timedelta(seconds=rng.uniform(0, 22 * 3600))
        _simulate_session(data, session, user, start, config, rng, config.traces_per_day - len(data.traces))
    return data


def _simulate_session(data: Generated, session: str, user: str, start: dt.datetime, config: GeneratorConfig, rng: random.Random, budget: int) -> None:
    model = rng.choice(MODELS)
    version = rng.choice(PROMPT_VERSIONS)
    turns = rng.choice((1, 1, 2, 2, 3, 4))
    clock = start
    history: list[dict] = []
    pending_rephrase: tuple | None = None
    facts = rng.sample(FACTS, turns)  # a session does not ask the same thing twice unless rephrasing
    for turn in range(turns):
        if budget <= 0:
            return
        fact = pending_rephrase[0] if pending_rephrase else facts[turn]
        kind = pending_rephrase[1] if pending_rephrase else rng.choice(("plain", "plain", "json", "bullets", "brief", "words"))
        prompt = _prompt(fact, kind, rng, rephrased=pending_rephrase is not None, first_turn=turn == 0, config=config)
        pending_rephrase = None
        previous_id: str | None = None
        while True:  # one iteration per (re)generated response to this prompt
            mode = _pick_mode(model, version, config, rng)
            trace = _trace(data, session, user, clock, model, version, prompt, history, fact, kind, mode, config, rng)
            budget -= 1
            clock = trace["_end"]
            if previous_id:
                data.truth[-1]["regenerated_from"] = previous_id
            outcome = _feedback(data, trace, fact, kind, mode, config, rng)
            data.truth[-1]["next_action"] = outcome
            clock += dt.timedelta(seconds=rng.uniform(5, 60))
            if outcome == "regenerate" and budget > 0:
                _event(data, trace, "regenerate", clock - dt.timedelta(seconds=2), config, rng)
                previous_id = trace["trace_id"]
                continue
            break
        history = [{"role": "user", "content": prompt}, {"role": "assistant", "content": trace["output"][:300]}]
        if outcome == "abandon":
            return
        if outcome == "rephrase":
            pending_rephrase = (fact, kind)
        clock += dt.timedelta(seconds=rng.uniform(20, 240))
    return


def _pick_mode(model: str, version: str, config: GeneratorConfig, rng: random.Random) -> str | None:
    share = config.bad_response_share * (1.3 if model == "llama-3.1-70b" else 1.0) * (0.7 if version == "v3" else 1.0)
    if rng.random() >= share:
        return None
    weights = (0.3, 0.2, 0.15, 0.15, 0.2) if version != "v1" else (0.3, 0.3, 0.1, 0.15, 0.15)
    return rng.choices(MODES, weights=weights)[0]


def _prompt(fact: tuple, kind: str, rng: random.Random, rephrased: bool, first_turn: bool, config: GeneratorConfig) -> str:
    """The user's message: context and question on a session's first turn, a short follow-up after."""
    question, _, _, topic = fact
    ask = (
        rng.choice(("Let me rephrase: what exactly is the {q}?", "I meant: tell me the {q}, please.", "No, I asked for the {q}."))
        if rephrased
        else rng.choice(("What is the {q}?", "Can you tell me the {q}?", "Do you know the {q}?"))
    ).format(q=question)
    if kind == "json":
        ask += ' Return only JSON with keys "answer" and "explanation".'
    elif kind == "bullets":
        ask += " Answer in exactly 3 bullet points."
    elif kind == "brief":
        ask += " Answer briefly, in one sentence."
    elif kind == "words":
        ask += " Answer in at most 30 words."
    if rng.random() < 0.03:
        template = rng.choice(PII_SNIPPETS)
        ask += template.format(n=rng.randrange(10**4), a=rng.randrange(256), b=rng.randrange(256))
    if not first_turn:
        return ask if rephrased else rng.choice(("Another question. ", "Thanks. Next: ", "")) + ask
    context = rng.choice(CONTEXTS).format(who=rng.choice(AUDIENCES), what=rng.choice(DOCUMENTS)) + f"This is about {topic}. "
    return _pad(context + ask, rng.gauss(config.prompt_chars, config.prompt_chars * 0.2) - len(context + ask), rng, prefix=True)


def _pad(text: str, extra: float, rng: random.Random, prefix: bool = False) -> str:
    """Grow `text` by roughly `extra` characters of context sentences."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < extra:
        parts.append(rng.choice(CONTEXTS).format(who=rng.choice(AUDIENCES), what=rng.choice(DOCUMENTS)).strip() if prefix else rng.choice(FILLER))
    if not parts:
        return text
    return " ".join(parts) + " " + text if prefix else text + " " + " ".join(parts)


def _answer(fact: tuple, kind: str, mode: str | None, config: GeneratorConfig, rng: random.Random) -> str:
    question, correct, wrong, topic = fact
    value = wrong if mode == "hallucination" else correct
    target = max(60.0, rng.gauss(config.output_chars, config.output_chars * 0.25))
    if kind in ("brief", "words"):
        target = 60.0
    if mode == "refusal":
        return rng.choice(REFUSALS)
    if mode == "other":
        if rng.random() < 0.5:
            return " ".join(rng.sample(SPANISH, 3))
        return _pad(rng.choice(OFF_TOPIC), target * 0.5, rng)
    if mode == "length":
        target = max(target, 1500.0) * 2
    sentence = f"The {question} is {value}."
    if mode == "hallucination" and rng.random() < 0.4:
        sentence += f" This is confirmed by the {topic.title()} Review, volume {rng.randrange(10, 99)}."
    if kind == "json":
        body = json.dumps({"answer": value, "explanation": _pad(sentence, target - 120, rng)})
        if mode == "format":
            body = rng.choice((f"Sure! Here is the answer: {value}. " + _pad(sentence, target - 150, rng), body[:-2]))
        elif mode == "length":
            body = json.dumps({"answer": value, "explanation": _pad(sentence, target, rng)})
        return body
    if kind == "bullets":
        bullets = [f"- {sentence}", f"- {rng.choice(FILLER)}", f"- {rng.choice(FILLER)}"]
        if mode == "format":
            return _pad(sentence, target - 100, rng)
        text = "\n".join(bullets)
        return _pad(text, target - len(text), rng) if mode == "length" else text
    if mode == "format":
        return "```\n" + _pad(sentence, target - 60, rng) + "\n```\n| answer |\n|---|\n| " + value
    if kind in ("brief", "words") and mode != "length":
        return sentence
    return _pad(sentence, target - len(sentence), rng)


def _trace(
    data: Generated,
    session: str,
    user: str,
    clock: dt.datetime,
    model: str,
    version: str,
    prompt: str,
    history: list[dict],
    fact: tuple,
    kind: str,
    mode: str | None,
    config: GeneratorConfig,
    rng: random.Random,
) -> dict:
    trace_id = f"tr-{rng.getrandbits(64):016x}"
    output = _answer(fact, kind, mode, config, rng)
    latency = rng.lognormvariate(7.0, 0.5)
    use_messages = history or rng.random() < 0.3
    trace = {
        "trace_id": trace_id,
        "span_id": f"sp-{trace_id[3:]}",
        "session_id": session,
        "user_id": user,
        "timestamp": _iso(clock),
        "model": model,
        "prompt_version": version,
        "input": ([{"role": "system", "content": f"You are a helpful assistant ({version})."}] + history + [{"role": "user", "content": prompt}]) if use_messages else prompt,
        "output": output,
        "latency_ms": round(latency, 1),
        "input_tokens": len(prompt) // 4,
        "output_tokens": len(output) // 4,
        "metadata": {"environment": "production", "request_kind": kind},
    }
    if rng.random() < 0.02:
        trace["client_version"] = "web-2.3.1"  # a field outside the contract: must land in metadata
    data.traces.append(trace)
    data.truth.append(
        {
            "trace_id": trace_id,
            "date": clock.date().isoformat(),
            "session_id": session,
            "model": model,
            "prompt_version": version,
            "request_kind": kind,
            "mode": mode or "none",
            "sub_mode": _sub_mode(mode, output),
            "regenerated_from": None,
        }
    )
    trace["_end"] = clock + dt.timedelta(milliseconds=latency)
    return trace


def _sub_mode(mode: str | None, output: str) -> str | None:
    if mode != "other":
        return None
    return "wrong_language" if output.startswith(("Lo siento", "Según", "Esta")) else "off_topic"


def _feedback(data: Generated, trace: dict, fact: tuple, kind: str, mode: str | None, config: GeneratorConfig, rng: random.Random) -> str:
    """Emit the user's reactions to one response; return what the user does next."""
    t = trace["_end"]
    truth = data.truth[-1]
    signals: list[str] = []
    if mode is None:
        if rng.random() < 0.25:
            _event(data, trace, "thumbs_up", t + _secs(rng, 3, 40), config, rng)
            signals.append("thumbs_up")
        if rng.random() < 0.35:
            full = rng.random() < 0.6
            text = trace["output"] if full else trace["output"][: max(20, len(trace["output"]) // 3)]
            _event(data, trace, "copy", t + _secs(rng, 2, 30), config, rng, value=text)
            signals.append("copy")
        if rng.random() < 0.05:
            edited = trace["output"].replace(".", "!", 1) if rng.random() < 0.5 else trace["output"] + " Thanks."
            _event(data, trace, "edit", t + _secs(rng, 10, 90), config, rng, value=edited)
            signals.append("edit")
        if rng.random() < 0.08:
            _event(data, trace, "rating", t + _secs(rng, 5, 60), config, rng, value=rng.choice((4, 5)))
            signals.append("rating")
        _top_up(data, trace, t, config, rng)
        truth["signals"] = signals
        return "continue"
    question, correct, wrong, topic = fact
    if rng.random() < 0.6:
        reason = REASON_BY_MODE[mode] if rng.random() < 0.55 else None
        comment = rng.choice(COMMENTS_BY_MODE[mode]).format(correct=correct) if rng.random() < 0.4 else None
        if mode == "other" and comment and "Spanish" in comment and truth["sub_mode"] != "wrong_language":
            comment = "Not what I asked."
        _event(data, trace, "thumbs_down", t + _secs(rng, 3, 40), config, rng, reason=reason, comment=comment)
        signals.append("thumbs_down")
    if rng.random() < 0.3:
        fixed = _fix(trace["output"], fact, kind, mode, config, rng)
        etype = "correction" if rng.random() < 0.3 else "edit"
        _event(data, trace, etype, t + _secs(rng, 20, 180), config, rng, value=fixed)
        signals.append(etype)
    if rng.random() < 0.05:
        _event(data, trace, "rating", t + _secs(rng, 5, 60), config, rng, value=rng.choice((1, 2)))
        signals.append("rating")
    _top_up(data, trace, t, config, rng)
    truth["signals"] = signals
    roll = rng.random()
    if roll < 0.3:
        return "regenerate"
    if roll < 0.45:
        return "rephrase"
    if roll < 0.6:
        if rng.random() < 0.5:
            _event(data, trace, "abandon", t + _secs(rng, 30, 300), config, rng)
        return "abandon"
    return "continue"


def _fix(output: str, fact: tuple, kind: str, mode: str, config: GeneratorConfig, rng: random.Random) -> str:
    """The user's edit that repairs the defect."""
    question, correct, wrong, topic = fact
    if mode == "hallucination":
        return output.replace(wrong, correct)
    if mode == "length":
        short = f"The {question} is {correct}."
        if kind == "json":
            return json.dumps({"answer": correct, "explanation": short})
        return f"- {short}\n- {FILLER[0]}\n- {FILLER[1]}" if kind == "bullets" else short
    if mode == "format":
        if kind == "json":
            return json.dumps({"answer": correct, "explanation": f"The {question} is {correct}."})
        return f"- The {question} is {correct}.\n- {FILLER[0]}\n- {FILLER[1]}"
    if mode == "refusal":
        return f"The {question} is {correct}. {rng.choice(FILLER)}"
    return f"The {question} is {correct}."


def _top_up(data: Generated, trace: dict, t: dt.datetime, config: GeneratorConfig, rng: random.Random) -> None:
    """Extra neutral events (snippet copies, re-sent duplicates) for production-scale volumes."""
    extra = config.extra_events_per_trace
    while extra > 0:
        if rng.random() < min(extra, 1.0):
            snippet = trace["output"][: rng.randrange(20, 120)]
            _event(data, trace, "copy", t + _secs(rng, 5, 600), config, rng, value=snippet)
        extra -= 1


def _event(
    data: Generated,
    trace: dict,
    etype: str,
    when: dt.datetime,
    config: GeneratorConfig,
    rng: random.Random,
    value: object = None,
    reason: str | None = None,
    comment: str | None = None,
) -> None:
    if etype != "regenerate" and rng.random() < config.late_share:
        when += dt.timedelta(days=rng.randint(1, 3))
    event = {
        "event_id": f"ev-{rng.getrandbits(64):016x}",
        "trace_id": trace["trace_id"],
        "span_id": trace["span_id"],
        "session_id": trace["session_id"],
        "user_id": trace["user_id"],
        "timestamp": _iso(when),
        "type": etype,
    }
    if rng.random() < config.missing_trace_id_share and when.date() == trace["_end"].date():
        del event["trace_id"], event["span_id"]  # resolved later by session + time
    if value is not None:
        event["value"] = value
    if reason:
        event["reason"] = reason
    if comment:
        event["comment"] = comment
    data.feedback.append(event)


def _inject_bad_rows(path: Path, day: dt.date, config: GeneratorConfig, rng: random.Random, good_rows: int) -> list[dict]:
    """Append broken feedback rows of every kind; return their ground truth."""
    n = max(5, int(good_rows * config.bad_row_share))
    noon = _iso(dt.datetime.combine(day, dt.time(12), dt.UTC))
    kinds = ("malformed JSON", "missing timestamp", "unknown event type", "not valid UTF-8", "orphan")
    truth = []
    with path.open("wb") as fh:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            event_id = f"bad-{day.strftime('%Y%m%d')}-{i:05d}"
            if kind == "malformed JSON":
                line = f'{{"event_id": "{event_id}", "type": "thumbs_up", "timestamp": "{noon}"'.encode()
            elif kind == "missing timestamp":
                line = json.dumps({"event_id": event_id, "type": "thumbs_up", "session_id": "s-x"}).encode()
            elif kind == "unknown event type":
                line = json.dumps({"event_id": event_id, "type": "share", "timestamp": noon, "session_id": "s-x"}).encode()
            elif kind == "not valid UTF-8":
                line = b'{"event_id": "' + event_id.encode() + b'", "comment": "caf\xe9", "timestamp": "' + noon.encode() + b'"}'
            else:
                line = json.dumps({"event_id": event_id, "type": "thumbs_down", "timestamp": noon, "trace_id": f"tr-missing-{i}", "session_id": f"s-missing-{i}"}).encode()
            fh.write(line + b"\n")
            truth.append({"event_id": event_id, "date": day.isoformat(), "kind": kind})
    return truth


def _write(folder: Path, stem: str, rows: list[dict], file_format: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    if file_format == "parquet":
        rows = [_flat_for_parquet(r) for r in clean]
        keys = list(dict.fromkeys(k for r in rows for k in r))  # every field, not just the first row's
        pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys}), folder / f"{stem}.parquet")
    else:
        with (folder / f"{stem}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in clean)
    return len(clean)


def _flat_for_parquet(row: dict) -> dict:
    """Parquet wants one type per column: JSON-encode the objects and mixed-type values."""
    out = dict(row)
    for key in ("metadata",):
        if key in out:
            out[key] = json.dumps(out[key])
    if "value" in out:
        out["value"] = str(out["value"])
    if isinstance(out.get("input"), str):
        out["input"] = [{"role": "user", "content": out["input"]}]
    return out


def _secs(rng: random.Random, low: float, high: float) -> dt.timedelta:
    return dt.timedelta(seconds=rng.uniform(low, high))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
