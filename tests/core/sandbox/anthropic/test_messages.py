"""Non-streaming Messages through the official SDK: shape, usage, determinism, tool use."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, BadRequestError

from core.gateway.catalog import Catalog
from core.gateway.tokens import text_tokens
from core.sandbox.anthropic import AnthropicSandbox
from tests.core.sandbox.anthropic.conftest import MODEL, sdk, user
from tests.core.sandbox.anthropic.schema_check import errors

TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "login", "shipping"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
        "summary": {"type": "string", "minLength": 10, "maxLength": 40},
        "escalate": {"type": "boolean"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "customer": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "tier": {"enum": ["gold", "silver"]}},
            "required": ["id", "tier"],
        },
    },
    "required": ["category", "priority", "summary", "escalate", "tags", "customer"],
}
TOOLS: list[Any] = [
    {"name": "classify_ticket", "description": "Classify", "input_schema": TICKET_SCHEMA},
    {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
]


async def test_a_text_answer_has_the_api_shape(
    client: AsyncAnthropic, sandbox: AnthropicSandbox, catalog: Catalog
) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=1000, messages=user("Where is my invoice?")
    )
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    [block] = message.content
    assert block.type == "text"
    assert block.text
    usage = message.usage
    assert 40 <= usage.output_tokens <= 400
    assert usage.output_tokens == text_tokens(block.text, catalog.get(MODEL))
    assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert usage.service_tier == "standard"
    counted = await client.messages.count_tokens(model=MODEL, messages=user("Where is my invoice?"))
    assert usage.input_tokens == counted.input_tokens
    stats = sandbox.stats
    assert stats.usage[MODEL].output_tokens == usage.output_tokens
    assert stats.usage[MODEL].input_tokens == usage.input_tokens
    assert stats.responses[200] == stats.requests == 2


async def test_the_same_request_gets_the_same_answer(client: AsyncAnthropic) -> None:
    first = await client.messages.create(model=MODEL, max_tokens=1000, messages=user("a"))
    again = await client.messages.create(model=MODEL, max_tokens=1000, messages=user("a"))
    other = await client.messages.create(model=MODEL, max_tokens=1000, messages=user("b"))
    assert first.content == again.content
    assert first.id != again.id
    assert other.content != first.content


async def test_the_answer_is_cut_at_max_tokens(client: AsyncAnthropic) -> None:
    full = await client.messages.create(model=MODEL, max_tokens=4096, messages=user("long"))
    cut = await client.messages.create(model=MODEL, max_tokens=7, messages=user("long"))
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 7
    assert full.content[0].type == cut.content[0].type == "text"
    assert full.content[0].text.startswith(cut.content[0].text)


async def test_text_length_follows_the_configured_range(
    make_sandbox: Any, url: str, catalog: Catalog
) -> None:
    make_sandbox(text_tokens_range=(5, 6))
    async with sdk(url) as client:
        for prompt in ("x", "y", "z"):
            message = await client.messages.create(
                model="claude-haiku-4-5-20251001", max_tokens=100, messages=user(prompt)
            )
            assert message.usage.output_tokens in (5, 6)


async def test_unknown_body_fields_are_ignored(http: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "x": 1}]}],
        "thinking": {"type": "adaptive"},
        "brand_new_option": {"nested": [1, 2]},
        "cache_control": {"type": "ephemeral", "scope": "workspace"},
    }
    response = await http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text


async def test_forced_tool_use_returns_input_valid_against_the_schema(
    client: AsyncAnthropic,
) -> None:
    for prompt in ("one", "two", "three", "four"):
        message = await client.messages.create(
            model=MODEL,
            max_tokens=1000,
            messages=user(prompt),
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "classify_ticket"},
        )
        assert message.stop_reason == "tool_use"
        [block] = message.content
        assert block.type == "tool_use"
        assert block.name == "classify_ticket"
        assert block.id.startswith("toolu_")
        assert errors(TICKET_SCHEMA, block.input) == []
        assert message.usage.output_tokens > 0


async def test_tool_choice_any_and_auto(client: AsyncAnthropic) -> None:
    picked = await client.messages.create(
        model=MODEL, max_tokens=500, messages=user("q"), tools=TOOLS, tool_choice={"type": "any"}
    )
    assert picked.content[0].type == "tool_use"
    auto = await client.messages.create(
        model=MODEL, max_tokens=500, messages=user("q"), tools=TOOLS
    )
    assert auto.content[0].type == "tool_use"
    block = auto.content[0]
    assert block.type == "tool_use"
    after_result: Any = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [block.model_dump(include={"type", "id", "name", "input"})],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "ok"}],
        },
    ]
    final = await client.messages.create(
        model=MODEL, max_tokens=500, messages=after_result, tools=TOOLS
    )
    assert final.content[0].type == "text"
    assert final.stop_reason == "end_turn"
    none = await client.messages.create(
        model=MODEL, max_tokens=500, messages=user("q"), tools=TOOLS, tool_choice={"type": "none"}
    )
    assert none.content[0].type == "text"


async def test_forcing_an_unknown_tool_is_a_bad_request(client: AsyncAnthropic) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=user("q"),
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "missing"},
        )
    assert caught.value.status_code == 400


async def test_count_tokens_counts_tools_system_and_messages(
    client: AsyncAnthropic, catalog: Catalog
) -> None:
    small = await client.messages.count_tokens(model=MODEL, messages=user("hello"))
    bigger = await client.messages.count_tokens(
        model=MODEL, messages=user("hello"), system="You are terse.", tools=copy.deepcopy(TOOLS)
    )
    assert 0 < small.input_tokens < bigger.input_tokens
    older = await client.messages.count_tokens(
        model="claude-haiku-4-5-20251001", messages=user("hello " * 100)
    )
    newer = await client.messages.count_tokens(model=MODEL, messages=user("hello " * 100))
    assert newer.input_tokens > older.input_tokens  # the newer tokenizer counts more
