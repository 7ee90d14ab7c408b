"""Deliveries this server cannot take through no fault of the platform's are answered 503
with Retry-After (a 4xx would make the platform drop them), and nothing is stored."""

from __future__ import annotations

import httpx
from sqlalchemy import update

from core.db.models import Connection
from core.services import Services
from tests.web.support import (
    TenantKeys,
    assert_problem,
    body_of,
    deliver,
    row_counts,
    ticket,
)


async def _break(services: Services, connection_id: str, **values: str) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(Connection).where(Connection.id == connection_id).values(**values)
        )


async def test_connector_not_installed_is_503_and_retryable(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await _break(services, connection_a, connector="uninstalled")
    before = await row_counts(services)
    response = await deliver(client, connection_a, body_of(ticket("e1")))
    assert_problem(response, 503, "ingress-unavailable")
    assert response.headers["retry-after"] == "60"
    assert await row_counts(services) == before


async def test_undecryptable_secrets_are_503_not_401(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await _break(services, connection_a, secrets_encrypted="v1.retired-key.AAAA")
    before = await row_counts(services)
    response = await deliver(client, connection_a, body_of(ticket("e1")))
    assert_problem(response, 503, "ingress-unavailable")
    assert await row_counts(services) == before
