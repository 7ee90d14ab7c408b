"""A buffer written to the database in batches by a background task, off the request path.

The gateway's call records and its encrypted call audit both follow one shape: the request
path only appends (no I/O, bounded memory: beyond ``max_pending`` the oldest are dropped
and counted), and a background task writes what is buffered every ``flush_interval``
seconds, or at once when ``max_batch`` items wait. A batch that fails to write goes back to
the front of the buffer for the next flush. Subclasses say how one batch is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.logging import get_logger

log = get_logger(__name__)

Item = TypeVar("Item")


class LoopShare:
    """Paces CPU work done on the event loop in the background (building a batch's rows,
    sealing them, running its statements) to a ``SHARE`` of the loop's time: call
    :meth:`checkpoint` after each item.

    The work spends a credit of loop time, which it earns while it sleeps: ``SHARE`` of the
    time it was away. Once the credit is spent, it sleeps until it has earned ``MIN_SLICE``
    again. On a quiet loop a slice is 0.2 ms (then ~1 ms asleep), so a request overlaps one
    slice at most: yielding only (``sleep(0)``) let each of a request's steps queue behind
    another slice, which added a millisecond to the gateway's p99 at concurrency 1. An item
    that overran its slice is paid back by a longer sleep, and the next slice is short again.
    On a saturated loop a sleep ends late, earning more: the slice grows to keep the share,
    and the writers keep pace with the calls instead of falling behind them.
    """

    MIN_SLICE = 0.0002
    SHARE = 0.15

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._since = clock()
        self._credit = self.MIN_SLICE

    async def checkpoint(self) -> None:
        now = self._clock()
        left = self._credit - (now - self._since)
        if left > 0:
            return
        await self._sleep((self.MIN_SLICE - left) / self.SHARE)
        self._since = self._clock()
        self._credit = left + (self._since - now) * self.SHARE


class BatchWriter(Generic[Item]):
    label = "batch"  # what the log lines and the task call the items

    def __init__(self, *, flush_interval: float, max_batch: int, max_pending: int) -> None:
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._pending: deque[Item] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self._reported_drops = 0
        self.written = 0

    async def write_batch(self, batch: list[Item]) -> int:
        """Write ``batch``; returns how many were written (the rest counted in dropped)."""
        raise NotImplementedError

    def _buffer(self, item: Item) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque drops the oldest; flush logs the count
        self._pending.append(item)
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.label)
        if len(self._pending) >= self._max_batch:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception(f"writing {self.label} failed; will retry", pending=len(self))
                if not self._closing:
                    await asyncio.sleep(self._flush_interval * 4)

    async def flush(self) -> int:
        """Write what is buffered now (not what arrives meanwhile); returns the items written.

        Items submitted during the write wait for the next flush, so a busy gateway writes
        few large batches rather than a stream of tiny ones.
        """
        written = 0
        due = len(self)
        while due > 0 and self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, due, len(self)))]
            due -= len(batch)
            try:
                done = await self.write_batch(batch)
            except BaseException:
                self._pending.extendleft(reversed(batch))  # kept for the next flush
                raise
            written += done
            self.written += done
        if self.dropped != self._reported_drops:
            log.warning(f"{self.label} dropped", dropped=self.dropped)
            self._reported_drops = self.dropped
        return written

    async def aclose(self) -> None:
        """Stop the background writer and write what is left.

        The writer is let finish its current flush rather than cancelled: a cancelled write
        could leave its transaction (and SQLite's write lock) behind for the final flush.
        """
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception(f"final write of {self.label} failed", lost=len(self))


class BacklogCollector(Collector):
    """Each writer's buffer for Prometheus, read when scraped: what waits to be written and
    what was dropped. A writer that cannot keep up shows here before memory or the log does
    (its buffer grows to ``max_pending``, then it drops the oldest)."""

    def __init__(self, writers: Sequence[BatchWriter[Any]]) -> None:
        self._writers = list(writers)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pending = GaugeMetricFamily(
            "switchyard_gateway_log_pending",
            "Call records or call audit records buffered, not yet written.",
            labels=["writer"],
        )
        written = CounterMetricFamily(
            "switchyard_gateway_log_written",
            "Call records or call audit records written to the database.",
            labels=["writer"],
        )
        dropped = CounterMetricFamily(
            "switchyard_gateway_log_dropped",
            "Call records or call audit records dropped: the buffer was full, or the "
            "database refused the row.",
            labels=["writer"],
        )
        for writer in self._writers:
            pending.add_metric([writer.label], len(writer))
            written.add_metric([writer.label], writer.written)
            dropped.add_metric([writer.label], writer.dropped)
        yield from (pending, written, dropped)
