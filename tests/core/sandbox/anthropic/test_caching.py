"""Prompt-cache simulation: writes, reads, TTLs, the minimum length and the breakpoint rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, BadRequestError

from core.sandbox.anthropic import AnthropicSandbox
from tests.core.sandbox.anthropic.conftest import MODEL, FakeClock, sdk, user

LONG = "Refund policy clause. " * 200  # ~4,400 chars: ~1,470 tokens at 3 chars per token


def _system(text: str = LONG, ttl: str | None = None) -> list[dict[str, Any]]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        control["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": control}]


async def _ask(client: AsyncAnthropic, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", user("What is the refund window?"))
    message = await client.messages.create(**body)
    counted = await client.messages.count_tokens(
        **{k: v for k, v in body.items() if k != "max_tokens"}
    )
    usage = message.usage
    total = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    assert total == counted.input_tokens, "input + writes + reads = the count_tokens estimate"
    assert usage.cache_creation is not None
    creation = usage.cache_creation
    split = creation.ephemeral_5m_input_tokens + creation.ephemeral_1h_input_tokens
    assert split == usage.cache_creation_input_tokens
    return usage


@pytest.mark.parametrize("ttl", [None, "5m", "1h"])
async def test_the_first_call_writes_and_the_second_reads(
    client: AsyncAnthropic, sandbox: AnthropicSandbox, ttl: str | None
) -> None:
    first = await _ask(client, system=_system(ttl=ttl))
    assert first.cache_creation_input_tokens > 1024
    assert first.cache_read_input_tokens == 0
    bucket = "ephemeral_1h_input_tokens" if ttl == "1h" else "ephemeral_5m_input_tokens"
    assert getattr(first.cache_creation, bucket) == first.cache_creation_input_tokens
    second = await _ask(client, system=_system(ttl=ttl))
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens  # the uncached remainder
    usage = sandbox.stats.usage[MODEL]
    assert usage.cache_read_input_tokens == second.cache_read_input_tokens
    assert usage.cache_creation_input_tokens == first.cache_creation_input_tokens


async def test_a_prefix_below_the_model_minimum_is_silently_not_cached(
    client: AsyncAnthropic, sandbox: AnthropicSandbox
) -> None:
    for _ in range(2):
        usage = await _ask(client, system=_system("Short policy. " * 20))
        assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
    # Opus 5.5 caches from 512 tokens: the same prompt (~95 tokens) is still too short,
    # a 1,000-token one is cached.
    usage = await _ask(client, model="claude-opus-5-5", system=_system("x" * 3000))
    assert usage.cache_creation_input_tokens > 512
    assert sandbox.cache_entries == 1


async def test_entries_expire_after_their_ttl_and_reads_refresh_them(
    client: AsyncAnthropic, clock: FakeClock
) -> None:
    await _ask(client, system=_system())
    clock.advance(299)
    assert (await _ask(client, system=_system())).cache_read_input_tokens > 0  # refreshed
    clock.advance(299)
    assert (await _ask(client, system=_system())).cache_read_input_tokens > 0
    clock.advance(301)
    expired = await _ask(client, system=_system())
    assert expired.cache_read_input_tokens == 0
    assert expired.cache_creation_input_tokens > 0
    await _ask(client, system=_system(ttl="1h"))  # a different TTL does not change the key
    clock.advance(3000)
    assert (await _ask(client, system=_system(ttl="1h"))).cache_read_input_tokens == 0


async def test_one_hour_entries_outlive_five_minute_ones(
    client: AsyncAnthropic, clock: FakeClock
) -> None:
    await _ask(client, system=_system(ttl="1h"))
    clock.advance(3000)
    assert (await _ask(client, system=_system(ttl="1h"))).cache_read_input_tokens > 0


async def test_mixed_ttls_bill_each_segment_at_its_own_ttl(client: AsyncAnthropic) -> None:
    system = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]
    usage = await _ask(client, system=system)
    assert usage.cache_creation.ephemeral_1h_input_tokens > 1024
    assert usage.cache_creation.ephemeral_5m_input_tokens > 1024
    changed = [
        system[0],
        {"type": "text", "text": LONG + "!", "cache_control": system[1]["cache_control"]},
    ]
    again = await _ask(client, system=changed)
    assert again.cache_read_input_tokens == usage.cache_creation.ephemeral_1h_input_tokens
    assert again.cache_creation.ephemeral_5m_input_tokens > 1024
    assert again.cache_creation.ephemeral_1h_input_tokens == 0


async def test_automatic_caching_marks_the_last_block(client: AsyncAnthropic) -> None:
    messages = user(LONG)
    first = await _ask(client, messages=messages, cache_control={"type": "ephemeral"})
    assert first.cache_creation_input_tokens > 1024
    follow_up: Any = [*messages, {"role": "assistant", "content": "ok"}, *user("and now?")]
    second = await _ask(client, messages=follow_up, cache_control={"type": "ephemeral"})
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens > 0  # the new turns are written too


async def test_lookups_reach_back_twenty_blocks(client: AsyncAnthropic) -> None:
    head = {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}
    await _ask(client, messages=[{"role": "user", "content": [head]}])
    plain = {k: v for k, v in head.items() if k != "cache_control"}

    def grown(extra: int, word: str) -> Any:
        tail: list[dict[str, Any]] = [{"type": "text", "text": f"{word} {i}"} for i in range(extra)]
        tail[-1]["cache_control"] = {"type": "ephemeral"}
        return [{"role": "user", "content": [plain, *tail]}]

    # The cached block is 20 blocks before the breakpoint: found.
    near = await _ask(client, messages=grown(20, "note"))
    assert near.cache_read_input_tokens > 1024
    # 21 blocks before it: out of reach, so the whole prefix is written again.
    far = await _ask(client, messages=grown(21, "other"))
    assert far.cache_read_input_tokens == 0
    assert far.cache_creation_input_tokens > 1024


async def test_the_cache_is_per_api_key(make_sandbox: Any, url: str) -> None:
    make_sandbox(api_keys=("sk-ant-a", "sk-ant-b"))
    async with sdk(url, "sk-ant-a") as a, sdk(url, "sk-ant-b") as b:
        assert (await _ask(a, system=_system())).cache_creation_input_tokens > 0
        assert (await _ask(a, system=_system())).cache_read_input_tokens > 0
        assert (await _ask(b, system=_system())).cache_read_input_tokens == 0


async def test_more_than_four_breakpoints_is_a_bad_request(
    client: AsyncAnthropic, http: httpx.AsyncClient
) -> None:
    system: Any = [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(5)
    ]
    with pytest.raises(BadRequestError, match="maximum of 4"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=user("q"), system=system)
    response = await http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 10, "messages": user("q"), "system": system[:4]},
    )
    assert response.status_code == 200


async def test_a_one_hour_breakpoint_after_a_five_minute_one_is_a_bad_request(
    http: httpx.AsyncClient,
) -> None:
    system = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    body = {"model": MODEL, "max_tokens": 10, "messages": user("q"), "system": system}
    response = await http.post("/v1/messages", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "1h" in error["error"]["message"]
    assert error["request_id"] == response.headers["request-id"]
    bad_ttl = {
        **body,
        "system": [
            {"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "2h"}}
        ],
    }
    assert (await http.post("/v1/messages", json=bad_ttl)).status_code == 400
