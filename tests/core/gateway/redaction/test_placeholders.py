"""Placeholder stability, counts, restore round trips and the request-body walk."""

from __future__ import annotations

import copy
from typing import Any

from core.gateway.redaction import Redactor


def test_same_value_same_placeholder_across_texts() -> None:
    r = Redactor()
    first = r.redact("Mail jane@acme.com or call (415) 555-2671.")
    second = r.redact("Again: jane@acme.com; also bob@acme.com")
    assert first == "Mail <EMAIL_1> or call <PHONE_1>."
    assert second == "Again: <EMAIL_1>; also <EMAIL_2>"
    assert r.counts() == {"email": 3, "phone": 1}


def test_counts_never_hold_values() -> None:
    r = Redactor()
    r.redact("jane@acme.com")
    assert "jane@acme.com" not in repr(r.counts())


def test_restore_round_trip_and_unknown_placeholders() -> None:
    r = Redactor()
    text = "Jane (jane@acme.com, 10.1.2.3) paid with 4111 1111 1111 1111."
    redacted = r.redact(text)
    assert "jane@acme.com" not in redacted
    assert r.restore(redacted) == text
    assert (
        r.restore("<EMAIL_9> and <NOT A PLACEHOLDER> stay")
        == "<EMAIL_9> and <NOT A PLACEHOLDER> stay"
    )


def test_classes_limit_what_is_redacted() -> None:
    r = Redactor(["email"])
    assert r.redact("jane@acme.com from 10.1.2.3") == "<EMAIL_1> from 10.1.2.3"


def body() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "Agent for jane@acme.com",
             "cache_control": {"type": "ephemeral"}}
        ],
        "tools": [{"name": "lookup", "input_schema": {"type": "object", "description": "a@b.io"}}],
        "messages": [
            {"role": "user", "content": "Who is jane@acme.com?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "t1", "name": "lookup",
                     "input": {"email": "jane@acme.com", "tags": ["ip 10.1.2.3"], "n": 3}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "phone (415) 555-2671"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": [
                        {"type": "text", "text": "bob@acme.com"},
                        {"type": "image", "source": {"type": "base64", "data": "eve@acme.com"}},
                    ]},
                ],
            },
        ],
    }  # fmt: skip


def test_body_walk_redacts_what_the_model_reads_only() -> None:
    original = body()
    untouched = copy.deepcopy(original)
    out = Redactor().redact_message_body(original)
    assert original == untouched  # not modified in place
    assert out["system"][0] == {
        "type": "text", "text": "Agent for <EMAIL_1>", "cache_control": {"type": "ephemeral"}
    }  # fmt: skip
    assert out["tools"] == original["tools"]
    assert out["model"] == original["model"]
    messages = out["messages"]
    assert messages[0]["content"] == "Who is <EMAIL_1>?"
    assert messages[1]["content"][1]["input"] == {
        "email": "<EMAIL_1>", "tags": ["ip <IP_ADDRESS_1>"], "n": 3
    }  # fmt: skip
    assert messages[2]["content"][0]["content"] == "phone <PHONE_1>"
    assert messages[2]["content"][1]["content"][0]["text"] == "<EMAIL_2>"
    assert (
        messages[2]["content"][1]["content"][1]
        == original["messages"][2]["content"][1]["content"][1]
    )  # images untouched


def test_system_as_string() -> None:
    out = Redactor().redact_message_body({"system": "for jane@acme.com", "messages": []})
    assert out["system"] == "for <EMAIL_1>"


def test_restore_message() -> None:
    r = Redactor()
    r.redact("jane@acme.com (415) 555-2671")
    message = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Write to <EMAIL_1>."},
            {"type": "tool_use", "id": "t", "name": "call", "input": {"to": ["<PHONE_1>"]}},
            {"type": "thinking", "thinking": "<EMAIL_1>", "signature": "sig"},
        ],
        "stop_reason": "end_turn",
    }
    out = r.restore_message(message)
    assert out["content"][0]["text"] == "Write to jane@acme.com."
    assert out["content"][1]["input"] == {"to": ["(415) 555-2671"]}
    assert out["content"][2] == message["content"][2]
    assert out["stop_reason"] == "end_turn"
