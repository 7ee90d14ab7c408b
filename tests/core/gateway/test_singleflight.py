"""Single flight: one call (or one stream) shared by identical concurrent requests,
whoever goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.gateway.singleflight import SingleFlight, StreamAbandoned, StreamFlight


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Upstream:
    """A call that waits until the test lets it answer, and counts how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.answer = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        number = self.calls
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return f"answer {number}"


async def test_concurrent_callers_with_one_key_share_one_call() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    callers = [asyncio.create_task(flights.run("k", upstream)) for _ in range(5)]
    other = asyncio.create_task(flights.run("other key", upstream))
    await settle()
    assert len(flights) == 2
    upstream.answer.set()
    results = await asyncio.gather(*callers)
    assert [value for value, _ in results] == ["answer 1"] * 5
    assert [shared for _, shared in results] == [False, True, True, True, True]
    assert (await other)[1] is False
    assert upstream.calls == 2
    assert len(flights) == 0
    # Finished flights are forgotten: this is dedup, not a cache.
    assert await flights.run("k", upstream) == ("answer 3", False)


async def test_the_leaders_exception_reaches_every_caller() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise LookupError("upstream refused")

    callers = [asyncio.create_task(flights.run("k", failing)) for _ in range(3)]
    await settle()
    gate.set()
    for caller in callers:
        with pytest.raises(LookupError, match="refused"):
            await caller
    assert len(flights) == 0


async def test_a_cancelled_follower_leaves_the_call_running() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    follower = asyncio.create_task(flights.run("k", upstream))
    await settle()
    follower.cancel()
    await settle()
    upstream.answer.set()
    assert await leader == ("answer 1", False)
    assert follower.cancelled()
    assert upstream.cancelled == 0


async def test_a_cancelled_leader_leaves_the_call_running_for_its_followers() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    leader = asyncio.create_task(flights.run("k", upstream))
    await settle()
    follower = asyncio.create_task(flights.run("k", upstream))
    await settle()
    leader.cancel()
    await settle()
    assert upstream.cancelled == 0
    upstream.answer.set()
    assert await follower == ("answer 1", True)
    assert leader.cancelled()


async def test_the_call_is_cancelled_when_nobody_waits_and_a_newcomer_starts_afresh() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    upstream = Upstream()
    callers = [asyncio.create_task(flights.run("k", upstream)) for _ in range(2)]
    await settle()
    for caller in callers:
        caller.cancel()
    newcomer = asyncio.create_task(flights.run("k", upstream))
    await settle()
    assert upstream.cancelled == 1
    upstream.answer.set()
    assert await newcomer == ("answer 2", False)


# ------------------------------------------------------------------------- StreamFlight


class Source:
    """An upstream byte stream the test feeds chunk by chunk."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()

    async def stream(self) -> AsyncIterator[bytes]:
        self.opened += 1
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1

    async def feed(self, *items: bytes | Exception | None) -> None:
        for item in items:
            self.queue.put_nowait(item)
        await settle()


async def read_all(flights: StreamFlight[str], source: Source) -> tuple[list[bytes], bool]:
    async with flights.subscribe("k", source.stream) as subscription:
        return [chunk async for chunk in subscription], subscription.shared


async def test_a_late_joiner_gets_every_chunk_from_the_start_then_live_ones() -> None:
    flights: StreamFlight[str] = StreamFlight()
    source = Source()
    first = asyncio.create_task(read_all(flights, source))
    await source.feed(b"a", b"b")
    late = asyncio.create_task(read_all(flights, source))
    await source.feed(b"c", None)
    assert await first == ([b"a", b"b", b"c"], False)
    assert await late == ([b"a", b"b", b"c"], True)
    assert source.opened == 1
    assert source.closed == 1
    assert len(flights) == 0
    # A request after the end starts its own upstream.
    again = asyncio.create_task(read_all(flights, source))
    await source.feed(b"d", None)
    assert await again == ([b"d"], False)


async def test_a_slow_reader_does_not_hold_up_a_fast_one() -> None:
    flights: StreamFlight[str] = StreamFlight()
    source = Source()
    slow = flights.subscribe("k", source.stream)
    fast = asyncio.create_task(read_all(flights, source))
    await settle()
    assert len(flights) == 1
    await source.feed(*(bytes([n]) for n in range(100)), None)
    chunks, _ = await fast  # finished while the slow reader has read nothing
    assert len(chunks) == 100
    async with slow:
        assert [chunk async for chunk in slow] == [bytes([n]) for n in range(100)]


async def test_an_upstream_error_reaches_every_reader_after_the_chunks_before_it() -> None:
    flights: StreamFlight[str] = StreamFlight()
    source = Source()
    readers = [flights.subscribe("k", source.stream) for _ in range(2)]
    await source.feed(b"a", ConnectionError("upstream broke"))
    for reader in readers:
        async with reader:
            assert await anext(reader) == b"a"
            with pytest.raises(ConnectionError, match="broke"):
                await anext(reader)
    assert source.closed == 1
    assert len(flights) == 0


async def test_the_upstream_stops_only_when_the_last_reader_leaves() -> None:
    flights: StreamFlight[str] = StreamFlight()
    source = Source()
    leader = asyncio.create_task(read_all(flights, source))
    await settle()
    follower = flights.subscribe("k", source.stream)
    await source.feed(b"a")
    leader.cancel()  # the first caller disconnects
    await settle()
    assert source.closed == 0
    await source.feed(b"b")
    assert [await anext(follower), await anext(follower)] == [b"a", b"b"]
    await follower.aclose()  # the last one leaves: the upstream is cancelled and closed
    await settle()
    assert source.closed == 1
    assert len(flights) == 0
    with pytest.raises(StopAsyncIteration):
        await anext(follower)


async def test_readers_of_an_abandoned_upstream_are_told_so() -> None:
    flights: StreamFlight[str] = StreamFlight()
    source = Source()
    reader = flights.subscribe("k", source.stream)
    await source.feed(b"a")
    pump = flights._streams["k"].pump
    assert pump is not None
    pump.cancel()  # e.g. the event loop shutting down
    await settle()
    async with reader:
        assert await anext(reader) == b"a"
        with pytest.raises(StreamAbandoned):
            await anext(reader)
