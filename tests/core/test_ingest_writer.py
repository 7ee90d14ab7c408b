"""Group commit: concurrent deliveries share transactions, each still gets its own result,
and a bad delivery cannot fail the others."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from connectors.base import ChangeEvent, ChangeType
from connectors.webhook import WebhookConnectorFactory
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import Connection, Event, FlowEnablement, Job
from core.ingest import Delivery
from core.services import Services

FLOW = "webhook/ticket_updates"


@pytest.fixture
async def connection(services: Services) -> Connection:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        created = await create_connection(
            session,
            tenant_id=tenant.id,
            factory=WebhookConnectorFactory(),
            name="tickets",
            config={},
            secrets={"signing_secret": "s" * 32},
            keyring=services.keyring,
        )
        session.add(
            FlowEnablement(connection_id=created.id, flow=FLOW, tenant_id=tenant.id, enabled=True)
        )
        return created


def _delivery(connection: Connection, *event_ids: str) -> Delivery:
    events = [
        ChangeEvent(
            platform_event_id=event_id,
            object="ticket",
            record_id=f"T-{event_id}",
            change_type=ChangeType.CREATED,
        )
        for event_id in event_ids
    ]
    return Delivery.of(connection, events, trace_id="0" * 31 + "1")


async def _counts(services: Services) -> tuple[int, int]:
    async with services.sessions() as session:
        events = await session.scalar(select(func.count()).select_from(Event))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    return int(events or 0), int(jobs or 0)


async def test_concurrent_deliveries_share_transactions(
    services: Services, connection: Connection
) -> None:
    commits = 0

    def count_commit(_connection: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(services.engine.sync_engine, "commit", count_commit)
    deliveries = [_delivery(connection, f"e{n}") for n in range(100)]
    results = await asyncio.wait_for(
        asyncio.gather(*(services.ingest.submit(d) for d in deliveries)), timeout=60
    )

    assert [r.accepted for r in results] == [1] * 100
    assert all(len(r.jobs) == 1 for r in results)
    assert len({job for r in results for job in r.jobs}) == 100
    assert await _counts(services) == (100, 100)
    assert commits < 100  # batched: fewer commits than deliveries


async def test_back_to_back_submissions_all_complete(
    services: Services, connection: Connection
) -> None:
    # Each submit starts right after the previous flusher drained: none may be stranded.
    for n in range(30):
        result = await asyncio.wait_for(
            services.ingest.submit(_delivery(connection, f"seq{n}")), timeout=10
        )
        assert result.accepted == 1
    assert await _counts(services) == (30, 30)


async def test_the_same_event_in_one_batch_is_stored_once(
    services: Services, connection: Connection
) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(*(services.ingest.submit(_delivery(connection, "dup")) for _ in range(10))),
        timeout=30,
    )
    assert sorted(r.accepted for r in results) == [0] * 9 + [1]
    assert sum(r.duplicates for r in results) == 9
    assert await _counts(services) == (1, 1)


async def test_a_bad_delivery_does_not_fail_its_batch(
    services: Services, connection: Connection
) -> None:
    ghost = Connection(
        id="con_deleted", tenant_id=connection.tenant_id, connector="webhook", name="gone"
    )
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            services.ingest.submit(_delivery(connection, "ok1")),
            services.ingest.submit(_delivery(ghost, "bad")),
            services.ingest.submit(_delivery(connection, "ok2")),
            return_exceptions=True,
        ),
        timeout=30,
    )
    assert isinstance(outcomes[1], IntegrityError)
    assert [o.accepted for o in (outcomes[0], outcomes[2])] == [1, 1]  # type: ignore[union-attr]
    assert await _counts(services) == (2, 2)
