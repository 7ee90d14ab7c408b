"""Admission on Redis: instances share one set of buckets (real time, a real Redis).

Skipped when Redis is unreachable, unless SWITCHYARD_REQUIRE_REDIS=1 (CI), which fails.
Each test uses a fresh key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.gateway.admission import AdmissionTimeout, Amounts, Permit, Priority, RequestTooLarge
from core.gateway.admission_redis import AdmissionUnavailable, RedisAdmission
from core.gateway.catalog import RateLimits

REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODEL = "claude-test"
FAR = 60.0

Factory = Callable[..., RedisAdmission]


@pytest.fixture
async def redis_clients() -> AsyncIterator[Callable[[], Redis]]:
    """A factory of clients (one per simulated instance), all closed afterwards."""
    made: list[Redis] = []

    def client() -> Redis:
        made.append(Redis.from_url(REDIS_URL, socket_connect_timeout=1))
        return made[-1]

    probe = client()
    try:
        await probe.ping()
    except (RedisError, OSError) as exc:
        await probe.aclose()
        if os.environ.get("SWITCHYARD_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required but unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    for made_client in made:
        await made_client.aclose()


@pytest.fixture
async def instances(redis_clients: Callable[[], Redis]) -> AsyncIterator[Factory]:
    """``instances(limits)`` → a RedisAdmission on its own client; keys removed after."""
    prefix = f"switchyard-test:{uuid.uuid4().hex}:"
    made: list[RedisAdmission] = []

    def instance(limits: RateLimits, **options: Any) -> RedisAdmission:
        options.setdefault("max_sleep", 0.05)
        made.append(RedisAdmission(redis_clients(), {MODEL: limits}, prefix=prefix, **options))
        return made[-1]

    yield instance
    for admission in made:
        await admission.aclose()
    cleaner = redis_clients()
    keys = [key async for key in cleaner.scan_iter(match=prefix + "*")]
    if keys:
        await cleaner.delete(*keys)


async def take(
    admission: RedisAdmission,
    *,
    input_tokens: int = 0,
    max_tokens: int = 1,
    priority: Priority = Priority.BACKGROUND,
    timeout: float = FAR,
    tenant: str = "ten_a",
) -> Permit:
    return await admission.acquire(
        MODEL,
        input_tokens=input_tokens,
        max_tokens=max_tokens,
        priority=priority,
        deadline=time.monotonic() + timeout,
        tenant=tenant,
    )


async def snapshot(admission: RedisAdmission) -> Any:
    return (await admission.snapshot())[MODEL]


async def test_two_instances_hammering_one_model_stay_within_one_limit(
    instances: Factory,
) -> None:
    # 60 requests and 3000 input tokens a minute: 1 request and 50 tokens a second refill.
    limits = RateLimits(rpm=60, input_tpm=3_000, output_tpm=600_000)
    first, second = instances(limits), instances(limits)
    admitted: list[tuple[int, int]] = []  # (instance, input tokens)
    started = time.monotonic()
    end = started + 1.5

    async def worker(index: int, admission: RedisAdmission) -> None:
        while time.monotonic() < end:
            tokens = random.randint(20, 80)
            try:
                permit = await admission.acquire(
                    MODEL,
                    input_tokens=tokens,
                    max_tokens=500,
                    priority=Priority.BACKGROUND,
                    deadline=end,
                    tenant=f"ten_{index}",
                )
            except AdmissionTimeout:
                return
            admitted.append((index, tokens))
            permit.settle(input_tokens=tokens, output_tokens=10)

    await asyncio.gather(*(worker(i % 2, (first, second)[i % 2]) for i in range(16)))
    elapsed = time.monotonic() - started
    requests, tokens = len(admitted), sum(t for _, t in admitted)
    assert requests <= 60 + 1 * elapsed
    assert tokens <= 3_000 + 50 * elapsed
    assert requests >= 59 or tokens >= 2_900  # one bucket's burst was used up
    assert {index for index, _ in admitted} == {0, 1}


async def test_settle_and_release_are_seen_by_every_instance(instances: Factory) -> None:
    limits = RateLimits(rpm=60, input_tpm=6_000, output_tpm=6_000)  # 100 tokens/s refill
    first, second = instances(limits), instances(limits)
    settled = await take(first, input_tokens=1_000, max_tokens=3_000)
    released = await take(first, input_tokens=1_000, max_tokens=2_000)
    seen = await snapshot(second)
    assert seen.remaining.requests == pytest.approx(58, abs=0.5)
    assert seen.remaining.output_tokens == pytest.approx(1_000, abs=50)
    settled.settle(input_tokens=1_500, output_tokens=500)  # 500 more input, 2500 output back
    released.release()
    await first.flush()
    seen = await snapshot(second)
    assert seen.remaining.requests == pytest.approx(59, abs=0.5)
    assert seen.remaining.input_tokens == pytest.approx(4_500, abs=50)
    assert seen.remaining.output_tokens == pytest.approx(5_500, abs=50)


async def test_observed_headers_are_shared(instances: Factory) -> None:
    limits = RateLimits(rpm=60, input_tpm=6_000, output_tpm=6_000)
    first, second = instances(limits), instances(limits)
    await take(first)
    first.observe(
        MODEL,
        {
            "anthropic-ratelimit-requests-remaining": "5",
            "anthropic-ratelimit-input-tokens-limit": "1000",
            "anthropic-ratelimit-output-tokens-remaining": "9000",  # more than we think
        },
    )
    await first.flush()
    seen = await snapshot(second)
    assert seen.capacity == Amounts(60, 1_000, 6_000)
    assert seen.remaining.requests == pytest.approx(5, abs=0.5)
    assert seen.remaining.input_tokens == pytest.approx(1_000)
    assert seen.remaining.output_tokens == pytest.approx(5_999, abs=10)
    # The second instance was configured with 6000 but learns the limit from Redis.
    with pytest.raises(RequestTooLarge):
        await take(second, input_tokens=1_001)


async def test_a_penalty_pauses_every_instance(instances: Factory) -> None:
    limits = RateLimits(rpm=600, input_tpm=6_000, output_tpm=6_000)
    first, second = instances(limits), instances(limits)
    await take(second)
    first.penalize(MODEL, 1.0)  # long enough that a stalled machine still sees it
    await first.flush()
    with pytest.raises(AdmissionTimeout) as caught:
        await take(second, timeout=0.1)
    assert 0.1 <= caught.value.retry_after <= 1.0
    permit = await take(second)
    assert permit.waited >= 0.1
    assert (await snapshot(second)).paused_for == 0


async def test_an_interactive_waiter_on_one_instance_goes_before_background_on_another(
    instances: Factory,
) -> None:
    limits = RateLimits(rpm=600, input_tpm=60_000, output_tpm=60_000)  # 1000 tokens/s
    first, second = instances(limits), instances(limits)
    await take(first, input_tokens=60_000)
    order: list[str] = []

    async def request(name: str, admission: RedisAdmission, tokens: int, p: Priority) -> None:
        await take(admission, input_tokens=tokens, priority=p)
        order.append(name)

    interactive = asyncio.create_task(request("interactive", first, 300, Priority.INTERACTIVE))
    store, key = first._redis, first._prefix + MODEL
    while float(await store.hget(key, "iw") or 0) == 0:
        await asyncio.sleep(0.005)  # until its first attempt has marked the model
    # Would fit after 50 ms, long before the interactive request's 300 tokens.
    background = asyncio.create_task(request("background", second, 50, Priority.BACKGROUND))
    await asyncio.gather(interactive, background)
    assert order == ["interactive", "background"]


async def test_the_local_line_shares_room_between_tenants(instances: Factory) -> None:
    limits = RateLimits(rpm=600, input_tpm=60_000, output_tpm=60_000)  # 10 requests/s
    admission = instances(limits)
    await take(admission)
    admission.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "0"})
    await admission.flush()
    order: list[str] = []

    async def request(tenant: str) -> None:
        await take(admission, tenant=tenant)
        order.append(tenant)

    burst = [asyncio.create_task(request("A")) for _ in range(30)]
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(request("B")) for _ in range(2)]
    await asyncio.sleep(0.01)
    seen = await snapshot(admission)
    assert seen.queued_by_tenant["B"] == 2
    await asyncio.gather(*others)
    # B's two are in within the first five admissions (A's head, then alternating), not
    # after A's thirty.
    assert order.count("A") <= 3
    for task in burst:
        task.cancel()
    await asyncio.gather(*burst, return_exceptions=True)


async def test_cancelled_waiters_do_not_stall_the_line_or_leak(instances: Factory) -> None:
    limits = RateLimits(rpm=600, input_tpm=6_000, output_tpm=6_000)  # a request per 0.1 s
    admission = instances(limits)
    await take(admission)
    admission.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "0"})
    await admission.flush()
    head, behind = asyncio.create_task(take(admission)), asyncio.create_task(take(admission))
    await asyncio.sleep(0.02)
    head.cancel()
    await behind
    assert head.cancelled()
    seen = await snapshot(admission)
    assert seen.queued[Priority.BACKGROUND] == 0
    assert seen.remaining.requests < 0.5


async def test_a_cancellation_during_the_take_gives_the_tokens_back(instances: Factory) -> None:
    limits = RateLimits(rpm=60, input_tpm=6_000, output_tpm=6_000)
    admission = instances(limits)
    script = admission._scripts["acquire"]
    arrived, proceed = asyncio.Event(), asyncio.Event()

    async def slow_script(**kwargs: Any) -> Any:
        arrived.set()
        await proceed.wait()
        return await script(**kwargs)

    admission._scripts["acquire"] = slow_script  # type: ignore[assignment]
    waiter = asyncio.create_task(take(admission, input_tokens=1_000, max_tokens=1_000))
    await arrived.wait()
    waiter.cancel()
    await asyncio.sleep(0)
    proceed.set()  # the script now runs and takes the tokens after all
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)
    seen = await snapshot(admission)
    assert seen.remaining.requests == pytest.approx(60, abs=0.1)
    assert seen.remaining.input_tokens == pytest.approx(6_000, abs=10)


async def test_an_unreachable_store_is_a_transient_503() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limits = RateLimits(rpm=60, input_tpm=6_000, output_tpm=6_000)
    admission = RedisAdmission(client, {MODEL: limits}, prefix="unused:")
    try:
        with pytest.raises(AdmissionUnavailable) as caught:
            await take(admission)
        assert caught.value.status == 503
        admission.penalize(MODEL, 1.0)  # queued updates are lost and logged, never raised
        await admission.aclose()
    finally:
        await client.aclose()
