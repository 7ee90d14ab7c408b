"""In-process admission: continuous refill, the priority line, deadlines, cancellation,
settling, and the upstream's corrections — all on a manual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from core.gateway.admission import (
    AdmissionTimeout,
    Amounts,
    Permit,
    Priority,
    RequestTooLarge,
)
from core.gateway.admission_memory import InProcessAdmission
from core.gateway.catalog import RateLimits, UnknownModel

MODEL = "claude-test"
FAR = 10_000.0  # a deadline nobody reaches


class ManualClock:
    """Time moves only when a test says so; sleepers wake when it passes their time."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now + 1e-9:
            future = heapq.heappop(self._timers)[2]
            if not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(
    clock: ManualClock, rpm: int = 60, input_tpm: int = 6_000, output_tpm: int = 6_000
) -> InProcessAdmission:
    limits = RateLimits(rpm=rpm, input_tpm=input_tpm, output_tpm=output_tpm)
    return InProcessAdmission({MODEL: limits}, clock=clock, sleep=clock.sleep)


async def take(
    admission: InProcessAdmission,
    *,
    input_tokens: int = 0,
    max_tokens: int = 1,
    priority: Priority = Priority.BACKGROUND,
    deadline: float = FAR,
    tenant: str = "ten_a",
) -> Permit:
    return await admission.acquire(
        MODEL,
        input_tokens=input_tokens,
        max_tokens=max_tokens,
        priority=priority,
        deadline=deadline,
        tenant=tenant,
    )


async def remaining(admission: InProcessAdmission) -> Amounts:
    return (await admission.snapshot())[MODEL].remaining


async def drain_requests(admission: InProcessAdmission, count: int = 60) -> None:
    for _ in range(count):
        await take(admission)


async def test_admits_at_once_and_reserves_all_three_buckets(clock: ManualClock) -> None:
    admission = make(clock)
    permit = await take(admission, input_tokens=100, max_tokens=200)
    assert permit.reserved == Amounts(1, 100, 200)
    assert permit.waited == 0
    assert await remaining(admission) == Amounts(59, 5_900, 5_800)


async def test_a_waiter_sleeps_until_enough_has_refilled_without_polling(
    clock: ManualClock,
) -> None:
    admission = make(clock)  # 60 rpm: one request a second once the burst is spent
    await drain_requests(admission)
    waiter = asyncio.create_task(take(admission))
    await settle()
    assert not waiter.done()
    assert clock.sleeps == [pytest.approx(1.0)]
    await clock.advance(0.5)
    assert not waiter.done()
    await clock.advance(0.5)
    permit = await waiter
    assert permit.waited == pytest.approx(1.0)
    assert len(clock.sleeps) == 1  # woke once, at the right time


async def test_interactive_goes_first_and_each_priority_is_served_in_arrival_order(
    clock: ManualClock,
) -> None:
    admission = make(clock)
    await drain_requests(admission)
    admitted: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        await take(admission, priority=priority)
        admitted.append(name)

    tasks = []
    for name, priority in [
        ("background-1", Priority.BACKGROUND),
        ("background-2", Priority.BACKGROUND),
        ("interactive-1", Priority.INTERACTIVE),
        ("interactive-2", Priority.INTERACTIVE),
    ]:
        tasks.append(asyncio.create_task(request(name, priority)))
        await settle()
    snapshot = (await admission.snapshot())[MODEL]
    assert snapshot.queued == {Priority.INTERACTIVE: 2, Priority.BACKGROUND: 2}
    for _ in tasks:
        await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert admitted == ["interactive-1", "interactive-2", "background-1", "background-2"]


async def test_the_head_of_the_line_is_not_overtaken_by_smaller_requests(
    clock: ManualClock,
) -> None:
    admission = make(clock, input_tpm=600)  # 10 input tokens a second
    await take(admission, input_tokens=600)
    big = asyncio.create_task(take(admission, input_tokens=300))  # needs 30 s
    await settle()
    small = asyncio.create_task(take(admission, input_tokens=10))  # would fit after 1 s
    await settle()
    await clock.advance(1.0)
    assert not small.done()
    await clock.advance(29.0)
    assert big.done()
    assert not small.done()
    await clock.advance(1.0)
    assert (await small).waited == pytest.approx(31.0)


