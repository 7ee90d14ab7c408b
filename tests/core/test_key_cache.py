"""API keys on hot paths: cached for a short TTL, one lookup per key, no write lock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from core.auth import KeyCache, create_api_key, create_tenant, revoke_api_key
from core.db.engine import make_read_sessionmaker
from core.db.models import Role
from core.errors import Unauthenticated
from core.services import Services


async def service_key(services: Services) -> tuple[str, str, str]:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        row, plaintext = await create_api_key(session, tenant.id, Role.SERVICE)
    return tenant.id, row.id, plaintext


async def test_concurrent_requests_share_one_lookup(services: Services) -> None:
    tenant_id, _, key = await service_key(services)
    cache = KeyCache(make_read_sessionmaker(services.engine), ttl=30)
    lookups = 0
    original = cache._lookup

    async def counted(presented: str, digest: str) -> object:
        nonlocal lookups
        lookups += 1
        return await original(presented, digest)

    cache._lookup = counted  # type: ignore[method-assign,assignment]
    principals = await asyncio.gather(*(cache.authenticate(key) for _ in range(20)))
    assert {p.tenant_id for p in principals} == {tenant_id}
    assert lookups == 1
    await cache.authenticate(key)
    assert lookups == 1  # cached


async def test_unknown_keys_fail_every_time_and_are_not_cached(services: Services) -> None:
    cache = KeyCache(make_read_sessionmaker(services.engine), ttl=30)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await cache.authenticate("sy_nope_nope")


async def test_a_revoked_key_stops_working_once_its_entry_expires(services: Services) -> None:
    tenant_id, key_id, key = await service_key(services)
    cache = KeyCache(make_read_sessionmaker(services.engine), ttl=0.05)
    await cache.authenticate(key)
    async with services.sessions.begin() as session:
        await revoke_api_key(session, key_id, tenant_id)
    await asyncio.sleep(0.06)
    with pytest.raises(Unauthenticated):
        await cache.authenticate(key)


async def test_lookups_do_not_wait_for_a_writer(sqlite_url: str) -> None:
    from core.services import build_services
    from tests.conftest import make_settings

    services = build_services(make_settings(sqlite_url))
    try:
        _, _, key = await service_key(services)
        cache = KeyCache(make_read_sessionmaker(services.engine), ttl=0)
        async with services.sessions.begin() as writer:
            await writer.execute(text("UPDATE tenants SET name = name"))  # holds the write lock
            principal = await asyncio.wait_for(cache.authenticate(key), timeout=2)
        assert principal.role is Role.SERVICE
    finally:
        await services.aclose()
