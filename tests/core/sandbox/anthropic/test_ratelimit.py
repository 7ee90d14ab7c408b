"""Per-model token buckets: 429s with retry-after, the rate-limit headers, refill, reservations."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, RateLimitError

from core.sandbox.anthropic import AnthropicSandbox, Faults, RateLimits
from core.sandbox.anthropic.ratelimit import TokenBucket, rfc3339
from tests.core.sandbox.anthropic.conftest import MODEL, FakeClock, raw_http, user

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
GROUPS = ("requests", "tokens", "input-tokens", "output-tokens")
BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user("hi")}
BIG = 10**9


def _limits(rpm: int = BIG, input_tpm: int = BIG, output_tpm: int = BIG) -> dict[str, RateLimits]:
    return {MODEL: RateLimits(rpm=rpm, input_tpm=input_tpm, output_tpm=output_tpm)}


def _assert_ratelimit_headers(response: Any) -> None:  # an httpx or the SDK's httpx2 response
    for group in GROUPS:
        prefix = f"anthropic-ratelimit-{group}-"
        assert int(response.headers[prefix + "limit"]) > 0
        assert int(response.headers[prefix + "remaining"]) >= 0
        assert RFC3339.match(response.headers[prefix + "reset"]), response.headers[prefix + "reset"]
    assert response.headers["request-id"].startswith("req_")


async def test_every_response_carries_the_rate_limit_headers(
    http: httpx.AsyncClient, url: str
) -> None:
    responses = [
        await http.post("/v1/messages", json=BODY),
        await http.post("/v1/messages", json={**BODY, "model": "claude-nope"}),
        await http.post("/v1/messages", json={"model": MODEL}),
        await http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": user("x")}),
        await http.get("/v1/models"),
        await http.get("/v1/messages/batches"),
        await http.get("/v1/nowhere"),
    ]
    async with raw_http(url, {"anthropic-version": "2023-06-01"}) as anonymous:
        responses.append(await anonymous.get("/v1/models"))
    assert [r.status_code for r in responses] == [200, 404, 400, 200, 200, 200, 404, 401]
    for response in responses:
        _assert_ratelimit_headers(response)
    assert responses[0].headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert responses[0].headers["anthropic-ratelimit-requests-remaining"] == "3999"


async def test_requests_per_minute_run_out_and_refill(
    make_sandbox: Any, client: AsyncAnthropic, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sandbox: AnthropicSandbox = make_sandbox(limits=_limits(rpm=3))
    for _ in range(3):
        await client.messages.create(**BODY)
    with pytest.raises(RateLimitError) as caught:
        await client.messages.create(**BODY)
    error = caught.value
    assert error.status_code == 429
    body: Any = error.body
    assert body["error"]["type"] == "rate_limit_error"
    assert body["request_id"] == error.response.headers["request-id"]
    assert error.response.headers["retry-after"] == "20"  # one request per 20 s at 3 RPM
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    _assert_ratelimit_headers(error.response)
    reset = datetime.strptime(
        error.response.headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ"
    ).replace(tzinfo=UTC)
    assert 55 <= (reset - datetime.now(UTC)).total_seconds() <= 62  # full again in a minute
    clock.advance(19)
    assert (await http.post("/v1/messages", json=BODY)).headers["retry-after"] == "1"
    clock.advance(1)
    assert (await http.post("/v1/messages", json=BODY)).status_code == 200
    assert sandbox.stats.rate_limited == 2
    assert sandbox.stats.responses[429] == 2


async def test_input_tokens_are_limited_but_cache_reads_are_free(
    make_sandbox: Any, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    make_sandbox(limits=_limits(input_tpm=3000))
    policy = "Refund policy clause. " * 200  # ~1,470 tokens
    plain = {**BODY, "system": policy}
    assert (await http.post("/v1/messages", json=plain)).status_code == 200
    assert (await http.post("/v1/messages", json=plain)).status_code == 200
    limited = await http.post("/v1/messages", json=plain)
    assert limited.status_code == 429
    assert "input tokens" in limited.json()["error"]["message"]
    assert int(limited.headers["retry-after"]) >= 1
    clock.advance(60)
    cached = {
        **BODY,
        "system": [{"type": "text", "text": policy, "cache_control": {"type": "ephemeral"}}],
    }
    statuses = [(await http.post("/v1/messages", json=cached)).status_code for _ in range(6)]
    assert statuses == [200] * 6  # after the first write, only ~10 uncached tokens each


async def test_output_is_reserved_from_max_tokens_until_the_answer_is_done(
    make_sandbox: Any, http: httpx.AsyncClient
) -> None:
    sandbox: AnthropicSandbox = make_sandbox(
        limits=_limits(output_tpm=4000),
        text_tokens_range=(1600, 1600),
        faults=Faults(slow_rate=1.0, slow_seconds=0.3),
    )
    slow = asyncio.create_task(http.post("/v1/messages", json={**BODY, "max_tokens": 4000}))
    for _ in range(200):
        probe = await http.get(f"/v1/models/{MODEL}")
        if probe.headers["anthropic-ratelimit-output-tokens-remaining"] == "0":
            break
        await asyncio.sleep(0.005)
    sandbox.faults.slow_rate = 0.0
    blocked = await http.post("/v1/messages", json=BODY)
    assert blocked.status_code == 429
    assert "output tokens" in blocked.json()["error"]["message"]
    assert (await slow).status_code == 200
    probe = await http.get(f"/v1/models/{MODEL}")  # 4000 - 1600 used = 2400, not 0
    assert probe.headers["anthropic-ratelimit-output-tokens-remaining"] == "2000"
    after = await http.post("/v1/messages", json={**BODY, "max_tokens": 2000})
    assert after.status_code == 200


async def test_an_injected_429_has_retry_after(make_sandbox: Any, client: AsyncAnthropic) -> None:
    sandbox: AnthropicSandbox = make_sandbox(faults=Faults(rate_429=1.0))
    with pytest.raises(RateLimitError) as caught:
        await client.messages.create(**BODY)
    assert caught.value.response.headers["retry-after"] == "1"
    assert sandbox.stats.injected[429] == 1
    assert sandbox.stats.rate_limited == 0


def test_buckets_refill_continuously_up_to_capacity() -> None:
    bucket = TokenBucket(60, now=0.0)
    bucket.level -= 60
    assert bucket.wait(1) == pytest.approx(1.0)
    bucket.refill(0.5)
    assert bucket.level == pytest.approx(0.5)
    assert bucket.wait(10) == pytest.approx(9.5)
    assert bucket.wait(1000) == pytest.approx(59.5)  # more than capacity waits for a full bucket
    bucket.refill(500)
    assert bucket.level == 60
    assert bucket.seconds_to_full() == 0


def test_reset_timestamps_are_rfc3339_utc() -> None:
    assert rfc3339(1_795_608_005) == b"2026-11-25T12:00:05Z"
