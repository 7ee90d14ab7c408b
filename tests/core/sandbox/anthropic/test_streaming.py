"""Streaming (SSE): the SDK's stream helper, the exact wire order, and the stream variants."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic

from core.sandbox.anthropic import AnthropicSandbox, Faults
from tests.core.sandbox.anthropic.conftest import MODEL, parse_sse, raw_http, sdk, user
from tests.core.sandbox.anthropic.schema_check import errors
from tests.core.sandbox.anthropic.test_messages import TICKET_SCHEMA, TOOLS

BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 1000, "messages": user("stream me")}


def _text(message: Any) -> str:
    [block] = message.content
    assert block.type == "text"
    text: str = block.text
    return text


async def _raw_stream(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    response = await http.post("/v1/messages", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return response


async def test_the_sdk_reassembles_streamed_text_and_usage(client: AsyncAnthropic) -> None:
    async with client.messages.stream(**BODY) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    plain = await client.messages.create(**BODY)
    assert len(pieces) > 3
    assert "".join(pieces) == _text(final) == _text(plain)
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.stop_reason == "end_turn"


async def test_events_come_in_the_documented_order(http: httpx.AsyncClient) -> None:
    response = await _raw_stream(http, BODY)
    events = parse_sse(response.content)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    body = [n for n in names[1:-2] if n != "ping"]
    assert body[0] == "content_block_start"
    assert body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"}
    assert len(body) > 4
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    assert start["usage"]["cache_read_input_tokens"] == 0
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    texts = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert all(d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")
    plain = (await http.post("/v1/messages", json=BODY)).json()
    assert "".join(texts) == plain["content"][0]["text"]
    assert delta["usage"]["output_tokens"] == plain["usage"]["output_tokens"]
    assert "request-id" in response.headers
    assert "anthropic-ratelimit-requests-remaining" in response.headers


async def test_tool_input_arrives_as_several_json_fragments(
    client: AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    body = {**BODY, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "classify_ticket"}}
    events = parse_sse((await _raw_stream(http, body)).content)
    fragments = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert len([f for f in fragments if f]) >= 3
    start = next(data for name, data in events if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["input"] == {}
    assert errors(TICKET_SCHEMA, json.loads("".join(fragments))) == []
    async with client.messages.stream(**body) as stream:
        final = await stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use"
    assert final.stop_reason == "tool_use"
    assert block.input == json.loads("".join(fragments))


async def test_a_mid_stream_error_follows_http_200(
    make_sandbox: Any, url: str, http: httpx.AsyncClient
) -> None:
    sandbox: AnthropicSandbox = make_sandbox(faults=Faults(mid_stream_error_rate=1.0))
    response = await _raw_stream(http, BODY)
    events = parse_sse(response.content)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert any(name == "content_block_delta" for name, _ in events)
    assert "message_stop" not in [name for name, _ in events]
    seen: list[str] = []

    async def read_all(client: AsyncAnthropic) -> None:
        async with client.messages.stream(**BODY) as stream:
            async for text in stream.text_stream:
                seen.append(text)

    async with sdk(url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read_all(client)
    assert seen, "the error came after some text"
    assert caught.value.status_code == 200
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert sandbox.stats.mid_stream_errors == 2
    assert sandbox.stats.usage[MODEL].output_tokens > 0


async def test_cache_usage_can_come_only_in_message_delta(
    make_sandbox: Any, client: AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    make_sandbox(cache_usage_in_delta_only=True)
    system = [{"type": "text", "text": "policy " * 700, "cache_control": {"type": "ephemeral"}}]
    body = {**BODY, "system": system}
    events = parse_sse((await _raw_stream(http, body)).content)
    start_usage = events[0][1]["message"]["usage"]
    assert set(start_usage) == {"input_tokens", "output_tokens"}
    delta_usage = next(data for name, data in events if name == "message_delta")["usage"]
    assert delta_usage["cache_creation_input_tokens"] > 1024
    assert delta_usage["cache_creation"]["ephemeral_5m_input_tokens"] > 1024
    async with client.messages.stream(**body) as stream:
        final = await stream.get_final_message()
    assert final.usage.cache_read_input_tokens == delta_usage["cache_creation_input_tokens"]
    assert final.usage.cache_creation_input_tokens == 0


async def test_the_sdk_ignores_an_unknown_event_type(
    make_sandbox: Any, client: AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    make_sandbox(emit_unknown_events=True)
    names = [name for name, _ in parse_sse((await _raw_stream(http, BODY)).content)]
    assert "sandbox_unknown_event" in names
    async with client.messages.stream(**BODY) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text
    assert _text(final) == text


async def test_events_are_paced_by_the_latency_model(make_sandbox: Any, url: str) -> None:
    # Sonnet 5.5: TTFT 700 ms, 80 tokens/s; scaled by 0.05 -> 35 ms, then 40 tokens in 25 ms.
    make_sandbox(latency_scale=0.05, text_tokens_range=(40, 40), clock=time.monotonic)
    async with raw_http(url) as http:
        began = time.perf_counter()
        arrivals: list[tuple[str, float]] = []
        async with http.stream("POST", "/v1/messages", json={**BODY, "stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    arrivals.append((line[7:], time.perf_counter() - began))
    first_delta = next(t for name, t in arrivals if name == "content_block_delta")
    start = arrivals[0][1]
    assert first_delta - start >= 0.03
    assert arrivals[-1][1] - first_delta >= 0.015
    assert arrivals[-1][1] < 2.0
