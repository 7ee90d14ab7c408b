"""Single flight: identical concurrent requests share one upstream call.

:class:`SingleFlight` shares an awaitable's result, :class:`StreamFlight` a byte stream.
In both, the shared work runs as a task owned by the flight, not by whichever caller
started it: a caller that goes away (cancelled, disconnected) only stops waiting, and the
work is cancelled only when nobody waits any more. Once the work ends its key is forgotten,
so a later identical request starts afresh: this is deduplication of requests in flight,
not a cache (:mod:`core.gateway.response_cache` is that).

Callers with the same key receive the same result object (or the same exception), so share
only immutable values.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

from core.errors import TransientError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:
        """Keys in flight."""
        return len(self._flights)

    async def run(self, key: K, factory: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """``factory()``'s result, and whether it was shared (started by another caller).

        The factory's exception propagates to every caller of the flight.
        """
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            started = flight = _Flight(asyncio.ensure_future(factory()))
            self._flights[key] = started
            started.task.add_done_callback(lambda _: self._landed(key, started))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                self._forget(key, flight)  # a newcomer must not join a cancelled flight
                flight.task.cancel()

    def _forget(self, key: K, flight: _Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _landed(self, key: K, flight: _Flight[V]) -> None:
        self._forget(key, flight)
        if not flight.task.cancelled():
            flight.task.exception()  # every waiter has seen it; do not log it as unretrieved


class StreamAbandoned(TransientError):
    problem_type = "stream-abandoned"
    title = "The shared upstream stream stopped before its end"
    status = 503


class _Stream:
    """One upstream stream: every chunk so far, and an event per new chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.readers = 0
        self.pump: asyncio.Task[None] | None = None

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class StreamFlight(Generic[K]):
    """Share one upstream byte stream among identical concurrent streaming requests.

    The first subscriber starts the upstream; the flight buffers its chunks in order. A
    subscriber joining while the stream is in flight reads every chunk from the start and
    then the live ones. Each subscriber has its own position in the buffer, so a slow reader
    never holds up the others or the upstream. The end of the stream, and its error, reach
    every subscriber after the chunks before it. The buffer is dropped once the stream has
    ended and its last subscriber has left::

        async with flights.subscribe(key, open_upstream) as subscription:
            async for chunk in subscription:
                ...
    """

    def __init__(self) -> None:
        self._streams: dict[K, _Stream] = {}

    def __len__(self) -> int:
        """Streams in flight."""
        return len(self._streams)

    def subscribe(self, key: K, factory: Callable[[], AsyncIterator[bytes]]) -> Subscription:
        stream = self._streams.get(key)
        shared = stream is not None
        if stream is None:
            stream = self._streams[key] = _Stream()
            stream.pump = asyncio.get_running_loop().create_task(self._pump(key, stream, factory))
        stream.readers += 1
        return Subscription(self, key, stream, shared)

    async def _pump(
        self, key: K, stream: _Stream, factory: Callable[[], AsyncIterator[bytes]]
    ) -> None:
        upstream = factory()
        finished = False
        try:
            async for chunk in upstream:
                stream.chunks.append(chunk)
                stream.notify()
            finished = True
        except Exception as exc:
            stream.error = exc
            finished = True
        finally:
            if not finished:
                stream.error = StreamAbandoned("the shared upstream stream was cancelled")
            stream.done = True
            self._forget(key, stream)
            stream.notify()
            aclose = getattr(upstream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _forget(self, key: K, stream: _Stream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]

    def _leave(self, key: K, stream: _Stream) -> None:
        stream.readers -= 1
        if stream.readers > 0:
            return
        if not stream.done and stream.pump is not None:
            self._forget(key, stream)
            stream.pump.cancel()  # nobody reads: stop the upstream
        stream.chunks = []


class Subscription:
    """One reader's view of a shared stream; leave it with ``aclose`` (or ``async with``)."""

    def __init__(self, flight: StreamFlight[K], key: K, stream: _Stream, shared: bool) -> None:
        self.shared = shared  # True when another caller started the upstream
        self._leave: Callable[[], None] | None = lambda: flight._leave(key, stream)
        self._stream = stream
        self._index = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        stream = self._stream
        while self._leave is not None:
            if self._index < len(stream.chunks):
                self._index += 1
                return stream.chunks[self._index - 1]
            if stream.done:
                await self.aclose()
                if stream.error is not None:
                    raise stream.error
                break
            await stream.changed.wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
