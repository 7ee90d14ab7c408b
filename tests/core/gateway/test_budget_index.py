"""Whether a tenant has budgets is looked up once per few seconds, never per call."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from core.auth import create_tenant
from core.db.engine import make_read_sessionmaker
from core.db.models import BudgetPeriod, BudgetScope
from core.gateway.budget_store import put_budget
from core.gateway.budgets import Budgets
from core.gateway.catalog import Catalog
from core.gateway.governance import BUDGET_INDEX_SECONDS, Governance
from core.gateway.redaction import RedactionPolicy
from core.services import Services


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_lookup_serves_everyone_and_a_stale_answer_is_refreshed_once(
    services: Services,
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    clock = Clock()
    governance = Governance(
        policy=RedactionPolicy(),
        tenant_policies={},
        catalog=Catalog.load(),
        budgets=Budgets(services.sessions),
        read_sessions=make_read_sessionmaker(services.engine),
        clock=clock,
    )
    lookups: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM budgets" in statement and "LIMIT" in statement:  # the index lookup only
            lookups.append(statement)

    event.listen(services.engine.sync_engine, "before_cursor_execute", seen)
    try:
        answers = await asyncio.gather(
            *(governance._tenant_has_budgets(tenant.id) for _ in range(20))
        )
        assert answers == [False] * 20
        assert len(lookups) == 1  # twenty callers, one query
        async with services.sessions.begin() as session:
            await put_budget(
                session,
                tenant_id=tenant.id,
                scope=BudgetScope.TENANT,
                scope_value=None,
                period=BudgetPeriod.DAY,
                limit_picodollars=10**12,
            )
        assert await governance._tenant_has_budgets(tenant.id) is False  # still fresh
        clock.now += BUDGET_INDEX_SECONDS + 1
        # Expired: the old answer is served at once while one lookup refreshes it.
        stale = await asyncio.gather(
            *(governance._tenant_has_budgets(tenant.id) for _ in range(10))
        )
        assert stale == [False] * 10
        while governance._lookups:
            await asyncio.sleep(0.01)
        assert len(lookups) == 2
        assert await governance._tenant_has_budgets(tenant.id) is True
        governance.forget_budgets(tenant.id)  # a budget changed here: look again now
        assert await governance._tenant_has_budgets(tenant.id) is True
        assert len(lookups) == 3
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", seen)
