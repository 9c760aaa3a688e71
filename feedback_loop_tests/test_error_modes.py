"""Error modes: evidence rules, the refusal detector, the classifier, and stable cluster ids."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from feedback_loop.lib.days import days_ending
from feedback_loop.lib.error_modes.assign import assign_error_modes, assign_error_modes_by_day, negative_traces, rule_modes
from feedback_loop.lib.error_modes.clusters import cluster_negatives, cluster_negatives_by_day
from feedback_loop.lib.error_modes.instructions import findings
from feedback_loop.lib.error_modes.refusal import is_refusal
from feedback_loop.lib.error_modes.rules import (
    comment_mode,
    edit_mode,
    reason_tag_mode,
    response_votes,
)
from feedback_loop.lib.error_modes.taxonomy import TAXONOMY_V1
from feedback_loop.pipeline import run_nightly
from feedback_loop_tests.conftest import defs_with


def s(*values):
    return pd.Series(list(values), dtype="string")


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I'm sorry, but I can't help with that request.", True),
        ("Sorry, I cannot provide that.", True),
        ("I cannot provide instructions for building weapons.", True),
        ("It's understandable that you're worried, but I won't be able to assist with this.", True),
        ("As an AI language model, I cannot share personal opinions on that.", True),
        ("I don't think it's appropriate to rank people by their nationality.", True),
        ("That request goes against my guidelines.", True),
        ("No, I will not write that.", True),
        ("I'm sorry to hear about your loss. Here are some steps that can help you cope:", False),
        ("As an AI, I understand this may be a joke. Teapots are objects and cannot vote.", False),
        ("The capital of Australia is Canberra.", False),
        ("You cannot divide by zero; the result is undefined, so check the denominator first.", False),
        ("", False),
    ],
)
def test_refusal_detector(text, refusal):
    assert bool(is_refusal(s(text))[0]) is refusal


def test_reason_tags_map_to_modes_and_other_tags_say_nothing():
    modes, evidence = reason_tag_mode(s("not_factual", "other,too_long", "other", None, "formatting"))
    assert modes.tolist()[:2] == ["hallucination", "length"]
    assert pd.isna(modes[2]) and pd.isna(modes[3])
    assert modes[4] == "format" and evidence[4] == "reason tag 'formatting'"


def test_comments_map_to_modes_in_several_languages():
    modes, _ = comment_mode(
        s(
            "That's wrong, it's Canberra.",
            "Wrong format, I asked for JSON",
            "Way too long",
            "Why won't you answer?",
            "Not what I asked.",
            "meh",
            None,
            "Das gibt es nicht, die Funktion heißt anders",
            "zu lang, ich wollte nur die Zahl",
            "ik vroeg om een tabel",
            "não é o que eu pedi",
            "the handbook says 12 weeks, not 8",
            "where did that fee come from?",
            "the loop never ends on an empty list",
        )
    )
    assert modes.tolist()[:5] == ["hallucination", "format", "length", "refusal", "other"]
    assert modes[5:7].isna().all()
    assert modes[7:].tolist() == ["hallucination", "length", "format", "other", "hallucination", "hallucination", "other"]


def test_edits_reveal_facts_cuts_and_structure():
    outputs = s(
        "The Berlin Wall fell in 1991, which ended the division of the city.",
        "The capital of Australia is Sydney, a large coastal city.",
        "Paris is the capital of France. " * 20,
        '{"answer": "7"',
        "Here are some tips for staying productive: plan your day and take breaks. " * 4,
    )
    edits = s(
        "The Berlin Wall fell in 1989, which ended the division of the city.",
        "The capital of Australia is Canberra, a large coastal city.",
        "Paris is the capital of France.",
        '{"answer": "7"}',
        "The number of continents is 7.",
    )
    modes, evidence = edit_mode(outputs, edits)
    assert modes.tolist()[:4] == ["hallucination", "hallucination", "length", "format"]
    assert "1991" in evidence[0] and "Sydney" in evidence[1]
    assert pd.isna(modes[4])  # a rewrite that keeps none of the words is not a cut


def strongest_votes(inputs: pd.Series, prompts: pd.Series, outputs: pd.Series) -> pd.DataFrame:
    """Each response's strongest vote (mode, strength, evidence), by row; rows without a vote are absent."""
    n = len(outputs)
    votes = response_votes(inputs, prompts, outputs, pd.Series([1.0] * n), pd.Series([False] * n))
    return votes.sort_values("strength", ascending=False, kind="stable").drop_duplicates("row").set_index("row")


