"""The PII engine on its own: detectors, actions, pseudonym restore (whole and streamed, a placeholder
split at every offset), the policy's validation, fail-closed scans, and what a scan costs. Pure
functions: no database, no server."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from proxy.errors import ProxyError
from proxy.steps import apply_filters
from proxy.steps.pii import BrokenPolicyStep, PiiStep, PiiStreamFilter, pii_step, with_key_policy
from routing.policies.detectors import Scanner, card_issuer, is_random_token, luhn_valid
from routing.policies.engine import PiiBlocked, PiiSession, ScanTimeout, compile_policy, mask
from routing.policies.restore import Restorer
from routing.policies.spec import ACTIONS, BUILTIN_DETECTORS, DETECTORS, NER_AVAILABLE, PolicyError, normalize_pii

FULL = {
    "mode": "enforce",
    "detectors": {
        "email": "pseudonymize",
        "phone": "redact",
        "card": "block",
        "iban": "redact",
        "us_ssn": "redact",
        "ip": "mask",
        "secret": "block",
    },
    "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
    "terms": {"words": ["Project Falcon"], "action": "redact"},
    "scan_responses": False,
}
EVERYTHING_PSEUDONYMIZED = {"detectors": dict.fromkeys(BUILTIN_DETECTORS, "pseudonymize")}


def findings(text: str, detectors=BUILTIN_DETECTORS) -> list[tuple[str, str]]:
    return [(d, text[s:e]) for s, e, d in Scanner(detectors).scan(text)]


def test_the_public_names_are_the_contract():
    assert DETECTORS[:7] == ("email", "phone", "card", "iban", "us_ssn", "ip", "secret")
    assert DETECTORS[7:] == (("person",) if NER_AVAILABLE else ())
    assert ACTIONS == ("redact", "mask", "pseudonymize", "block", "log-only")


def test_the_ner_detector_is_offered_only_with_presidio():
    if not NER_AVAILABLE:
        with pytest.raises(PolicyError, match="needs Presidio"):
            normalize_pii({"detectors": {"person": "redact"}})
        return
    policy = compile_policy({"detectors": {"person": "redact"}})
    assert policy.preview("Yesterday John Smith called.")["sent"] == "Yesterday [PERSON] called."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", [("email", "jane.doe+news@mail.example.co.uk")]),
        ("call (415) 555-2671 now", [("phone", "(415) 555-2671")]),
        ("ring +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
        ("mobile: 0049 30 901820", [("phone", "0049 30 901820")]),
        ("card 4111 1111 1111 1111 exp 12/29", [("card", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("card", "3782-822463-10005")]),
        ("IBAN DE89 3704 0044 0532 0130 00.", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
        ("SSN 536-22-1234", [("us_ssn", "536-22-1234")]),
        (
            "host 10.20.30.40:8080 and 2001:db8::8a2e:370:7334",
            [("ip", "10.20.30.40"), ("ip", "2001:db8::8a2e:370:7334")],
        ),
        ("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", [("secret", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123")]),
        ("aws AKIAIOSFODNN7EXAMPLE ok", [("secret", "AKIAIOSFODNN7EXAMPLE")]),
        ("Authorization: Bearer abcDEF123456ghiJKL789", [("secret", "abcDEF123456ghiJKL789")]),
        ('{"api_key": "f9a8b7c6d5e4f3a2b1c0d9e8"}', [("secret", "f9a8b7c6d5e4f3a2b1c0d9e8")]),
    ],
)
def test_each_detector_finds_its_values(text, expected):
    assert findings(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 48213377 shipped",
        "invoice #20240315 is due",
        "meeting on 2024-03-15 at 10:30",
        "released v1.2.3.4 and version 10.15.7",
        "room 1204 on floor 12",
        "pi is 3.14159265358979",
        "the ratio 16:9 and 4:3",
        "ticket 4111-2222 reopened",
        "card-like 4111 1111 1111 1112 fails Luhn",
        "C++ std::vector and a::b",
        "the token limit is 4096 and the secret sauce is patience",
        "user@localhost is not an address",
        "ISBN 978-3-16-148410-0",
    ],
)
def test_look_alikes_are_left_alone(text):
    assert findings(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Values written back to back are each read whole: the search goes on right after the first.
        (
            "cards 4111 1111 1111 1111 4012 8888 8888 1881 done",
            [("card", "4111 1111 1111 1111"), ("card", "4012 8888 8888 1881")],
        ),
        ("call 415-555-2671 2 times", [("phone", "415-555-2671")]),
        ("+1 4155552671 is the desk", [("phone", "+1 4155552671")]),
        ("hosts 10.0.12.34 10.0.12.35", [("ip", "10.0.12.34"), ("ip", "10.0.12.35")]),
        # The digits inside an IBAN are the IBAN's, not a card or a phone number.
        ("pay DE89 3704 0044 0532 0130 00 now", [("iban", "DE89 3704 0044 0532 0130 00")]),
    ],
)
def test_values_side_by_side_are_found_each_once(text, expected):
    assert findings(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1234567 1234567 1234567",  # runs of 7 joined by spaces: no value is written that way
        "dates 2026-09-30 2026-10-01 2026-10-02",
        "SSN-shaped 000-12-3456, 666-12-3456, 912-12-3456, 123-00-4567, 123-45-0000, 078-05-1120",
        "IBAN-shaped DE00 3704 0044 0532 0130 00 fails its check digits",
    ],
)
def test_runs_that_are_no_value_are_left_alone(text):
    assert findings(text) == []


def test_validators():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert card_issuer("4111111111111111") == "visa"
    assert card_issuer("5500000000000004") == "mastercard"
    assert card_issuer("9111111111111111") is None
    assert is_random_token("f9a8b7c6d5e4f3a2b1c0") and not is_random_token("authentication_required")


def test_actions_redact_mask_pseudonymize_and_log_only():
    policy = compile_policy(
        {
            "detectors": {"email": "pseudonymize", "phone": "redact", "ip": "mask", "iban": "log-only"},
            "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
            "terms": {"words": ["Project  Falcon"], "action": "pseudonymize"},
        }
    )
    session = PiiSession(policy)
    text = (
        "a@x.io, b@y.io and a@x.io; tel (415) 555-2671; from 192.168.10.24; ORD-123456; "
        "IBAN DE89370400440532013000; the project falcon plan"
    )
    sent = session.apply(text, "t")
    assert sent == (
        "<EMAIL_1>, <EMAIL_2> and <EMAIL_1>; tel [PHONE]; from ***.***.10.24; [ORDER_ID]; "
        "IBAN DE89370400440532013000; the <TERM_1> plan"
    )
    assert session.counts == {
        "email": {"pseudonymize": 3},
        "phone": {"redact": 1},
        "ip": {"mask": 1},
        "order_id": {"redact": 1},
        "iban": {"log-only": 1},
        "terms": {"pseudonymize": 1},
    }
    assert session.values == {"<EMAIL_1>": "a@x.io", "<EMAIL_2>": "b@y.io", "<TERM_1>": "project falcon"}
    assert mask("4111 1111 1111 1111") == "**** **** **** 1111"


def test_block_names_the_detector_and_the_place_never_the_value():
    session = PiiSession(compile_policy(FULL))
    with pytest.raises(PiiBlocked) as caught:
        session.apply("pay with 4111 1111 1111 1111", "messages[0].content")
    assert (caught.value.detector, caught.value.where) == ("card", "messages[0].content")
    assert session.counts == {"card": {"block": 1}}


def test_log_only_mode_changes_nothing_and_counts_what_would_happen():
    policy = compile_policy({**FULL, "mode": "log-only"})
    session = PiiSession(policy)
    text = "jane@example.com pays with 4111 1111 1111 1111"
    assert session.apply(text, "t") == text
    assert session.counts == {"email": {"would-pseudonymize": 1}, "card": {"would-block": 1}}


def test_preview_shows_what_is_sent_and_what_comes_back_without_values():
    policy = compile_policy(FULL)
    preview = policy.preview("Mail jane@example.com about ORD-123456", "I wrote to <EMAIL_1>.")
    assert preview["sent"] == "Mail <EMAIL_1> about [ORDER_ID]"
    assert preview["restored"] == "I wrote to jane@example.com."
    assert preview["findings"] == [
        {"detector": "email", "action": "pseudonymize", "start": 5, "end": 21},
        {"detector": "order_id", "action": "redact", "start": 28, "end": 38},
    ]
    echoed = policy.preview("Mail jane@example.com")
    assert echoed["restored"] == "Mail jane@example.com"
    blocked = policy.preview("card 4111 1111 1111 1111")
    assert (blocked["sent"], blocked["blocked"]) == ("", "card")
    assert "4111" not in orjson.dumps(blocked).decode()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"detectors": {"passport": "redact"}}, "unknown detector 'passport'"),
        ({"detectors": {"email": "shred"}}, "unknown action 'shred'"),
        ({"mode": "audit"}, "unknown mode 'audit'"),
        ({"custom": [{"name": "x", "pattern": "(unclosed", "action": "redact"}]}, "not a valid regular expression"),
        ({"custom": [{"name": "x", "pattern": "a*", "action": "redact"}]}, "matches the empty string"),
        ({"custom": [{"name": "email", "pattern": "a", "action": "redact"}]}, "is a built-in detector"),
        ({"terms": {"words": [""], "action": "redact"}}, "must not be empty"),
        ({"scan_responses": "yes"}, "true or false"),
        ({"colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_invalid_policies_are_refused_clearly(spec, message):
    # The engine compiles only normalized policies: the one grammar (routing.policies.spec) refuses these.
    with pytest.raises(PolicyError, match=message):
        normalize_pii(spec)


def test_a_catastrophic_custom_pattern_times_out_and_the_scan_fails_closed():
    policy = compile_policy({"custom": [{"name": "evil", "pattern": r"(x+x+)+y", "action": "redact"}]})
    started = time.monotonic()
    with pytest.raises(ScanTimeout):
        PiiSession(policy).apply("x" * 5000, "t")
    assert time.monotonic() - started < 2.0
    with pytest.raises(ValueError, match="took too long"):
        policy.preview("x" * 5000)


class _Call:
    """The attributes of proxy.call.Call the PII step touches."""

    def __init__(self) -> None:
        self.step_state: dict = {}
        self.pii_actions = None
        self.endpoint = "chat/completions"
        self.prompt_estimate = 100  # a small body: scanned on the event loop
        self.key = None


def _on_request(step, payload: dict) -> _Call:
    call = _Call()
    asyncio.run(step.on_request(call, payload))
    return call


def test_the_step_scans_every_position_of_a_request():
    step = PiiStep(compile_policy(EVERYTHING_PSEUDONYMIZED))
    payload = {
        "messages": [
            {"role": "system", "content": "Admin is root@corp.example"},
            {"role": "user", "content": [{"type": "text", "text": "I am ann@a.example"}, {"type": "image_url"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": '{"to":"bo@b.example"}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sent to bo@b.example"},
        ],
        "input": ["cy@c.example", "plain"],
        "prompt": "dee@d.example",
        "user": "eve@e.example",
    }
    call = _on_request(step, payload)
    raw = orjson.dumps(payload)
    assert b"example" not in raw
    assert payload["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"to":"<EMAIL_3>"}'
    assert payload["messages"][3]["content"] == "sent to <EMAIL_3>"
    assert call.pii_actions == {"email": {"pseudonymize": 7}}
    assert payload["user"] == "<EMAIL_6>"  # the payload is walked in its own order


def test_every_string_a_client_can_send_is_scanned_but_identifiers_and_inline_data():
    """The fields a probe got raw values through, and the ones that must reach the provider verbatim."""
    step = PiiStep(compile_policy({"detectors": {"email": "redact", "card": "redact"}}))
    card, mail = "4111 1111 1111 1111", "zed@z.example"
    image = "data:image/png;base64,iVBORw0KGgo4111111111111111"
    payload = {
        "model": "gpt-4o-mini",
        "messages": [
            {
                "role": "user",
                "name": mail,
                "content": [
                    {"type": "image_url", "image_url": {"url": f"https://img.example/?card={card}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "file", "file": {"filename": f"{mail}.pdf", "file_data": "JVBERi0xLjQ="}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": f"not for {mail}"}],
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "send_mail", "arguments": f'{{"to": "{mail}"}}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "send_mail",
                    "description": f"Mails {mail}",
                    "parameters": {
                        "type": "object",
                        "properties": {"to": {"type": "string", "description": f"e.g. {mail}"}},
                    },
                },
            }
        ],
        "functions": [{"name": "legacy_fn", "description": f"Pays with {card}"}],
        "tool_choice": {"type": "function", "function": {"name": "send_mail"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "reply",
                "schema": {"type": "object", "description": f"Reply to {mail}", "properties": {}},
            },
        },
        "prediction": {"type": "content", "content": f"Dear {mail}"},
        "metadata": {"customer": mail},
        "stop": [f"{mail}", "END"],
    }
    _on_request(step, payload)
    raw = orjson.dumps(payload).decode()
    assert mail not in raw and card not in raw
    # Identifiers, enums and inline bytes are the client's own.
    assert payload["model"] == "gpt-4o-mini" and payload["messages"][0]["role"] == "user"
    assert payload["messages"][1]["tool_calls"][0]["function"]["name"] == "send_mail"
    assert payload["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert payload["tools"][0]["function"]["name"] == "send_mail"
    assert payload["functions"][0]["name"] == "legacy_fn"
    assert payload["tool_choice"]["function"]["name"] == "send_mail"
    assert payload["messages"][0]["content"][1]["image_url"]["url"] == image
    assert payload["messages"][0]["content"][2]["file"]["file_data"] == "JVBERi0xLjQ="
    assert payload["messages"][0]["content"][3]["input_audio"] == {"data": "UklGRg==", "format": "wav"}
    assert payload["stop"][1] == "END" and payload["response_format"]["json_schema"]["name"] == "reply"


def test_the_step_refuses_blocked_and_unscannable_requests():
    step = PiiStep(compile_policy(FULL))
    with pytest.raises(ProxyError) as caught:
        _on_request(step, {"messages": [{"role": "user", "content": "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"}]})
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "pii_blocked", "messages[0].content")
    assert "'secret'" in error.message and "sk-ant" not in error.message
    evil = PiiStep(compile_policy({"custom": [{"name": "evil", "pattern": r"(x+x+)+y", "action": "redact"}]}))
    with pytest.raises(ProxyError) as caught:
        _on_request(evil, {"messages": [{"role": "user", "content": "x" * 5000}]})
    assert caught.value.code == "pii_scan_failed"
    with pytest.raises(ProxyError) as caught:
        _on_request(pii_step({"detectors": {"email": "nope"}}), {"messages": []})
    assert (caught.value.status, caught.value.code) == (500, "pii_policy_invalid")


def test_a_scan_that_raises_refuses_the_request(monkeypatch, caplog):
    step = PiiStep(compile_policy(FULL))

    def broken(text):
        raise RuntimeError("boom")

    monkeypatch.setattr(step.policy.scanner, "scan", broken)
    payload = {"messages": [{"role": "user", "content": "jane@example.com"}]}
    with pytest.raises(ProxyError) as caught:
        _on_request(step, payload)
    assert (caught.value.status, caught.value.code, caught.value.type) == (500, "pii_scan_failed", "server_error")
    assert "jane@example.com" not in caplog.text


def test_a_key_policy_replaces_the_tenants_and_keeps_the_other_steps():
    tenant_step, key_step, cache = PiiStep(compile_policy(FULL)), PiiStep(compile_policy(FULL)), object()
    assert with_key_policy((tenant_step, cache), key_step) == (key_step, cache)
    assert with_key_policy((tenant_step, cache), None) == (cache,)
    assert with_key_policy((cache,), key_step) == (key_step, cache)
    assert pii_step(None) is None and pii_step({"detectors": {}}) is None
    assert isinstance(pii_step({"mode": "bogus"}), BrokenPolicyStep)


def test_json_answers_are_restored_including_tool_call_arguments():
    step = PiiStep(
        compile_policy(
            {"detectors": {"email": "pseudonymize"}, "terms": {"words": ['A "q"'], "action": "pseudonymize"}}
        )
    )
    call = _on_request(step, {"messages": [{"role": "user", "content": 'x@y.example and A "q"'}]})
    answer = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi <EMAIL_1>, about <TERM_1>",
                    "tool_calls": [{"function": {"name": "f", "arguments": '{"who": "<EMAIL_1>", "t": "<TERM_1>"}'}}],
                },
            }
        ]
    }
    restored = orjson.loads(step.on_response(call, orjson.dumps(answer)))
    message = restored["choices"][0]["message"]
    assert message["content"] == 'Hi x@y.example, about A "q"'
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"who": "x@y.example", "t": 'A "q"'}
    # A provider that escapes "<" as \u003c (Go's encoder does) is restored too.
    escaped = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"\\u003cEMAIL_1\\u003e"}}]}'
    assert orjson.loads(step.on_response(call, escaped))["choices"][0]["message"]["content"] == "x@y.example"


def test_the_restorer_holds_back_only_a_placeholder_prefix():
    restorer = Restorer({"<EMAIL_1>": "a@b.example", "<EMAIL_12>": "c@d.example"})
    assert restorer.feed("", "Hi <EMA") == ("Hi ", "<EMA")
    assert restorer.feed("<EMA", "IL_1> and <") == ("Hi a@b.example and "[3:], "<")
    assert restorer.feed("", "a < b") == ("a < b", "")
    assert restorer.feed("", "<EMAIL_1") == ("", "<EMAIL_1")  # may still become <EMAIL_12>


def test_restoring_many_placeholders_costs_one_pattern_not_one_per_placeholder():
    mapping = {f"<PHONE_{n}>": f"415-555-{n:04d}" for n in range(1, 40_001)}
    restorer = Restorer(mapping)
    text = " ".join(mapping)
    assert restorer.restore(text) == " ".join(mapping.values())
    assert restorer.restore("a <PHONE_0> or <NOT_A_LABEL_1> stays") == "a <PHONE_0> or <NOT_A_LABEL_1> stays"
    assert restorer.feed("", "x <PHONE_399") == ("x ", "<PHONE_399")
    assert restorer.feed("", "x <PHON") == ("x ", "<PHON")
    assert restorer.feed("", "x <EMAIL_1") == ("x <EMAIL_1", "")  # no such label in this answer


def _sse(chunks: list[dict]) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def _chunk(content: str | None = None, finish: str | None = None, tool_args: str | None = None) -> dict:
    delta: dict = {}
    if content is not None:
        delta["content"] = content
    if tool_args is not None:
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": tool_args}}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _relay(step_filter, events: list[bytes]) -> tuple[str, str, list[dict]]:
    out: list[bytes] = []
    for event in events:
        out += apply_filters([step_filter], event)
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(e[6:]) for e in out[:-1]]
    finish_at = next(i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"])
    assert all(not c["choices"][0]["delta"].get("content") for c in chunks[finish_at:])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    args = "".join(
        (c["choices"][0]["delta"].get("tool_calls") or [{"function": {"arguments": ""}}])[0]["function"]["arguments"]
        for c in chunks
    )
    return text, args, chunks


def test_a_placeholder_split_at_every_offset_is_restored_while_streaming():
    session = PiiSession(compile_policy(EVERYTHING_PSEUDONYMIZED))
    session.apply("mail ann@a.example or bo@b.example, key sk-proj-AbCdEfGhIjKlMnOpQrSt0123", "t")
    placeholders = list(session.values)
    assert placeholders == ["<EMAIL_1>", "<EMAIL_2>", "<SECRET_1>"]
    longest = max(map(len, placeholders))
    answer = "Dear <EMAIL_1>, cc <EMAIL_2> < 3; use <SECRET_1>"
    expected = "Dear ann@a.example, cc bo@b.example < 3; use sk-proj-AbCdEfGhIjKlMnOpQrSt0123"
    for placeholder in placeholders:
        at = answer.index(placeholder)
        for offset in range(1, len(placeholder)):
            cut = at + offset
            step_filter = PiiStreamFilter(session)
            events = _sse([_chunk(answer[:cut]), _chunk(answer[cut:]), _chunk(finish="stop")])
            text, _args, chunks = _relay(step_filter, events)
            assert text == expected, (placeholder, offset)
            # Nothing after the placeholder's start was held longer than the placeholder itself.
            assert len(chunks[0]["choices"][0]["delta"]["content"]) >= cut - longest
    # One character per event: every boundary at once, and the tool-call arguments the same way.
    step_filter = PiiStreamFilter(session)
    events = _sse([_chunk(c) for c in answer] + [_chunk(finish="stop")])
    assert _relay(step_filter, events)[0] == expected
    arguments = '{"to": "<EMAIL_2>"}'
    step_filter = PiiStreamFilter(session)
    events = _sse([_chunk(tool_args=c) for c in arguments] + [_chunk(finish="tool_calls")])
    assert orjson.loads(_relay(step_filter, events)[1]) == {"to": "bo@b.example"}


def test_each_choice_of_a_stream_is_restored_on_its_own():
    session = PiiSession(compile_policy(EVERYTHING_PSEUDONYMIZED))
    session.apply("ann@a.example bo@b.example", "t")
    step_filter = PiiStreamFilter(session)

    def two(first: str, second: str, finish: str | None = None) -> bytes:
        choices = [
            {"index": i, "delta": {"content": text}, "finish_reason": finish} for i, text in enumerate((first, second))
        ]
        return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": choices}) + b"\n\n"

    out: list[bytes] = []
    for event in (two("<EMA", "<EMAIL"), two("IL_1>!", "_2> ok"), two("", "", "stop"), b"data: [DONE]\n\n"):
        out += apply_filters([step_filter], event)
    texts = ["", ""]
    for event in out[:-1]:
        for choice in orjson.loads(event[6:])["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == ["ann@a.example!", "bo@b.example ok"]


def test_held_text_is_flushed_before_the_finish_event():
    session = PiiSession(compile_policy(EVERYTHING_PSEUDONYMIZED))
    session.apply("ann@a.example", "t")
    step_filter = PiiStreamFilter(session)
    events = _sse([_chunk("the end is <EMAI"), _chunk(finish="stop")])
    text, _args, chunks = _relay(step_filter, events)
    assert text == "the end is <EMAI"
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["the end is ", "<EMAI", None]
    # Events without a placeholder pass through untouched, as bytes.
    plain = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    assert PiiStreamFilter(session)(plain) is plain


def test_scan_responses_removes_new_values_from_answers_and_streams():
    policy = compile_policy({"detectors": {"email": "pseudonymize", "card": "block"}, "scan_responses": True})
    session = PiiSession(policy)
    session.apply("I am ann@a.example", "t")
    answer = "Hi <EMAIL_1>, Bob is bob@leak.example, card 4111 1111 1111 1111."
    assert session.answer_text(answer) == "Hi ann@a.example, Bob is [EMAIL], card [CARD]."
    for size in (1, 5, 17):
        step_filter = PiiStreamFilter(session)
        pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
        text, _args, _chunks = _relay(step_filter, _sse([_chunk(p) for p in pieces] + [_chunk(finish="stop")]))
        assert text == "Hi ann@a.example, Bob is [EMAIL], card [CARD].", size


# What a scan costs is measured by `make bench` (tests/bench/scan.py), never asserted in a timed test.


def test_saving_a_catastrophically_backtracking_pattern_is_refused_with_the_reason():
    from django.core.exceptions import ValidationError

    from routing.policies.spec import pii_policy_clean

    evil = {"custom": [{"name": "evil", "pattern": r"(x+x+)+y", "action": "redact"}]}
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        pii_policy_clean(evil)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert "pii.custom[0].pattern" in message and "backtracks catastrophically" in message
    # Sound patterns pass; a policy stored before the check still loads (and its scans stay time-bound).
    assert pii_policy_clean({"custom": [{"name": "order", "pattern": r"ORD-\d{6}", "action": "redact"}]})
    assert normalize_pii(evil)["custom"][0]["pattern"] == r"(x+x+)+y"


@pytest.mark.parametrize(
    ("pasted", "detector"),
    [
        ("jane\u200b.doe@example.com", "email"),  # a zero-width space inside
        ("jane.doe\uff20example.com", "email"),  # a fullwidth @
        ("4111\u00a01111\u00a01111\u00a01111", "card"),  # no-break spaces
        ("4111.1111.1111.1111", "card"),  # dots
        ("\uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11", "card"),
        ("sk-proj-\u200bAbCdEfGhIjKlMnOpQrStUvWx0123", "secret"),  # a zero-width space after the prefix
        ("536.22.1234", "us_ssn"),  # dots
        ("Project Fal\u200dcon", "terms"),  # a zero-width joiner inside a term
    ],
)
def test_values_are_found_as_people_paste_them_and_replaced_whole(pasted, detector):
    policy = compile_policy(
        {
            "detectors": dict.fromkeys(BUILTIN_DETECTORS, "redact"),
            "terms": {"words": ["Project Falcon"], "action": "redact"},
        }
    )
    text = f"Here: {pasted} (thanks)"
    out = PiiSession(policy).apply(text, "t")
    label = "TERM" if detector == "terms" else detector.upper()
    assert out == f"Here: [{label}] (thanks)", out


def test_pseudonyms_of_pasted_values_restore_the_original_characters():
    session = PiiSession(compile_policy({"detectors": {"email": "pseudonymize"}}))
    pasted = "jane\u200b.doe\uff20example.com"
    sent = session.apply(f"Mail {pasted}", "t")
    assert sent == "Mail <EMAIL_1>"
    assert session.answer_text("Sent to <EMAIL_1>.") == f"Sent to {pasted}."


def test_text_people_write_in_other_scripts_is_left_as_it_was():
    session = PiiSession(compile_policy({"detectors": {"email": "redact", "phone": "redact"}}))
    text = "请把报告发给我，谢谢！ Merci à tous — ça va ?"
    assert session.apply(text, "t") == text
