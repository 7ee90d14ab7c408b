"""Restoring placeholders in streamed deltas, including placeholders split across deltas."""

from __future__ import annotations

import json
from typing import Any

from core.gateway.redaction import Redactor, StreamRestorer


def text_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def json_delta(part: str, index: int = 1) -> dict[str, Any]:
    delta = {"type": "input_json_delta", "partial_json": part}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def stop(index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def run(restorer: StreamRestorer, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [restorer.feed(event) for event in events]


def joined(outputs: list[list[dict[str, Any]]], field: str = "text") -> str:
    return "".join(
        e["delta"][field] for out in outputs for e in out if e["type"] == "content_block_delta"
    )


def redactor() -> Redactor:
    r = Redactor()
    r.redact("jane@acme.com and bob@acme.com")
    return r


def test_split_across_two_deltas() -> None:
    outputs = run(
        StreamRestorer(redactor()), [text_delta("Mail <EMA"), text_delta("IL_1> now"), stop()]
    )
    assert outputs[0] == [text_delta("Mail ")]  # only the possible placeholder is held
    assert outputs[1] == [text_delta("jane@acme.com now")]
    assert outputs[2] == [stop()]


def test_split_across_three_deltas() -> None:
    events = [text_delta("Hi <"), text_delta("EMAIL_"), text_delta("2>!"), stop()]
    outputs = run(StreamRestorer(redactor()), events)
    assert outputs[0] == [text_delta("Hi ")]
    assert outputs[1] == []
    assert joined(outputs) == "Hi bob@acme.com!"


def test_text_that_cannot_be_a_placeholder_is_not_held() -> None:
    restorer = StreamRestorer(redactor())
    assert restorer.feed(text_delta("a < b")) == [text_delta("a < b")]
    assert restorer.feed(text_delta("x <html>")) == [text_delta("x <html>")]


def test_held_text_is_flushed_at_block_stop() -> None:
    restorer = StreamRestorer(redactor())
    assert restorer.feed(text_delta("ends with <PHO")) == [text_delta("ends with ")]
    assert restorer.feed(stop()) == [text_delta("<PHO"), stop()]


def test_blocks_are_held_separately_and_other_events_pass() -> None:
    restorer = StreamRestorer(redactor())
    start = {"type": "message_start", "message": {"id": "m"}}
    assert restorer.feed(start) == [start]
    assert restorer.feed(text_delta("<EM", 0)) == []
    assert restorer.feed(text_delta("<EM", 2)) == []
    assert restorer.feed(text_delta("AIL_1>", 2)) == [text_delta("jane@acme.com", 2)]
    assert restorer.feed(text_delta("AIL_2>", 0)) == [text_delta("bob@acme.com", 0)]
    thinking = {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "thinking_delta", "thinking": "<EM"},
    }
    assert restorer.feed(thinking) == [thinking]


def test_input_json_delta_is_escaped() -> None:
    r = Redactor()
    r.placeholder("email", 'we"ird\\@acme.com')  # an original with a quote and a backslash
    restorer = StreamRestorer(r)
    parts = ['{"to": "<EMA', 'IL_1>", "n"', ": 1}"]
    outputs = run(restorer, [json_delta(p) for p in parts] + [stop(1)])
    assert json.loads(joined(outputs, "partial_json")) == {"to": 'we"ird\\@acme.com', "n": 1}


def test_flush_at_end_of_a_cut_stream() -> None:
    restorer = StreamRestorer(redactor())
    restorer.feed(text_delta("cut <EMAIL_1"))
    assert restorer.flush() == [text_delta("<EMAIL_1")]
    assert restorer.flush() == []
