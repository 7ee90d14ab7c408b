"""The response cache: TTL and LRU-by-bytes in memory; Redis expiry and failing open."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.gateway.response_cache import MemoryResponseCache, RedisResponseCache

REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = MemoryResponseCache(clock=clock)
    await cache.set("k", b"answer", ttl=10)
    clock.now += 9.9
    assert await cache.get("k") == b"answer"
    clock.now += 0.1
    assert await cache.get("k") is None
    assert len(cache) == 0
    assert cache.size_bytes == 0


async def test_the_least_recently_used_entry_goes_first_by_count_and_by_bytes() -> None:
    cache = MemoryResponseCache(max_entries=3, max_bytes=10, clock=Clock())
    for key in "abc":
        await cache.set(key, b"xx", ttl=60)
    assert await cache.get("a") == b"xx"  # now the most recently used
    await cache.set("d", b"xx", ttl=60)  # a fourth entry: "b" goes
    assert [await cache.get(k) is not None for k in "abcd"] == [True, False, True, True]
    await cache.set("e", b"x" * 6, ttl=60)  # 12 bytes > 10: the oldest go until it fits
    assert len(cache) <= 3
    assert cache.size_bytes <= 10
    assert await cache.get("e") == b"x" * 6
    assert await cache.get("a") is None


async def test_oversized_values_and_non_positive_ttls_are_not_stored() -> None:
    cache = MemoryResponseCache(max_entries=10, max_bytes=4, clock=Clock())
    await cache.set("big", b"12345", ttl=60)
    await cache.set("now", b"1", ttl=0)
    assert await cache.get("big") is None
    assert await cache.get("now") is None
    await cache.set("k", b"1234", ttl=60)
    await cache.set("k", b"12", ttl=60)  # overwriting keeps the byte count right
    assert cache.size_bytes == 2
    with pytest.raises(ValueError, match="positive"):
        MemoryResponseCache(max_entries=0)


@pytest.fixture
async def redis_cache() -> AsyncIterator[tuple[Redis, str]]:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        if os.environ.get("SWITCHYARD_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required but unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    prefix = f"switchyard-test:{uuid.uuid4().hex}:"
    yield client, prefix
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_redis_stores_under_the_prefix_and_expires_by_itself(
    redis_cache: tuple[Redis, str],
) -> None:
    client, prefix = redis_cache
    cache = RedisResponseCache(client, prefix=prefix)
    await cache.set("k", b"\x00binary answer", ttl=30)
    assert await cache.get("k") == b"\x00binary answer"
    assert 29_000 < await client.pttl(prefix + "k") <= 30_000
    assert await cache.get("other") is None
    await cache.set("short", b"v", ttl=0.05)
    await cache.set("never", b"v", ttl=0)
    await asyncio.sleep(0.1)
    assert await cache.get("short") is None
    assert await cache.get("never") is None


async def test_an_unreachable_redis_is_a_miss_not_an_error() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        cache = RedisResponseCache(client)
        await cache.set("k", b"v", ttl=30)
        assert await cache.get("k") is None
    finally:
        await client.aclose()