async def test_a_waiter_past_its_deadline_gets_admission_timeout_with_the_wait(
    clock: ManualClock,
) -> None:
    admission = make(clock)
    await drain_requests(admission)
    first = asyncio.create_task(take(admission, deadline=clock.now + 0.5))
    second = asyncio.create_task(take(admission, deadline=clock.now + 0.4))
    await settle()
    await clock.advance(0.4)
    with pytest.raises(AdmissionTimeout) as caught:
        await second
    assert caught.value.status == 429
    assert caught.value.problem_type == "admission-timeout"
    # Its estimate counts the request ahead of it: two tokens at one a second, 0.4 s gone.
    assert caught.value.retry_after == pytest.approx(1.6)
    await clock.advance(0.1)
    with pytest.raises(AdmissionTimeout) as caught:
        await first
    assert caught.value.retry_after == pytest.approx(0.5)
    assert (await admission.snapshot())[MODEL].queued[Priority.BACKGROUND] == 0
    # Already past the deadline and no room: at once.
    with pytest.raises(AdmissionTimeout):
        await take(admission, deadline=clock.now)
    await clock.advance(0.5)
    await take(admission)  # the line did not stall


async def test_a_request_larger_than_a_bucket_is_rejected_at_once(clock: ManualClock) -> None:
    admission = make(clock, input_tpm=1_000, output_tpm=2_000)
    with pytest.raises(RequestTooLarge) as caught:
        await take(admission, input_tokens=1_001)
    assert caught.value.status == 400
    assert caught.value.extensions["bucket"] == "input_tokens"
    with pytest.raises(RequestTooLarge):
        await take(admission, max_tokens=2_001)
    assert await remaining(admission) == Amounts(60, 1_000, 2_000)  # nothing reserved
    with pytest.raises(ValueError, match="negative"):
        await take(admission, input_tokens=-1)


async def test_models_without_limits_use_the_default_or_are_refused(clock: ManualClock) -> None:
    with pytest.raises(UnknownModel):
        await make(clock).acquire(
            "other",
            input_tokens=1,
            max_tokens=1,
            priority=Priority.BACKGROUND,
            deadline=FAR,
            tenant="t",
        )
    default = RateLimits(rpm=5, input_tpm=50, output_tpm=50)
    admission = InProcessAdmission({}, default, clock=clock, sleep=clock.sleep)
    await admission.acquire(
        "other",
        input_tokens=1,
        max_tokens=1,
        priority=Priority.BACKGROUND,
        deadline=FAR,
        tenant="t",
    )
    assert (await admission.snapshot())["other"].remaining == Amounts(4, 49, 49)


async def test_cancelled_waiters_leak_nothing_and_do_not_stall_the_line(
    clock: ManualClock,
) -> None:
    admission = make(clock)
    await drain_requests(admission)
    head, middle, tail = (asyncio.create_task(take(admission)) for _ in range(3))
    await settle()
    head.cancel()
    tail.cancel()
    await settle()
    await clock.advance(1.0)
    await middle
    assert head.cancelled()
    assert tail.cancelled()
    snapshot = (await admission.snapshot())[MODEL]
    assert snapshot.queued[Priority.BACKGROUND] == 0
    assert snapshot.remaining.requests == pytest.approx(0)
    await clock.advance(1.0)
    assert (await remaining(admission)).requests == pytest.approx(1)


async def test_settle_corrects_input_both_ways_and_refunds_unused_output(
    clock: ManualClock,
) -> None:
    admission = make(clock)
    low = await take(admission, input_tokens=100, max_tokens=1_000)
    high = await take(admission, input_tokens=500, max_tokens=1_000)
    assert await remaining(admission) == Amounts(58, 5_400, 4_000)
    low.settle(input_tokens=300, output_tokens=200)  # estimate was low: charge 200 more
    high.settle(input_tokens=100, output_tokens=1_000)  # estimate was high: give 400 back
    assert await remaining(admission) == Amounts(58, 5_600, 4_800)
    # Only the first settle or release counts.
    low.settle(input_tokens=0, output_tokens=0)
    low.release()
    assert await remaining(admission) == Amounts(58, 5_600, 4_800)
    with pytest.raises(ValueError, match="negative"):
        high.settle(input_tokens=-1, output_tokens=0)


