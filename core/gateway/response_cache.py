"""The response cache: whole answers to repeated deterministic requests.

Keys come from :func:`core.gateway.fingerprint.request_fingerprint`, which mixes in the
tenant, so one tenant can never read another's answer; :func:`~core.gateway.fingerprint.
cacheable` decides which requests may use the cache at all. Values are opaque bytes.

:class:`MemoryResponseCache` serves one process (TTL, then least-recently-used eviction
bounded by entries and bytes); :class:`RedisResponseCache` is shared by all instances. The
cache is an optimisation, so the Redis one fails open: an unreachable Redis is a miss (and
a skipped write), logged, never an error for the caller.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.logging import get_logger

log = get_logger(__name__)


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds; a ttl ≤ 0 stores nothing."""
        ...


class MemoryResponseCache:
    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._drop(key)
        if ttl <= 0 or len(value) > self._max_bytes:
            return
        self._entries[key] = (value, self._clock() + ttl)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])


class RedisResponseCache:
    """Answers in Redis under ``<prefix><key>``, expiring by Redis itself (``SET … PX``)."""

    def __init__(self, redis: Redis, prefix: str = "switchyard:response:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._prefix + key)
        except RedisError as exc:
            log.warning("response cache read failed", error=str(exc))
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = math.ceil(ttl * 1000)
        if milliseconds <= 0:
            return
        try:
            await self._redis.set(self._prefix + key, value, px=milliseconds)
        except RedisError as exc:
            log.warning("response cache write failed", error=str(exc))
