"""LoopShare: background work on the event loop takes a share of the loop's time, in short
slices on a quiet loop and in longer ones on a saturated loop."""

from __future__ import annotations

import asyncio
import time

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


async def test_on_a_quiet_loop_it_works_in_short_slices_at_its_share() -> None:
    gaps: list[float] = []  # how long the loop was held between two turns of another task

    async def watcher() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    running = asyncio.create_task(watcher())
    await asyncio.sleep(0)
    try:
        took = await work(LoopShare(), 0.006)
    finally:
        running.cancel()
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

    running = asyncio.create_task(hog())
    await asyncio.sleep(0)
    try:
        took = await work(LoopShare(), 0.02)
    finally:
        running.cancel()
    # 20 ms of work at about a 15% share: ~130 ms. In 0.2 ms slices, one per 4 ms turn of
    # the hog, it would take 400 ms.
    assert took < 0.3
