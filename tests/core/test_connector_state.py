"""Connector state: values sealed per connection and key, locks shared by every process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from core.auth import create_tenant
from core.connections import create_connection
from core.connector_state import DatabaseStateStore, StateLockBusy
from core.crypto import DecryptionFailed
from core.db.models import ConnectorStateRow
from core.services import Services

TOKEN = {"access_token": "00Dxx!AQ4AQ-secret", "refresh_token": "5Aep8-rotating"}


async def _connections(services: Services, count: int) -> list[str]:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        made = [
            await create_connection(
                session,
                tenant_id=tenant.id,
                factory=services.connectors.registry.require("webhook"),
                name=f"tool-{n}",
                config={"base_url": "http://127.0.0.1:9"},
                secrets={"signing_secret": "s" * 24},
                keyring=services.keyring,
            )
            for n in range(count)
        ]
    return [connection.id for connection in made]


def _store(services: Services, connection_id: str, **kw: object) -> DatabaseStateStore:
    return DatabaseStateStore(services.sessions, services.keyring, connection_id, **kw)  # type: ignore[arg-type]


async def test_values_round_trip_sealed_and_bound_to_their_connection(
    services: Services,
) -> None:
    one, two = await _connections(services, 2)
    store = _store(services, one)
    assert await store.get("oauth") is None
    await store.put("oauth", TOKEN)
    await store.put("oauth", {**TOKEN, "refresh_token": "5Aep8-next"})  # rotation overwrites
    assert (await store.get("oauth")) == {**TOKEN, "refresh_token": "5Aep8-next"}

    async with services.sessions.begin() as session:
        row = await session.get(ConnectorStateRow, (one, "oauth"))
        assert row is not None
        assert "rotating" not in (row.sealed or "")
        assert "secret" not in (row.sealed or "")
        session.add(ConnectorStateRow(connection_id=two, key="oauth", sealed=row.sealed))
    with pytest.raises(DecryptionFailed):  # a row copied to another connection does not open
        await _store(services, two).get("oauth")


async def test_a_lock_admits_one_holder_across_processes(services: Services) -> None:
    (connection,) = await _connections(services, 1)
    stores = [_store(services, connection) for _ in range(3)]  # three workers
    inside, most = 0, 0

    async def refresh(store: DatabaseStateStore) -> None:
        nonlocal inside, most
        async with store.lock("oauth-refresh"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(refresh(store) for store in stores for _ in range(3)))
    assert most == 1


async def test_a_busy_lock_times_out_and_a_dead_holders_lease_runs_out(
    services: Services,
) -> None:
    (connection,) = await _connections(services, 1)
    holder = _store(services, connection, lease=timedelta(seconds=60))
    waiter = _store(services, connection, wait_seconds=0.2)
    async with holder.lock("refresh"):
        with pytest.raises(StateLockBusy, match="stayed busy"):
            async with waiter.lock("refresh"):
                pass

    # A holder that crashed (its release never ran) blocks only until its lease ends.
    crashed = _store(services, connection, lease=timedelta(seconds=-1))
    await crashed._take("lock:refresh", "lck_crashed")
    async with waiter.lock("refresh"):
        pass
    async with services.sessions() as session:
        owner = await session.scalar(
            select(ConnectorStateRow.lock_owner).where(ConnectorStateRow.key == "lock:refresh")
        )
    assert owner is None  # released by its owner


async def test_the_pool_gives_connectors_a_store_and_the_public_hook_url(
    services: Services,
) -> None:
    (connection_id,) = await _connections(services, 1)
    services.connectors._settings = services.settings.model_copy(
        update={"public_url": "https://switchyard.example.com/"}
    )
    async with services.sessions() as session:
        from core.db.models import Connection

        connection = await session.get(Connection, connection_id)
    assert connection is not None
    factory = services.connectors.registry.require("webhook")
    seen = []
    original = factory.create

    def spy(config, secrets, context):  # type: ignore[no-untyped-def]
        seen.append(context)
        return original(config, secrets, context)

    factory.create = spy  # type: ignore[method-assign]
    try:
        await services.connectors.get(connection)
    finally:
        factory.create = original  # type: ignore[method-assign]
    (context,) = seen
    assert context.public_hook_url == f"https://switchyard.example.com/hooks/{connection_id}"
    assert context.state is not None
    await context.state.put("k", {"v": 1})
    assert await context.state.get("k") == {"v": 1}