def test_response_votes_check_what_the_prompt_and_system_prompt_asked():
    system = json.dumps([{"role": "system", "content": 'Reply with JSON only, no code fences: {"answer": "...", "source": "..."}'}, {"role": "user", "content": "q"}])
    inputs = s(system, system, "q", "q", "q", "q", "q", "q", "q", "q")
    prompts = s(
        "What is it?",
        "What is it?",
        "Answer in exactly 3 bullet points.",
        "Answer in at most 30 words.",
        "Briefly, what is it?",
        "What is the capital of France?",
        "Can you help me?",
        "What is the capital city of Australia? Return JSON.",
        "Is the capital of Australia Sydney?",
        "Give me 5 tips for sleeping better.",
    )
    outputs = s(
        '```json\n{"answer": "7", "source": "manual"}\n```',
        '{"answer": "7", "source": "manual", "confidence": 0.9}',
        "- one\n- two\n- three\n- four",
        "word " * 80,
        "word " * 90,
        "Paris.",
        "I'm sorry, but I can't help with that.",
        "Lo siento, la respuesta es la siguiente y espero que sea útil para usted.",
        "No, the capital of Australia is Canberra.",
        "- Keep a schedule.\n- Avoid screens.",
    )
    best = strongest_votes(inputs, prompts, outputs)
    assert best.loc[0, "mode"] == "format" and "fences" in best.loc[0, "evidence"]
    assert best.loc[1, "mode"] == "format" and "confidence" in best.loc[1, "evidence"]
    assert best.loc[2, "mode"] == "format" and "3 bullet points asked, the response has 4" in best.loc[2, "evidence"]
    assert best.loc[3, "mode"] == "length" and best.loc[4, "mode"] == "length"
    assert 5 not in best.index and 8 not in best.index  # "No, …" answers a yes/no question
    assert best.loc[6, "mode"] == "refusal"
    assert best.loc[7, "mode"] == "other" and best.loc[7, "evidence"] == "response in 'es', prompt in 'en'"  # outranks the broken JSON
    assert best.loc[9, "mode"] == "length" and "5 tips asked, the response has 2" in best.loc[9, "evidence"]


def test_a_response_check_outweighs_a_reason_tag_users_clicked_at_random():
    frame = pd.DataFrame(
        {
            "trace_id": ["a", "b"],
            "reason_tags": ["too_long", "not_factual"],
            "comments": [None, None],
            "edit_text": [None, None],
            "input": ["q", "q"],
            "prompt": ["List exactly 3 colours.", "What is the capital of Peru?"],
            "output": ["1. red\n2. green\n3. blue\n4. white\n5. black", "Lima is the capital of Peru."],
            "peer_length_ratio": [1.0, 1.0],
            "peer_length_outlier": [False, False],
        }
    )
    decided = rule_modes(frame)
    assert decided["mode"].tolist() == ["format", "hallucination"]
    assert decided["source"].tolist() == ["response", "reason_tag"]
    assert "reason tag" not in decided["evidence"][0]


