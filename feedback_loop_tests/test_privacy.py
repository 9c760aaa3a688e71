"""Scrubbing PII and secrets, pseudonymizing users."""

import json

import pandas as pd

from feedback_loop.lib.datasets.privacy import (
    find_pii,
    might_contain_pii,
    pseudonymize,
    scrub_frame,
    scrub_text,
)


def test_every_kind_of_pii_and_secret_is_replaced():
    text = (
        "Mail jane.doe@example.com or call +1 415-555-0123. Card 4111 1111 1111 1111, host 10.20.3.4, token ghp_abcdefghijklmnopqrstuvwxyz0123456789, key AKIAIOSFODNN7EXAMPLE. The wall fell in 1989."
    )
    clean, found = scrub_text(text)
    for secret in ("jane.doe@example.com", "415-555-0123", "4111 1111 1111 1111", "10.20.3.4", "ghp_abcdef", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in clean
    assert found == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1, "IP_ADDRESS": 1, "SECRET": 2}
    assert "The wall fell in 1989." in clean
    assert find_pii(clean) == []


def test_ordinary_text_is_untouched():
    text = "Version 2.3.1 costs 12 dollars; the answer is 42 and the year 2008."
    assert scrub_text(text) == (text, {})


def test_scrub_frame_scrubs_json_messages_value_by_value():
    import json

    messages = json.dumps([{"role": "user", "content": "I am bob@example.org"}, {"role": "assistant", "content": "Hi Bob"}])
    frame = pd.DataFrame({"input": [messages, None], "prompt": ["hi", "call 415-555-0123 now"]})
    clean, found = scrub_frame(frame, ["input", "prompt"], json_columns=("input",))
    assert json.loads(clean["input"][0])[0]["content"] == "I am <EMAIL_ADDRESS>"
    assert pd.isna(clean["input"][1]) and clean["prompt"][1] == "call <PHONE_NUMBER> now"
    assert found == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}


def test_scrub_frame_keeps_the_json_text_of_a_flagged_value_with_nothing_to_replace():
    """Version 2.3.1-2.4.0 and the long word are what the pre-filter flags, yet hold no finding:
    the value keeps its bytes (not re-serialized); a value with a finding is written anew."""
    import json

    clean_text = '[{"role":"user","content":"Compare version 2.3.1-2.4.0 with supercalifragilisticexpialidocious"}]'
    dirty_text = '[{"role":"user","content":"Mail bob@example.org about version 2.3.1-2.4.0"}]'
    frame = pd.DataFrame({"input": [clean_text, dirty_text]})
    assert might_contain_pii(frame["input"]).all()
    clean, found = scrub_frame(frame, ["input"], json_columns=("input",))
    assert clean["input"][0] == clean_text
    assert json.loads(clean["input"][1]) == [{"role": "user", "content": "Mail <EMAIL_ADDRESS> about version 2.3.1-2.4.0"}]
    assert found == {"EMAIL_ADDRESS": 1}


def test_pseudonymize_is_keyed_stable_and_keeps_missing():
    ids = pd.Series(["u1", "u2", None, "u1"], dtype="string")
    hashed = pseudonymize(ids, "k1")
    assert hashed[0] == hashed[3] != hashed[1] and pd.isna(hashed[2])
    assert hashed[0].startswith("u_") and "u1" not in hashed[0]
    assert pseudonymize(ids, "k2")[0] != hashed[0]


def test_the_prefilter_flags_every_text_a_detector_would_change():
    from feedback_loop.lib.datasets.privacy import might_contain_pii
    from feedback_loop.sample.generator import PII_SNIPPETS

    texts = [snippet.format(n=1234, a=17, b=250) for snippet in PII_SNIPPETS] + [
        "bob@example.org",
        "call (415) 555-0123",
        "4111-1111-1111-1111",
        "fe80::1ff:fe23:4567:890a",
        "192.168.0.1",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-abcdefghijklmnop",
        "-----BEGIN RSA PRIVATE KEY-----",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
        "sk_live_abcdefghijklmnopqrstuvwx",
        "The answer is 42.",
    ]
    flagged = might_contain_pii(pd.Series(texts))
    for text, flag in zip(texts, flagged, strict=True):
        if scrub_text(text)[0] != text:
            assert flag, text
    assert not might_contain_pii(pd.Series(["The capital of Australia is Canberra. It was chosen in 1908."]))[0]


