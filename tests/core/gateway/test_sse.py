"""SSE parsing, stream following, and replaying a Message as a stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.gateway.accounting import Usage
from core.gateway.sse import (
    SSEEvent,
    SSEParser,
    StreamError,
    StreamState,
    encode_event,
    message_to_events,
)


def wire(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(encode_event(name, data) for name, data in events)


def parse_all(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def follow(raw: bytes) -> tuple[StreamState, list[bool]]:
    state = StreamState()
    firsts = [state.consume(event) for event in SSEParser().feed(raw)]
    return state, firsts


# A stream as the API sends it, with a ping, an unknown event, block and delta type, tool
# input in several fragments, thinking with a signature, and cache usage only in message_delta.
STREAM: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-opus-5-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "service_tier": "standard"}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "think."}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "signature_delta", "signature": "sig=="}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "Hello"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "future_delta", "stuff": 1}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": ", world"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": '{"acc'}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": 'ount": 42}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("content_block_start", {"type": "content_block_start", "index": 3,
                             "content_block": {"type": "future_block", "data": "x"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 3}),
    ("future_event", {"type": "future_event", "anything": True}),
    ("message_delta", {"type": "message_delta",
                       "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 30}}),
    ("message_delta", {"type": "message_delta", "delta": {},
                       "usage": {"output_tokens": 57, "cache_read_input_tokens": 900,
                                 "cache_creation_input_tokens": 100}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip

FINAL: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-opus-5-5",
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
        {"type": "text", "text": "Hello, world"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"account": 42}},
        {"type": "future_block", "data": "x"},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 25,
        "output_tokens": 57,
        "service_tier": "standard",
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": 100,
    },
}


def test_the_parser_handles_any_chunking() -> None:
    raw = wire(*STREAM)
    whole = parse_all([raw])
    assert [event.event for event in whole] == [name for name, _ in STREAM]
    assert [event.json() for event in whole] == [data for _, data in STREAM]
    assert parse_all([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert parse_all([raw[i : i + 7] for i in range(0, len(raw), 7)]) == whole


def test_the_parser_follows_the_sse_rules() -> None:
    raw = (
        b"\xef\xbb\xbf: a comment\r\n"
        b"event: one\r\n"
        b"data: first line\r\n"
        b"data:second line\r\n"
        b"id: 7\r\nretry: 100\r\nweird field\r\n"
        b"\r\n"
        b"event: nodata\n\n"
        b"data: {}\n\n"
        b"event: cut\ndata: never finished\n"
    )
    events = parse_all([raw[:2], raw[2:9], raw[9:]])
    assert events == [
        SSEEvent("one", b"first line\nsecond line"),
        SSEEvent("message", b"{}"),
    ]


def test_a_line_break_split_between_chunks() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: a\r") == []
    assert parser.feed(b"\ndata: 1\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [SSEEvent("a", b"1")]


def test_the_state_assembles_the_message_and_merges_usage() -> None:
    state, firsts = follow(wire(*STREAM))
    assert firsts.count(True) == 1
    assert firsts.index(True) == 3  # the first content_block_delta
    assert state.message() == FINAL
    assert state.done
    assert state.content_sent
    assert state.error is None
    assert state.problems == []
    assert (state.message_id, state.model, state.stop_reason) == (
        "msg_01",
        "claude-opus-5-5",
        "tool_use",
    )
    # Cumulative usage: the latest value of each field, never a sum.
    assert state.usage == Usage(
        input_tokens=25,
        output_tokens=57,
        cache_read_input_tokens=900,
        cache_creation_input_tokens=100,
        cache_write_5m=100,
    )


def test_an_error_after_200_is_recorded_with_the_usage_so_far() -> None:
    events = [
        *STREAM[:4],
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ]
    state, _ = follow(wire(*events))
    assert state.error == StreamError("overloaded_error", "busy")
    assert state.content_sent
    assert not state.done
    assert state.usage.input_tokens == 25
    partial = state.message()
    assert partial["content"] == [{"type": "thinking", "thinking": "Let me "}]
    assert partial["stop_reason"] is None


def test_an_error_before_any_content() -> None:
    state, firsts = follow(wire(STREAM[0], ("error", {"type": "error", "error": {}})))
    assert state.error == StreamError("error", "")
    assert not state.content_sent
    assert firsts == [False, False]


def test_malformed_payloads_are_noted_not_raised() -> None:
    state = StreamState()
    assert not state.consume(SSEEvent("message_start", b"{not json"))
    assert not state.consume(SSEEvent("message_start", b"[1, 2]"))
    assert not state.consume(SSEEvent("message_start", b'{"type": "message_start"}'))
    orphan = {"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta"}}
    state.consume(SSEEvent("content_block_delta", orjson.dumps(orphan)))
    state.consume(SSEEvent("content_block_stop", b'{"index": [1]}'))
    start = {"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}}}
    state.consume(SSEEvent("content_block_start", orjson.dumps(start)))
    bad = {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}
    state.consume(SSEEvent("content_block_delta", orjson.dumps(bad)))
    state.consume(SSEEvent("content_block_stop", b'{"index": 0}'))
    assert len(state.problems) == 5
    assert state.message()["content"] == [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]


def test_events_are_recognised_by_their_type_when_unnamed() -> None:
    state = StreamState()
    state.consume(SSEEvent("message", b'{"type": "message_stop"}'))
    assert state.done


def test_encode_event_writes_the_wire_format() -> None:
    assert encode_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_a_message_replays_as_the_exact_event_sequence() -> None:
    message = {**FINAL, "content": [*FINAL["content"], {"type": "text", "text": ""}]}
    events = parse_all([b"".join(message_to_events(message))])
    names = [event.event for event in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0].json()["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"] == FINAL["usage"]
    assert start["id"] == "msg_01"
    delta = events[-2].json()
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == FINAL["usage"]
    kinds = [e.json()["delta"]["type"] for e in events if e.event == "content_block_delta"]
    assert kinds.count("text_delta") >= 3  # "Hello, world" arrives in a few deltas
    assert kinds.count("input_json_delta") >= 2
    assert kinds.count("signature_delta") == 1
    for event in events:
        assert event.json()["type"] == event.event
    # Following the replay gives back the message.
    state = StreamState()
    firsts = [state.consume(event) for event in events]
    assert firsts.count(True) == 1
    assert state.message() == message
    assert state.problems == []


@pytest.mark.parametrize("pieces", [1, 2, 5, 100])
def test_replay_round_trips_for_any_split(pieces: int) -> None:
    text = "Ünïcode 👋 text " * 5
    message = {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": [
            {"type": "text", "text": text, "citations": [{"type": "char_location", "i": 1}]},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"q": "x"}},
            {"type": "tool_use", "id": "t1", "name": "noop", "input": {}},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": Usage(10, 20, 30, 40, 0, 40).to_api(),
        "container": None,
    }
    state = StreamState()
    for event in parse_all(message_to_events(message, pieces=pieces)):
        state.consume(event)
    assert state.message() == message