async def test_refunds_never_exceed_capacity(clock: ManualClock) -> None:
    admission = make(clock)
    permit = await take(admission, input_tokens=600, max_tokens=600)
    await clock.advance(60.0)  # everything has refilled meanwhile
    permit.settle(input_tokens=0, output_tokens=0)
    assert await remaining(admission) == Amounts(60, 6_000, 6_000)


async def test_release_gives_everything_back_and_wakes_the_head(clock: ManualClock) -> None:
    admission = make(clock)
    big = await take(admission, input_tokens=1_000, max_tokens=6_000)
    waiter = asyncio.create_task(take(admission, max_tokens=100))
    await settle()
    assert not waiter.done()
    big.release()  # never reached the upstream
    await settle()
    assert waiter.done()  # no time passed: the refund itself woke it
    assert await remaining(admission) == Amounts(59, 6_000, 5_900)


async def test_observe_lowers_remaining_and_adopts_a_changed_limit(clock: ManualClock) -> None:
    admission = make(clock)
    await take(admission, input_tokens=1_000, max_tokens=1_000)
    admission.observe(
        MODEL,
        {
            "Anthropic-RateLimit-Requests-Remaining": "10",  # upstream knows of other traffic
            "anthropic-ratelimit-input-tokens-limit": "3000",  # the account's limit changed
            "anthropic-ratelimit-input-tokens-remaining": "4000",  # more than we think: ignored
            "anthropic-ratelimit-output-tokens-limit": "many",  # malformed: ignored
            "anthropic-ratelimit-output-tokens-remaining": "-5",
        },
    )
    snapshot = (await admission.snapshot())[MODEL]
    assert snapshot.capacity == Amounts(60, 3_000, 6_000)
    assert snapshot.remaining == Amounts(10, 3_000, 5_000)
    await clock.advance(1.0)  # refill follows the new limit: 3000 / 60 per second
    assert (await remaining(admission)).input_tokens == 3_000
    admission.observe("never-used", {"anthropic-ratelimit-requests-remaining": "0"})
    assert "never-used" not in await admission.snapshot()


async def test_an_observed_limit_keeps_the_configured_headroom(clock: ManualClock) -> None:
    # Configured limits arrive less the headroom (the factory); a limit the upstream reports
    # must lose the same share, or the first answer would undo the headroom.
    admission = InProcessAdmission(
        {MODEL: RateLimits(rpm=57, input_tpm=5_700, output_tpm=5_700)},
        headroom=0.05,
        clock=clock,
        sleep=clock.sleep,
    )
    await take(admission)
    admission.observe(
        MODEL,
        {
            "anthropic-ratelimit-requests-limit": "60",
            "anthropic-ratelimit-input-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-limit": "1",
        },
    )
    assert (await admission.snapshot())[MODEL].capacity == Amounts(57, 7_600, 1)


async def test_a_shrunken_limit_rejects_a_waiter_that_can_no_longer_fit(
    clock: ManualClock,
) -> None:
    admission = make(clock, input_tpm=600)
    await take(admission, input_tokens=600)
    waiter = asyncio.create_task(take(admission, input_tokens=500))
    await settle()
    admission.observe(MODEL, {"anthropic-ratelimit-input-tokens-limit": "400"})
    await settle()
    with pytest.raises(RequestTooLarge):
        await waiter
    await clock.advance(1.0)
    await take(admission, input_tokens=5)  # the line moves on


async def test_penalize_pauses_the_model_until_retry_after(clock: ManualClock) -> None:
    admission = make(clock)
    await take(admission)
    admission.penalize(MODEL, 5.0)
    assert (await admission.snapshot())[MODEL].paused_for == pytest.approx(5.0)
    waiter = asyncio.create_task(take(admission, priority=Priority.INTERACTIVE))
    await settle()
    await clock.advance(4.9)
    assert not waiter.done()
    await clock.advance(0.1)
    assert (await waiter).waited == pytest.approx(5.0)
    admission.penalize("never-used", 5.0)  # unknown here: nothing to pause
    await admission.aclose()
