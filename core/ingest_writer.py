"""Group commit for webhook ingress.

Each webhook request must be acknowledged only after its events are committed, and a
commit per request makes the database round trips, not the HTTP work, the ceiling. The
writer lets concurrent requests share transactions: a request hands its parsed delivery to
the writer and waits; a flusher stores everything that queued up while the previous
transaction was in flight (one batch, a handful of statements) and then wakes each waiter
with its own result. Under light load a batch holds one delivery, so latency is that of a
plain commit; under heavy load batches grow and the cost per request falls.

If a batch fails (say one delivery's connection was deleted a moment ago), each delivery
is retried in its own transaction, so one bad delivery cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.base import IngestResult
from core.errors import DatabaseUnavailable
from core.flows.catalog import FlowCatalog
from core.ingest import Delivery, store_batch


class IngestWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        flows: FlowCatalog,
        *,
        max_batch: int = 256,
        flushers: int = 1,
    ) -> None:
        self._sessions = sessions
        self._flows = flows
        self._max_batch = max_batch
        self._max_flushers = flushers
        self._pending: deque[tuple[Delivery, asyncio.Future[IngestResult]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # Counted by hand, not len(_flushers): a finished task leaves that set only via a
        # callback scheduled later, and a delivery queued in between would never be flushed.
        self._active = 0

    async def submit(self, delivery: Delivery) -> IngestResult:
        """Store ``delivery``; returns once it is committed (raises if it was not)."""
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        if self._active < self._max_flushers:
            self._active += 1
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await future

    async def _flush(self) -> None:
        try:
            await self._drain()
        finally:
            # No await between the last empty check and this line, so a submit() either
            # saw this flusher active before it drained or starts a new one.
            self._active -= 1

    async def _drain(self) -> None:
        while self._pending:
            batch = [
                self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))
            ]
            try:
                results = await self._store([delivery for delivery, _ in batch])
            except Exception as exc:
                if len(batch) > 1:
                    await self._store_one_by_one(batch)
                else:
                    _settle(batch[0][1], exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _store(self, deliveries: Sequence[Delivery]) -> list[IngestResult]:
        async with self._sessions.begin() as session:
            return await store_batch(session, deliveries, self._flows)

    async def _store_one_by_one(
        self, batch: list[tuple[Delivery, asyncio.Future[IngestResult]]]
    ) -> None:
        for delivery, future in batch:
            try:
                [result] = await self._store([delivery])
            except Exception as exc:
                _settle(future, exc)
            else:
                _settle(future, result)

    async def aclose(self) -> None:
        """Wait for deliveries already handed over (their senders are waiting for acks)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)


def _settle(future: asyncio.Future[IngestResult], outcome: IngestResult | Exception) -> None:
    if future.done():  # the request went away meanwhile
        return
    if isinstance(outcome, IngestResult):
        future.set_result(outcome)
    elif isinstance(outcome, DBAPIError) and outcome.connection_invalidated:
        future.set_exception(
            DatabaseUnavailable("the database connection was lost; retry the delivery")
        )
    else:
        future.set_exception(outcome)
