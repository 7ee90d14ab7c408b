"""LoopShare: background work on the event loop yields to requests in short slices, and
takes a fixed share of a saturated loop instead of one short slice per turn."""

from __future__ import annotations

import asyncio
import time

from core.gateway.batching import LoopShare


async def work(share: LoopShare, seconds: float) -> None:
    """Busy work for ``seconds`` of its own time, with a checkpoint every few microseconds."""
    spent = 0.0
    while spent < seconds:
        started = time.perf_counter()
        while time.perf_counter() - started < 0.00002:
            pass
        spent += time.perf_counter() - started
        await share.checkpoint()


async def test_on_an_idle_loop_it_yields_every_min_slice() -> None:
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await work(LoopShare(), 0.01)  # 10 ms of work in 0.2 ms slices: about 50 yields
    finally:
        running.cancel()
    assert 15 <= turns <= 60


async def test_on_a_busy_loop_it_takes_a_share_of_it() -> None:
    hog_turns = 0

    async def hog() -> None:  # another task holding the loop 4 ms a turn
        nonlocal hog_turns
        while True:
            hog_turns += 1
            started = time.perf_counter()
            while time.perf_counter() - started < 0.004:
                pass
            await asyncio.sleep(0)

    running = asyncio.create_task(hog())
    await asyncio.sleep(0)
    try:
        # 20 ms of work: a quarter of the hog's 4 ms a turn (1 ms) between yields, not 0.2 ms.
        await work(LoopShare(), 0.02)
    finally:
        running.cancel()
    assert 10 <= hog_turns <= 35  # in 0.2 ms slices it would be about 100
