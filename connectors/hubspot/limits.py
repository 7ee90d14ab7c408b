"""Staying inside HubSpot's rate limits, from the headers every answer carries.

``X-HubSpot-RateLimit-Max`` / ``-Remaining`` / ``-Interval-Milliseconds`` describe the
rolling 10-second window (per app), ``-Daily`` / ``-Daily-Remaining`` the day (per account;
not sent for OAuth tokens). Before each call the governor waits for the window to reopen
when it is spent (at most ``max_wait`` seconds; longer, the call fails transient so the
queue retries it later), refuses at once when the day is spent, and spaces search calls,
which have their own stricter per-second limit. One governor per connector instance
(one per connection per process); the 429 answers HubSpot still sends are the backstop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from connectors.hubspot.errors import DAILY_RETRY_SECONDS
from core.errors import ConnectorTransientError


def _int(headers: Mapping[str, str], name: str) -> int | None:
    for key, value in headers.items():
        if key.lower() == name:
            return int(value) if value.strip().isdigit() else None
    return None


class RateGovernor:
    def __init__(
        self,
        *,
        search_interval: float,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._search_interval = search_interval
        self._max_wait = max_wait
        self._clock = clock
        self._remaining: int | None = None
        self._window_ends = 0.0
        self._daily_remaining: int | None = None
        self._next_search = 0.0
        self._lock = asyncio.Lock()

    async def before(self, *, search: bool = False) -> None:
        if self._daily_remaining == 0:
            raise ConnectorTransientError(
                "HubSpot's daily API limit for this account is spent",
                retry_after=DAILY_RETRY_SECONDS,
            )
        async with self._lock:
            now = self._clock()
            wait = 0.0
            if self._remaining is not None and self._remaining <= 0 and now < self._window_ends:
                wait = self._window_ends - now
            if search:
                wait = max(wait, self._next_search - now)
                self._next_search = max(now, self._next_search) + self._search_interval
            if wait > self._max_wait:
                raise ConnectorTransientError(
                    f"HubSpot's rate window reopens in {wait:.1f}s", retry_after=wait
                )
            if self._remaining is not None and self._remaining > 0:
                self._remaining -= 1  # a call in flight uses one before its answer says so
        if wait > 0:
            await asyncio.sleep(wait)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Read the limit headers of an answer (success or error)."""
        if not headers:
            return
        remaining = _int(headers, "x-hubspot-ratelimit-remaining")
        interval = _int(headers, "x-hubspot-ratelimit-interval-milliseconds")
        if remaining is not None:
            self._remaining = remaining
            if remaining <= 0:
                self._window_ends = self._clock() + (interval or 10_000) / 1000
        daily = _int(headers, "x-hubspot-ratelimit-daily-remaining")
        if daily is not None:
            self._daily_remaining = daily

    def throttled(self, retry_after: float | None) -> None:
        """A 429 arrived: no call until the window it names has passed."""
        self._remaining = 0
        self._window_ends = self._clock() + (retry_after if retry_after is not None else 10.0)