def negatives_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    kinds = ["hallucination", "format", "refusal", "length"]
    rows = []
    for i in range(n):
        kind = kinds[i % 4]
        tagged = i % 3 != 0
        rows.append(
            {
                "trace_id": f"t{i}",
                "model": "m",
                "prompt_version": "v1",
                "partition_date": "2026-11-20",
                "reason_tags": {"hallucination": "not_factual", "format": "formatting", "refusal": "refusal", "length": "too_long"}[kind] if tagged else None,
                "comments": None,
                "edit_text": None,
                "input": f"question {i} about {kind} topic",
                "prompt": f"question {rng.integers(1000)} about {kind} topic",
                "output": {"hallucination": "The wall fell in 1991 per the Review.", "format": "Sure! here it is not json", "refusal": "Absolutely not something I do.", "length": "long " * 50}[kind],
                "peer_length_ratio": 1.0,
                "peer_length_outlier": False,
            }
        )
    return pd.DataFrame(rows)


def test_classifier_labels_unexplained_negatives_deterministically():
    frame = negatives_frame(120)
    first, validation = assign_error_modes(frame, seed=3)
    second, _ = assign_error_modes(frame, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert validation.trained and validation.macro_f1 is not None
    untagged = first[frame["reason_tags"].isna().to_numpy()]
    assert (untagged["evidence_source"] == "classifier").mean() > 0.5
    assert untagged["evidence_source"].isin(["classifier", "response"]).all()
    truth = frame.loc[frame["reason_tags"].isna(), "trace_id"].map(lambda t: ["hallucination", "format", "refusal", "length"][int(t[1:]) % 4])
    assert (untagged["mode"].to_numpy() == truth.to_numpy()).mean() > 0.9
    assert set(first["mode_id"]) <= set(TAXONOMY_V1.ids().values())


def test_worker_processes_give_the_same_classifier_and_edit_evidence(monkeypatch):
    from feedback_loop.lib.error_modes import classifier, rules

    frame = negatives_frame(120)
    frame["edit_text"] = [None if i % 3 else f"The wall fell in {1900 + i} per the Review." for i in range(len(frame))]
    serial, serial_validation = assign_error_modes(frame, seed=3)
    monkeypatch.setattr(classifier, "HASH_SLICE", 7)
    monkeypatch.setattr(rules, "PARALLEL_MIN_EDITS", 2)
    parallel, parallel_validation = assign_error_modes(frame, seed=3)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial_validation == parallel_validation and (serial["evidence_source"] == "edit").any()


def test_no_evidence_and_no_classifier_means_other():
    frame = negatives_frame(4).assign(reason_tags=None, output="fine text")
    modes, validation = assign_error_modes(frame)
    assert not validation.trained
    assert modes["mode"].tolist() == ["other"] * 4 and (modes["mode_id"] == "EM-999").all()


def test_negative_traces_flag_far_out_lengths():
    traces = pd.DataFrame({"trace_id": [f"t{i}" for i in range(30)], "model": "m", "prompt_version": "v", "input": None, "prompt": "p", "output": ["x" * 100] * 29 + ["x" * 5000]})
    labels = pd.DataFrame({"trace_id": ["t0", "t29"], "label": ["negative", "negative"]})
    out = negative_traces(labels, traces).set_index("trace_id")
    assert out.loc["t29", "peer_length_outlier"] and not out.loc["t0", "peer_length_outlier"]
    assert out.loc["t29", "peer_length_ratio"] == 50.0


def test_negative_traces_from_the_negatives_texts_and_every_length_are_the_same():
    traces = pd.DataFrame(
        {"trace_id": [f"t{i}" for i in range(40)], "model": ["m", "n"] * 20, "prompt_version": "v", "input": None, "prompt": "p", "output": ["x" * (50 + i * 7) for i in range(39)] + ["x" * 9000]}
    )
    traces = pd.concat([traces.assign(output="first span"), traces], ignore_index=True)  # two spans each: the last is the response
    labels = pd.DataFrame({"trace_id": ["t3", "t39", "t8"], "label": ["negative", "negative", "positive"]})
    lengths = traces[["trace_id", "model", "prompt_version"]].assign(output_length=traces["output"].str.len().astype("Int64"))
    texts = traces[traces["trace_id"].isin(["t3", "t39"])]
    pd.testing.assert_frame_equal(negative_traces(labels, texts, lengths), negative_traces(labels, traces))
    assert negative_traces(labels, texts, lengths).set_index("trace_id").loc["t39", "peer_length_outlier"]


def cluster_frame() -> pd.DataFrame:
    spanish = ["Lo siento, la respuesta es la siguiente y espero que sea útil para su trabajo."] * 15
    offtopic = ["Here are some general tips for staying productive: take breaks and plan your day."] * 15
    return pd.DataFrame({"trace_id": [f"t{i}" for i in range(30)], "partition_date": "2026-11-20", "mode": "other", "comments": None, "output": spanish + offtopic})


def test_clusters_separate_new_modes_and_keep_ids_across_runs():
    first = cluster_negatives(cluster_frame(), {}, today="2026-11-20")
    assert sorted(first.clusters["size"]) == [15, 15]
    by_trace = first.assignments.set_index("trace_id")["cluster_id"]
    assert by_trace["t0"] != by_trace["t29"]
    assert set(first.clusters["status"]) == {"new"}
    second = cluster_negatives(cluster_frame().iloc[::-1].reset_index(drop=True), first.registry, today="2026-11-21")
    again = second.assignments.set_index("trace_id")["cluster_id"]
    assert again["t0"] == by_trace["t0"] and again["t29"] == by_trace["t29"]
    assert set(second.clusters["status"]) == {"tracked"}
    assert second.registry["clusters"][by_trace["t0"]]["first_seen"] == "2026-11-20"


def test_a_cluster_without_terms_keeps_its_id_and_a_rerun_leaves_the_registry_as_it_was():
    wordless = pd.DataFrame({"trace_id": [f"w{i}" for i in range(12)], "partition_date": "2026-11-20", "mode": "other", "comments": None, "output": [f"{i} ?!" for i in range(12)]})
    first = cluster_negatives(wordless, {}, today="2026-11-20")
    assert first.clusters["top_terms"].tolist() == [""]
    again = cluster_negatives(wordless, first.registry, today="2026-11-20")
    assert again.clusters["cluster_id"].tolist() == first.clusters["cluster_id"].tolist()
    assert again.registry == first.registry


def test_small_groups_are_not_clustered():
    assert cluster_negatives(cluster_frame().head(5), {}).assignments.empty


def test_error_mode_assets_on_generated_data(resources, generated):
    defs = defs_with(resources)
    instance = dg.DagsterInstance.ephemeral()
    for day in ("2026-11-18", "2026-11-19", "2026-11-20"):
        report = run_nightly(day, instance, defs)
        assert report.success and "checks failed" not in report.summary_line()
    warehouse = resources["io_manager"]
    modes = pd.concat(pd.read_parquet(warehouse.path_for(dg.AssetKey("error_modes"), d).path) for d in ("2026-11-18", "2026-11-19", "2026-11-20"))
    truth = pd.DataFrame([json.loads(line) for line in (generated / "ground_truth" / "traces.jsonl").read_text().splitlines()])
    merged = modes.merge(truth[["trace_id", "mode"]].rename(columns={"mode": "true"}), on="trace_id")
    bad = merged[merged["true"] != "none"]
    assert (bad["mode"] == bad["true"]).mean() >= 0.75  # the full evaluation is evaluation/error_modes.py
    clusters = pd.read_parquet(warehouse.path_for(dg.AssetKey("error_mode_clusters"), "2026-11-20").path)
    assert set(clusters["trace_id"]) <= set(modes["trace_id"])
    snapshots = sorted(Path(resources["cluster_registry"].folder).glob("*.json"))
    assert [p.stem for p in snapshots] == days_ending("2026-11-20", 9)  # one per trace day of the nights' windows
    assert json.loads(snapshots[-1].read_text())["clusters"]


def test_all_negatives_explained_by_rules_leaves_nothing_to_classify():
    frame = negatives_frame(2).assign(reason_tags="not_factual")
    modes, _ = assign_error_modes(frame)
    assert modes["mode"].tolist() == ["hallucination", "hallucination"]
    assert modes["evidence_source"].tolist() == ["reason_tag", "reason_tag"]


def test_no_negatives_gives_an_empty_table():
    modes, validation = assign_error_modes(negatives_frame(0).reindex(columns=negatives_frame(1).columns))
    assert modes.empty and not validation.trained


def test_clusters_fitted_on_worker_processes_equal_the_serial_fit(monkeypatch):
    """Every mode's group, fitted on a process per core (largest first), gives what fitting them in turn gives."""
    from feedback_loop.lib.error_modes import clusters

    rng = np.random.default_rng(3)
    topics = [
        "the table has no header row",
        "the answer cites a paper that does not exist",
        "the reply is far too long to read",
        "it refused a harmless request",
        "wrong date for the launch",
        "the code block does not compile",
    ]
    rows = [
        (f"t{i}", mode, topics[rng.integers(len(topics))], " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "table", "paper"], 12)))
        for i, mode in enumerate(rng.choice(["format", "hallucination", "length", "other"], 400, p=[0.1, 0.2, 0.3, 0.4]))
    ]
    frame = pd.DataFrame(rows, columns=["trace_id", "mode", "comments", "output"]).assign(partition_date="2026-11-20")
    monkeypatch.setattr(clusters, "PARALLEL_MIN_ROWS", 10**9)
    serial = cluster_negatives(frame, {}, today="2026-11-20")
    monkeypatch.setattr(clusters, "PARALLEL_MIN_ROWS", 0)
    parallel = cluster_negatives(frame, {}, today="2026-11-20")
    assert len(serial.clusters) > 4
    pd.testing.assert_frame_equal(parallel.assignments, serial.assignments)
    pd.testing.assert_frame_equal(parallel.clusters, serial.clusters)
    assert parallel.registry == serial.registry


def test_a_days_modes_and_clusters_depend_on_the_days_ending_on_it_only():
    """Day 21's rows are the same whether the frame also holds later days or not, and computing
    day 20 first (as a longer run does) leaves day 21 as computing it alone does."""
    frames = []
    for offset, day in enumerate(("2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")):
        day_frame = negatives_frame(60).assign(partition_date=day)
        day_frame["trace_id"] = day_frame["trace_id"] + f"-{offset}"
        frames.append(day_frame)
    every_day = pd.concat(frames, ignore_index=True)
    up_to_21 = every_day[every_day["partition_date"] <= "2026-11-21"]
    alone, _ = assign_error_modes_by_day(up_to_21, ["2026-11-21"], span=2, seed=3)
    in_a_longer_run, validations = assign_error_modes_by_day(every_day, ["2026-11-20", "2026-11-21", "2026-11-22"], span=2, seed=3)
    pd.testing.assert_frame_equal(alone, in_a_longer_run[in_a_longer_run["partition_date"] == "2026-11-21"].reset_index(drop=True))
    assert list(validations) == ["2026-11-20", "2026-11-21", "2026-11-22"] and validations["2026-11-21"].trained
    whole = pd.concat([cluster_frame().assign(partition_date=day, trace_id=lambda f, d=day: f["trace_id"] + d) for day in ("2026-11-20", "2026-11-21", "2026-11-22")], ignore_index=True)
    by_day, snapshots = cluster_negatives_by_day(whole, ["2026-11-20", "2026-11-21", "2026-11-22"], 1, {})
    alone_21, _ = cluster_negatives_by_day(whole[whole["partition_date"] <= "2026-11-21"], ["2026-11-21"], 1, snapshots["2026-11-20"].registry)
    pd.testing.assert_frame_equal(alone_21, by_day[by_day["partition_date"] == "2026-11-21"].reset_index(drop=True))
    assert set(by_day["partition_date"]) == {"2026-11-20", "2026-11-21", "2026-11-22"}


def test_a_centroid_left_without_members_is_not_a_cluster(monkeypatch):
    """k-means can leave a centroid with no members (near-identical rows): clusters are numbered
    over the labels that have members, and none is empty."""
    from feedback_loop.lib.error_modes import clusters

    def gap(embedded, seed):
        labels = np.where(np.arange(len(embedded)) < len(embedded) // 2, 0, 2)
        return labels, np.vstack([embedded[labels == 0].mean(axis=0), embedded.mean(axis=0), embedded[labels == 2].mean(axis=0)])

    monkeypatch.setattr(clusters, "_best_k", gap)
    result = cluster_negatives(cluster_frame(), {}, today="2026-11-20")
    assert sorted(result.clusters["size"]) == [15, 15]


def test_findings_use_the_system_prompt_and_the_standard_library():
    policy = "Returns are accepted within 30 days of delivery. Standard shipping is EUR 4.90."
    assert findings(policy, "How long do I have to return it?", "You have 60 days from delivery.")[0][0] == "hallucination"
    assert findings(policy, "How long do I have to return it?", "You have 30 days from delivery.") == []
    assert findings(policy, "What does shipping cost?", "Shipping costs $5.")[0][0] == "hallucination"
    code = "```python\nimport asyncio\nresult = asyncio.run_later(main())\n```"
    assert findings("", "How do I run it later?", code)[0] == ("hallucination", 3.5, "Python's asyncio has no attribute 'run_later'")
    code = "```python\nfrom dataclasses import dataclass\n@dataclass(readonly=True)\nclass P:\n    x: int\n```"
    assert "takes no argument 'readonly'" in findings("", "Make it immutable", code)[0][2]
    assert findings("", "Make it immutable", code.replace("readonly", "frozen")) == []
    plan = "Day 1: museums.\nDay 2: old town and the river walk."
    assert findings("", "Plan a 4-day trip to Lisbon.", plan)[0][:2] == ("length", 3.5)
    assert findings("", "Explain recursion.", "Recursion is when a function calls itself, and the base case is what")[0][0] == "length"
    assert findings("", "How many orders are there? I have 39 items in the cart.", "There are 12 orders.") == []  # a count mentioned, not asked for
    assert findings("", "What does this print?", "```python\nimport sys\nprint(sys._is_gil_enabled())\n```") == []  # private names vary by version


def test_response_votes_for_language_topic_deflection_and_cut_off_answers():
    filler = " ".join(["Gardens need water, light and patience through every season of the year."] * 5)
    prompts = s(
        "Which port does the PostgreSQL server listen on by default?",
        "Translate into German: 'We arrived on Friday. The hotel was near the station. It rained on Sunday.'",
        "What's the weather like in Lisbon in May? Answer in Spanish please.",
        "How do I rotate the logs of my service?",
        "Can I bring my dog to the office?",
        "Give me one yaml block with the CI job.",
    )
    outputs = s(
        filler,
        "Wir sind am Freitag angekommen. Das Hotel war in der Nähe des Bahnhofs. Am Sonntag hat es geregnet.",
        "In May the weather in Lisbon is mild and sunny, with warm afternoons and cool evenings by the river.",
        "Log rotation depends on your setup, so please contact your system administrator before changing anything.",
        "Yes! Dogs are welcome on Fridays; talk to your manager first so the team knows.",
        "First the trigger:\n```yaml\non: [push]\n```\nThen the job:\n```yaml\njobs:\n  test:\n    runs-on: ubuntu-latest\n```",
    )
    best = strongest_votes(prompts, prompts, outputs)
    assert best.loc[0, "mode"] == "other" and "key words" in best.loc[0, "evidence"]
    assert 1 not in best.index  # a translation is in another language by request
    assert best.loc[2, "mode"] == "other" and best.loc[2, "evidence"] == "response in 'en', prompt in 'es'"
    assert best.loc[3, "mode"] == "refusal" and "deflection" in best.loc[3, "evidence"]
    assert 4 not in best.index  # an answer that says yes and mentions a manager is no deflection
    assert best.loc[5, "mode"] == "format" and "one block asked, the response has 2" in best.loc[5, "evidence"]
    assert findings("", "Full recipe please", "1. Chop the onion.\n2. Add the garlic and")[0][:2] == ("length", 2.5)


def test_edits_that_swap_a_fact_or_rename_keys():
    modes, evidence = edit_mode(
        s(
            "The participle of scrivere is scrivuto, as in 'ho scrivuto una lettera'.",
            '{"invoice_no": "A-1", "amount": 12.5}',
            "Dear team, the launch moves to next week because the vendor is late.",
        ),
        s(
            "The participle of scrivere is scritto, as in 'ho scritto una lettera'.",
            '{"invoice_number": "A-1", "total": 12.5}',
            "Hi all! Quick heads-up: we're shifting the launch a week, our vendor needs more time. Thanks for your patience!",
        ),
    )
    assert modes[0] == "hallucination" and "'scrivuto' -> 'scritto'" in evidence[0]
    assert modes[1] == "format" and "invoice_no" in evidence[1]
    assert pd.isna(modes[2])  # a tone rewrite keeps too little to be a corrected fact


def test_a_classifier_that_fails_its_own_hold_out_is_not_trusted(monkeypatch):
    from feedback_loop.lib.error_modes import assign

    frame = negatives_frame(120)
    monkeypatch.setattr(assign, "CLASSIFIER_MIN_VALIDATION_F1", 1.01)
    modes, validation = assign_error_modes(frame, seed=3)
    assert validation.trained and (modes["evidence_source"] != "classifier").all()
    assert (modes.loc[frame["reason_tags"].isna().to_numpy() & (modes["evidence_source"] == "none").to_numpy(), "mode"] == "other").all()


def test_findings_on_json_fields_headings_sentences_and_padding():
    system = 'Return JSON {"summary": "...", "date": "..."}: summary under 10 words, date as YYYY-MM-DD.'
    long_summary = '{"summary": "' + "word " * 20 + '", "date": "2026-05-14"}'
    assert findings(system, "Triage this.", long_summary)[0][:2] == ("length", 3.5)
    assert "YYYY-MM-DD" in findings(system, "Triage this.", '{"summary": "Slow page.", "date": "14/05/2026"}')[0][2]
    assert findings(system, "Triage this.", '{"summary": "Slow page.", "date": "2026-05-14"}') == []
    assert findings("", "Write the FAQ in markdown, with ### for each question.", "Q: How?\nA: Like this.")[0][0] == "format"
    assert findings("", "one-sentence tip for storing herbs", "Herbs are lovely. " * 10)[0][0] == "length"
    padded = "The limit is $55 per day. " + "You may spend on meals while travelling for the company. " * 8 + "So $55 per day it is, $55 per day in total, $55 per day."
    assert findings("", "What is the meal limit?", padded)[0][:2] == ("length", 2.5)


def test_findings_on_extraction_budgets_style_rules_and_calls():
    extraction = "Extract the invoice as JSON. Use null for any field that is not in the document. Never invent values."
    document = "ACME Tools\n3 hammers @ $12.00\nTOTAL $36.00"
    made_up = '{"vendor": "ACME Tools", "invoice_number": "AC-2026-0042", "total": 36.0}'
    assert findings(extraction, document, made_up)[0][0] == "hallucination"
    assert findings(extraction, document, '{"vendor": "ACME Tools", "invoice_number": null, "total": 36.0}') == []
    assert findings("", "Two nights in Porto, total budget 300 euros. Where should we stay?", "Try the Grand Hotel from €420 per night.")[0][0] == "other"
    brand = "Brand voice: warm, no exclamation marks, no emojis."
    assert findings(brand, "Announce the new store.", "We opened a new store!")[0][0] == "other"
    assert findings(brand, "Announce the new store.", "Our new store is open on Main Street. #NewStore") == []  # a hashtag is no cut-off
    modes, evidence = edit_mode(s("Use MEDIAN(total) in the SELECT."), s("Use percentile_cont(0.5) WITHIN GROUP (ORDER BY total) in the SELECT."))
    assert modes[0] == "hallucination" and "median" in evidence[0]
    assert is_refusal(s("Sorry about that! Here is the corrected list:", "Sorry, but I can't share that.")).tolist() == [False, True]
