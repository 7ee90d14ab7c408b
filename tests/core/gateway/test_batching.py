"""LoopShare: background work on the event loop takes a share of the loop's time, in short
slices on a quiet loop and in longer ones on a saturated loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from core.gateway.batching import LoopShare


async def work(share: LoopShare, seconds: float) -> float:
    """Busy work for ``seconds`` of its own time, with a checkpoint every 20 microseconds;
    returns the wall-clock time it took."""
    started_all = time.perf_counter()
    spent = 0.0
    while spent < seconds:
        started = time.perf_counter()
        while time.perf_counter() - started < 0.00002:
            pass
        spent += time.perf_counter() - started
        await share.checkpoint()
    return time.perf_counter() - started_all


async def work_beside(other: Coroutine[Any, Any, None], seconds: float) -> float:
    """:func:`work` paced by a fresh LoopShare while ``other`` runs as a task beside it."""
    running = asyncio.create_task(other)
    await asyncio.sleep(0)
    try:
        return await work(LoopShare(), seconds)
    finally:
        running.cancel()


async def test_on_a_quiet_loop_it_works_in_short_slices_at_its_share() -> None:
    gaps: list[float] = []  # how long the loop was held between two turns of another task

    async def watcher() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    took = await work_beside(watcher(), 0.006)
    # 6 ms of work at a 15% share: about 40 ms, never more than a slice (0.2 ms) at once.
    assert 0.025 < took < 0.1
    assert max(gaps) < 0.004  # all at once: 6 ms


async def test_on_a_saturated_loop_it_keeps_its_share() -> None:
    async def hog() -> None:  # another task holding the loop 4 ms a turn
        while True:
            started = time.perf_counter()
            while time.perf_counter() - started < 0.004:
                pass
            await asyncio.sleep(0)

    took = await work_beside(hog(), 0.02)
    # 20 ms of work at about a 15% share: ~130 ms. In 0.2 ms slices, one per 4 ms turn of
    # the hog, it would take 400 ms.
    assert took < 0.3


MIN_SLICE_ITEMS = (10, 11)  # 20-microsecond items in 0.2 ms, give or take float rounding


class FakeTime:
    """A clock that moves only when told to, and a sleep that moves it (``late`` seconds
    more than asked: a loop busy with other work when the sleep was due)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.late = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.late

    def share(self) -> LoopShare:
        return LoopShare(clock=self.clock, sleep=self.sleep)

    async def items_until_it_sleeps(self, share: LoopShare, item: float = 0.00002) -> int:
        """Items of ``item`` seconds done before the share sleeps (one slice)."""
        slept = len(self.sleeps)
        done = 0
        while len(self.sleeps) == slept:
            self.now += item
            done += 1
            await share.checkpoint()
        return done


async def test_an_item_that_overran_its_slice_is_paid_back_and_the_next_slices_are_short() -> None:
    fake = FakeTime()
    share = fake.share()
    fake.now += 0.003  # one item of 3 ms: 15 slices' worth
    await share.checkpoint()
    assert fake.sleeps == [pytest.approx(0.02)]  # its 15% share of the time
    # Then slices of the minimum again (0.2 ms: ten 20-microsecond items), not 3 ms.
    for _ in range(5):
        assert await fake.items_until_it_sleeps(share) in MIN_SLICE_ITEMS


async def test_a_sleep_that_ends_late_earns_a_longer_slice_once() -> None:
    fake = FakeTime()
    share = fake.share()
    fake.late = 0.02  # the loop comes back 20 ms late from the first slice's sleep
    assert await fake.items_until_it_sleeps(share) in MIN_SLICE_ITEMS
    fake.late = 0.0
    # 15% of those 20 ms: 3 ms of work more, 150 items, then short slices again.
    assert await fake.items_until_it_sleeps(share) == pytest.approx(160, abs=2)
    for _ in range(3):
        assert await fake.items_until_it_sleeps(share) in MIN_SLICE_ITEMS
