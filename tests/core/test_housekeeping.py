"""Housekeeping: what workers clean up on their own."""

from __future__ import annotations

from datetime import timedelta

from core.auth import create_tenant
from core.db.models import BudgetPeriod, BudgetScope
from core.gateway.budget_store import put_budget
from core.gateway.budgets import Budgets
from core.housekeeping import housekeep
from core.services import Services


async def test_reservations_of_calls_that_never_settled_are_released(
    services: Services,
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        await put_budget(
            session,
            tenant_id=tenant.id,
            scope=BudgetScope.TENANT,
            scope_value=None,
            period=BudgetPeriod.DAY,
            limit_picodollars=10**12,
        )
    # A process that reserved and then died: its reservation is already past its expiry.
    crashed = Budgets(services.sessions, reservation_ttl=timedelta(seconds=-1))
    await crashed.reserve(tenant.id, "api", None, 4 * 10**11)
    assert (await housekeep(services))["budget_reservations_released"] == 1
    assert (await housekeep(services))["budget_reservations_released"] == 0
    # The whole budget is free again: a reservation of all of it fits.
    await crashed.reserve(tenant.id, "api", None, 10**12)