def test_windowed_scanning_finds_what_a_whole_text_scan_finds():
    from feedback_loop.lib.datasets import privacy

    filler = " ".join(f"word{i}" for i in range(120))
    text = f"{filler} reach me at someone.with.a.long.name@example.org {filler} or +44 20 7946 0958 {filler} card 4111 1111 1111 1111."
    windowed = privacy.find_pii(text)
    whole = []
    for recognizer in privacy._recognizers():
        whole += [(r.start, r.end, r.entity_type) for r in recognizer.analyze(text, entities=recognizer.supported_entities, nlp_artifacts=None) if r.score >= privacy.MIN_SCORE]
    assert windowed == sorted(set(whole)) and len(windowed) == 3


def test_many_texts_are_scrubbed_in_worker_processes_with_the_same_result(monkeypatch):
    from feedback_loop.lib.datasets import privacy

    texts = [f"mail ann{i}@example.com or call +1 415-555-{i % 10000:04d}" for i in range(60)] + ["nothing here"]
    serial = [privacy.scrub_text(t) for t in texts]
    monkeypatch.setattr(privacy, "PARALLEL_MIN_TEXTS", 10)
    assert privacy.scrub_texts(texts) == serial
    assert serial[0][0] == "mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>"


def test_canadian_numbers_are_found_without_a_ca_pass():
    clean, found = scrub_text("Vancouver office (604) 688-5522, Toronto +1 416-979-2000.")
    assert clean == "Vancouver office <PHONE_NUMBER>, Toronto <PHONE_NUMBER>." and found == {"PHONE_NUMBER": 2}


