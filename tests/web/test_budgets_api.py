"""The budgets API through the real app: roles, upsert by key, audit, current-period
standing, and tenant isolation."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from core.db.models import AuditEntry, Role
from core.gateway.budgets import Budgets
from core.services import Services
from tests.web.support import TenantKeys, assert_problem

USD = 10**12


async def test_admins_set_budgets_and_everyone_reads_them(
    client: httpx.AsyncClient, tenant_a: TenantKeys, services: Services
) -> None:
    body = {"scope": "tenant", "period": "month", "limit_usd": "10.5"}
    created = await client.put("/v1/budgets", json=body, headers=tenant_a.headers())
    assert created.status_code == 200, created.text
    budget = created.json()
    assert budget["limit_picodollars"] == 10_500_000_000_000
    assert budget["soft_thresholds"] == [0.8]
    assert budget["remaining_usd"] == 10.5

    reservation = await Budgets(services.sessions).reserve(tenant_a.id, "api", None, 3 * USD)
    await Budgets(services.sessions).settle(reservation, USD)

    changed = await client.put(
        "/v1/budgets",
        json={**body, "limit_usd": 20, "soft_thresholds": [0.9, 0.5]},
        headers=tenant_a.headers(),
    )
    assert changed.json()["id"] == budget["id"]
    assert changed.json()["soft_thresholds"] == [0.5, 0.9]

    for role in Role:
        listed = await client.get("/v1/budgets", headers=tenant_a.headers(role))
        assert listed.status_code == 200
        [item] = listed.json()["data"]
        assert (item["spent_picodollars"], item["reserved_picodollars"]) == (USD, 0)
        assert item["remaining_picodollars"] == 19 * USD

    refused = await client.put("/v1/budgets", json=body, headers=tenant_a.headers(Role.SERVICE))
    assert_problem(refused, 403, "forbidden")
    bad = {"scope": "feature", "period": "day", "limit_usd": 1}  # no scope_value
    assert_problem(
        await client.put("/v1/budgets", json=bad, headers=tenant_a.headers()),
        422,
        "invalid-request",
    )

    deleted = await client.delete(f"/v1/budgets/{budget['id']}", headers=tenant_a.headers())
    assert deleted.status_code == 204
    assert (await client.get("/v1/budgets", headers=tenant_a.headers())).json()["data"] == []

    async with services.sessions() as session:
        entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [e.action for e in entries] == ["budget.create", "budget.update", "budget.delete"]
    assert entries[0].details["before"] is None
    assert entries[1].details["before"]["limit_picodollars"] == 10_500_000_000_000
    assert entries[1].details["after"]["limit_picodollars"] == 20 * USD
    assert entries[2].details["before"]["soft_thresholds"] == [0.5, 0.9]


async def test_another_tenants_budget_is_not_found(
    client: httpx.AsyncClient, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    body = {"scope": "api_key", "scope_value": "key_1", "period": "day", "limit_usd": 1}
    created = await client.put("/v1/budgets", json=body, headers=tenant_a.headers())
    budget_id = created.json()["id"]
    other = await client.delete(f"/v1/budgets/{budget_id}", headers=tenant_b.headers())
    assert_problem(other, 404, "not-found")
    assert (await client.get("/v1/budgets", headers=tenant_b.headers())).json()["data"] == []
