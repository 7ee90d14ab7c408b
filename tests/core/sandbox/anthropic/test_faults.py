"""Injected faults: 529/500 as SDK exceptions, seeded draws, slow answers, schema breaks."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic

from core.sandbox.anthropic import AnthropicSandbox, Faults, RateLimits
from tests.core.sandbox.anthropic.conftest import MODEL, user
from tests.core.sandbox.anthropic.schema_check import errors
from tests.core.sandbox.anthropic.test_messages import TICKET_SCHEMA, TOOLS

BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user("hi")}


@pytest.mark.parametrize(
    ("faults", "status", "error_type", "exception"),
    [
        (Faults(rate_529=1.0), 529, "overloaded_error", anthropic.OverloadedError),
        (Faults(rate_500=1.0), 500, "api_error", anthropic.InternalServerError),
    ],
)
async def test_injected_server_errors_reach_the_sdk_as_typed_exceptions(
    make_sandbox: Any,
    client: AsyncAnthropic,
    faults: Faults,
    status: int,
    error_type: str,
    exception: type[anthropic.APIStatusError],
) -> None:
    sandbox: AnthropicSandbox = make_sandbox(faults=faults)
    with pytest.raises(exception) as caught:
        await client.messages.create(**BODY)
    error = caught.value
    assert error.status_code == status
    body: Any = error.body
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == error.response.headers["request-id"]
    assert "anthropic-ratelimit-requests-limit" in error.response.headers
    assert sandbox.stats.injected[status] == 1
    assert sandbox.stats.responses[status] == 1
    with pytest.raises(exception):
        async with client.messages.stream(**BODY) as stream:
            await stream.get_final_message()


async def test_faults_follow_the_seed_and_can_change_at_runtime(
    make_sandbox: Any, http: httpx.AsyncClient
) -> None:
    def outcomes_for(sandbox: AnthropicSandbox) -> Any:
        async def run() -> list[int]:
            return [(await http.post("/v1/messages", json=BODY)).status_code for _ in range(30)]

        return run()

    first = await outcomes_for(make_sandbox(seed=7, faults=Faults(rate_529=0.3, rate_500=0.2)))
    second = await outcomes_for(make_sandbox(seed=7, faults=Faults(rate_529=0.3, rate_500=0.2)))
    other = await outcomes_for(make_sandbox(seed=8, faults=Faults(rate_529=0.3, rate_500=0.2)))
    assert first == second != other
    assert {200, 500, 529} == set(first)
    sandbox: AnthropicSandbox = make_sandbox(faults=Faults(rate_529=1.0))
    assert (await http.post("/v1/messages", json=BODY)).status_code == 529
    sandbox.faults.rate_529 = 0.0
    assert (await http.post("/v1/messages", json=BODY)).status_code == 200
    sandbox.reset()
    assert sandbox.stats.requests == 0


async def test_the_slow_fault_delays_the_answer(make_sandbox: Any, http: httpx.AsyncClient) -> None:
    make_sandbox(faults=Faults(slow_rate=1.0, slow_seconds=0.2))
    began = time.perf_counter()
    assert (await http.post("/v1/messages", json=BODY)).status_code == 200
    assert time.perf_counter() - began >= 0.2


async def test_the_schema_break_fault_returns_invalid_tool_input(
    make_sandbox: Any, client: AsyncAnthropic
) -> None:
    make_sandbox(faults=Faults(schema_break_rate=1.0))
    message = await client.messages.create(
        **BODY, tools=TOOLS, tool_choice={"type": "tool", "name": "classify_ticket"}
    )
    block = message.content[0]
    assert block.type == "tool_use"
    assert errors(TICKET_SCHEMA, block.input) != []


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_529"):
        Faults(rate_529=1.5)
    with pytest.raises(ValueError, match="slow_seconds"):
        Faults(slow_seconds=-1)


async def test_a_plain_answer_waits_for_first_token_and_output_time(
    make_sandbox: Any, http: httpx.AsyncClient
) -> None:
    # Opus 5.5: TTFT 1,500 ms and 45 tokens/s; at scale 0.05, 75 ms + 40 tokens in 44 ms.
    make_sandbox(latency_scale=0.05, text_tokens_range=(40, 40), clock=time.monotonic)
    began = time.perf_counter()
    response = await http.post("/v1/messages", json={**BODY, "model": "claude-opus-5-5"})
    elapsed = time.perf_counter() - began
    assert response.status_code == 200
    assert 0.11 <= elapsed < 2.0


async def test_reset_forgets_cache_buckets_and_stats(
    make_sandbox: Any, http: httpx.AsyncClient
) -> None:
    sandbox: AnthropicSandbox = make_sandbox(
        limits={MODEL: RateLimits(rpm=1, input_tpm=10**6, output_tpm=10**6)}
    )
    system = [{"type": "text", "text": "p " * 2000, "cache_control": {"type": "ephemeral"}}]
    assert (await http.post("/v1/messages", json={**BODY, "system": system})).status_code == 200
    assert (await http.post("/v1/messages", json=BODY)).status_code == 429
    assert sandbox.cache_entries == 1
    sandbox.reset()
    assert (sandbox.cache_entries, sandbox.stats.requests) == (0, 0)
    again = await http.post("/v1/messages", json={**BODY, "system": system})
    assert again.status_code == 200
    assert again.json()["usage"]["cache_read_input_tokens"] == 0


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (409, "conflict_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
async def test_fail_next_answers_any_api_error_status(
    sandbox: AnthropicSandbox, http: httpx.AsyncClient, status: int, error_type: str
) -> None:
    sandbox.fail_next(status, times=2)
    for _ in range(2):
        response = await http.post("/v1/messages", json=BODY)
        assert response.status_code == status
        body = response.json()
        assert body["error"]["type"] == error_type
        assert body["request_id"] == response.headers["request-id"]
    assert (await http.post("/v1/messages", json=BODY)).status_code == 200
    assert sandbox.stats.injected[status] == 2


async def test_fail_next_reaches_the_sdk_as_its_typed_errors(
    sandbox: AnthropicSandbox, client: AsyncAnthropic
) -> None:
    sandbox.fail_next(504)
    with pytest.raises(anthropic.GatewayTimeoutError):
        await client.messages.create(**BODY)
    sandbox.fail_next(402)
    with pytest.raises(anthropic.PaymentRequiredError):
        await client.messages.create(**BODY)
    with pytest.raises(ValueError, match="418"):
        sandbox.fail_next(418)