def test_a_scrubber_leaves_the_frame_alone_finds_per_row_and_scans_a_text_once(monkeypatch):
    from feedback_loop.lib.datasets import privacy

    frame = pd.DataFrame(
        {
            "prompt": pd.Series(["mail me at leak@example.com", "nothing here", None, "call +1 415-555-0100 or a@b.org"], dtype="string"),
            "input": pd.Series([None, '[{"content": "mail me at leak@example.com"}]', None, None], dtype="string"),
        }
    )
    scrubber = privacy.Scrubber()
    scrubbed, findings = scrubber.scrubbed(frame, ["prompt", "input"], json_columns=("input",))
    assert frame["prompt"].iloc[0] == "mail me at leak@example.com"  # the given frame is left alone
    assert scrubbed["prompt"].tolist()[:2] == ["mail me at <EMAIL_ADDRESS>", "nothing here"] and scrubbed["prompt"].isna().iloc[2]
    assert json.loads(scrubbed["input"].iloc[1]) == [{"content": "mail me at <EMAIL_ADDRESS>"}]
    assert findings == {0: {"EMAIL_ADDRESS": 1}, 1: {"EMAIL_ADDRESS": 1}, 3: {"PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1}}
    scanned = []
    monkeypatch.setattr(privacy, "scrub_texts", lambda texts: scanned.extend(texts) or [privacy.scrub_text(t) for t in texts])
    again, _ = scrubber.scrubbed(frame.assign(prompt=frame["prompt"].fillna("new: x@y.io")), ["prompt"])
    assert scanned == ["new: x@y.io"] and again["prompt"].iloc[2] == "new: <EMAIL_ADDRESS>"


SECRET_SAMPLES = {
    "ArtifactoryDetector": ["token AKCp1234567890 here", "key APB12345678 ok"],
    "AWSKeyDetector": ["key AKIAIOSFODNN7EXAMPLE", 'aws_secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'],
    "AzureStorageKeyDetector": ["AccountKey=" + "a" * 86 + "=="],
    "BasicAuthDetector": ["https://user:hunter2@example.com/x"],
    "CloudantDetector": ['cloudant_password = "abcdefghijklmnopqrstuvwx"'],
    "DiscordBotTokenDetector": ["MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"],
    "GitHubTokenDetector": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789"],
    "GitLabTokenDetector": ["glpat-abcdefghij0123456789"],
    "IbmCloudIamDetector": ['ibm_cloud_iam_api_key = "' + "a" * 44 + '"'],
    "IbmCosHmacDetector": ['secret_access_key = "' + "0123456789abcdef" * 3 + '"'],
    "JwtTokenDetector": ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc"],
    "MailchimpDetector": ["0123456789abcdef0123456789abcdef-us12"],
    "NpmDetector": ["//registry.npmjs.org/:_authToken=npm_abc"],
    "OpenAIDetector": ["sk-abcdefghij0123456789T3BlbkFJabcdefghij0123456789"],
    "PrivateKeyDetector": ["-----BEGIN RSA PRIVATE KEY-----"],
    "PypiTokenDetector": ["pypi-AgEIcHlwaS5vcmc" + "A" * 70],
    "SendGridDetector": ["SG." + "a" * 22 + "." + "b" * 43],
    "SlackDetector": ["xoxb-123456789012-abcdefghijklmnop"],
    "SoftlayerDetector": ['softlayer_api_key = "' + "a" * 64 + '"'],
    "SquareOAuthDetector": ["sq0csp-" + "a" * 43],
    "StripeDetector": ["sk_live_abcdefghijklmnopqrstuvwx"],
    "TelegramBotTokenDetector": ["110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"],
    "TwilioKeyDetector": ["AC" + "0123456789abcdef" * 2],
}


def test_every_secret_plugin_is_found_and_passes_the_prefilter():
    from feedback_loop.lib.datasets.privacy import SECRET_PLUGINS, might_contain_pii

    assert sorted(SECRET_SAMPLES) == sorted(SECRET_PLUGINS)
    texts = [f"see {sample} please" if not sample.startswith(("-", "110")) else sample for samples in SECRET_SAMPLES.values() for sample in samples]
    assert might_contain_pii(pd.Series(texts)).all()
    for text in texts:
        clean, found = scrub_text(text)
        assert sum(found.values()) == 1 and clean != text, text


def test_placeholders_left_by_scrubbing_flag_nothing():
    from feedback_loop.lib.datasets.privacy import might_contain_pii

    clean, _ = scrub_text("mail jane@example.com, key ghp_abcdefghijklmnopqrstuvwxyz0123456789, my password is secret")
    assert clean == "mail <EMAIL_ADDRESS>, key <SECRET>, my password is secret"
    assert not might_contain_pii(pd.Series([clean]))[0]


def test_jsonl_strings_are_every_string_value_of_the_lines():
    from feedback_loop.lib.datasets.privacy import jsonl_strings

    nested = ['{"a": "x", "b": [{"c": "y", "d": 1}], "long_key_name_of_twenty_plus": true}\n', '{"a": null, "b": []}\n', "\n"]
    assert jsonl_strings(nested).tolist() == ["x", "y"]
    mixed = ['{"a": "x"}\n', '{"a": ["y", "z"]}']  # no common schema: parsed line by line
    assert sorted(jsonl_strings(mixed).tolist()) == ["x", "y", "z"]
    assert jsonl_strings([]).tolist() == []
    assert jsonl_strings(['{"day": "2026-11-20", "text": "hi"}\n']).tolist() == ["hi"]  # read as a timestamp


WHOLE_SECRETS = [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstuvwxyzABCDEF1234",
    "sk-9fQ2xLmN4pR7tV1wY3zB6cD8eF0gH2jK5",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ-xyzAA",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
    "glpat-abcdefghijklmnopqrstu1234",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "abc8Q~abcdefghijklmnopqrstuvwxyz0123456",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234abcdEFGH5678\nqwertyuiopasdfghjklzxcvbnm0123456789\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAAAABAAABlwAAAAdzc2gtcn",  # cut short: to the end
]
KEYWORD_SECRETS = {
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    'config {"password": "Xk9#mQ2$vL8pR4tZ"}': "Xk9#mQ2$vL8pR4tZ",
    "postgres://admin:hunter2pass@db.internal:5432/prod": "admin:hunter2pass",
    "MY_SERVICE_TOKEN=q8Zr2mVx7LpT4nWc9BdY": "q8Zr2mVx7LpT4nWc9BdY",
}
PERSONAL = {
    "IBAN DE89 3704 0044 0532 0130 00 please": "IBAN_CODE",
    "send it to GB82WEST12345698765432": "IBAN_CODE",
    "my ssn: 536228726": "US_SSN",
    "ssn 536-22-8726": "US_SSN",
    "mi DNI es 12345678Z": "ES_NIF",
    "codice fiscale RSSMRA85T10A562S": "IT_FISCAL_CODE",
    "PESEL 44051401359": "PL_PESEL",
    "Steuer-ID 65929970489": "DE_TAX_ID",
    "NINO AB 12 34 56 C": "UK_NINO",
}


def test_secrets_are_replaced_whole_and_keys_of_every_family_are_found():
    for secret in WHOLE_SECRETS:
        text = f"here: {secret}\nthanks"
        clean, found = scrub_text(text)
        assert found["SECRET"] >= 1 and all(secret[i : i + 12] not in clean for i in range(0, len(secret) - 12)), (secret, clean)
        assert might_contain_pii(pd.Series([text]))[0]
    for text, secret in KEYWORD_SECRETS.items():
        clean, _ = scrub_text(text)
        assert secret not in clean and all(secret[i : i + 8] not in clean for i in range(len(secret) - 8)), clean
        assert might_contain_pii(pd.Series([text]))[0]


def test_ibans_and_national_ids_are_replaced():
    for text, kind in PERSONAL.items():
        clean, found = scrub_text(text)
        assert found[kind] == 1, (text, clean, found)
        assert might_contain_pii(pd.Series([text]))[0]


def test_words_about_secrets_are_not_secrets():
    for text in ("the password is strong enough", "my api key is in the vault", "perfect JSON, thank you", "auth: done", "token limits are 4096 per request"):
        assert scrub_text(text)[0] == text


def test_scrubbing_time_grows_linearly_with_a_digit_heavy_text():
    """A megabyte of digits and separators: each detector reads bounded pieces, so ten times the
    text takes about ten times as long (a detector over the whole text took minutes)."""
    import random
    import time

    rng = random.Random(5)
    chunk = " ".join(f"{rng.randrange(10**9):09d}-{rng.randrange(10**4):04d}" for _ in range(100_000 // 15))
    small, large = chunk[:100_000], (chunk * 10)[:1_000_000]
    seconds = []
    for text in (small, large):
        start = time.perf_counter()
        scrub_text.__wrapped__(text)
        seconds.append(time.perf_counter() - start)
    assert seconds[1] < 30 * max(seconds[0], 0.05), seconds


def test_a_spacy_model_finds_names_the_patterns_do_not(tmp_path, monkeypatch):
    """The NER path, on a model saved to disk (an entity ruler standing in for a trained model)."""
    import spacy

    from feedback_loop.lib.datasets import people, privacy

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": [{"TEXT": "Anna"}, {"TEXT": "Berg"}]}])
    nlp.to_disk(tmp_path / "model")
    monkeypatch.setenv("FEEDBACK_LOOP_NER_MODEL", str(tmp_path / "model"))
    caches = (people.ner_model, people._ner, privacy.scrub_text)
    for cached in caches:
        cached.cache_clear()
    try:
        assert scrub_text("Ask Anna Berg about the report")[0] == "Ask <PERSON> about the report"
        assert might_contain_pii(pd.Series(["Ask Anna Berg about the report", None])).tolist() == [True, False]
    finally:
        monkeypatch.delenv("FEEDBACK_LOOP_NER_MODEL")
        for cached in caches:
            cached.cache_clear()
    assert scrub_text("Ask Anna Berg about the report")[0] == "Ask Anna Berg about the report"  # without a model: no context, no name
