"""Staying inside Dataverse's service protection limits.

The platform evaluates, per user and per web server over a 5-minute sliding window, 6,000
requests, 20 minutes of combined execution time and 52 concurrent requests, and answers
429 with ``Retry-After`` past them. It publishes no remaining-quota headers a client can
plan with, so the governor does two things: it caps the requests this connection has in
flight (``config.max_concurrency``), and after a 429 it holds every call of the connection
until the ``Retry-After`` has passed. A wait longer than ``max_wait`` is not slept inside
the call: it fails transient with that ``retry_after`` so the queue retries the job later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from core.errors import ConnectorTransientError


class Governor:
    def __init__(
        self,
        *,
        max_concurrency: int,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_wait = max_wait
        self._clock = clock
        self._blocked_until = 0.0
        self.throttles = 0  # 429s seen

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait out a Retry-After in force, then hold one of the connection's slots."""
        wait = self._blocked_until - self._clock()
        if wait > self._max_wait:
            raise ConnectorTransientError(
                f"Dataverse asked to wait {wait:.1f}s (service protection)", retry_after=wait
            )
        if wait > 0:
            await asyncio.sleep(wait)
        async with self._slots:
            yield

    def throttled(self, retry_after: float) -> None:
        self.throttles += 1
        self._blocked_until = max(self._blocked_until, self._clock() + retry_after)

    def within_wait(self, retry_after: float | None) -> bool:
        return retry_after is not None and retry_after <= self._max_wait
