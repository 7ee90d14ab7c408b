"""Budget rows: calendar periods, which budgets apply to a call, the usage-row locking the
reservations rely on, and budget administration.

The reservation protocol lives in :mod:`core.gateway.budgets`; this module holds the rows
it and the ``/v1/budgets`` API work on. Every lookup is tenant-scoped: another tenant's
budget is :class:`~core.errors.NotFound`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Budget, BudgetPeriod, BudgetReservation, BudgetScope, BudgetUsage
from core.db.types import new_id
from core.errors import InvalidRequest, NotFound

PICO = Decimal(10) ** 12
DEFAULT_THRESHOLDS = (0.8,)
MAX_THRESHOLDS = 10
UsageKey = tuple[str, datetime]  # (budget id, period start): one usage row
SCOPE_ORDER = {BudgetScope.TENANT: 0, BudgetScope.FEATURE: 1, BudgetScope.API_KEY: 2}


def usd(picodollars: int) -> Decimal:
    return (Decimal(picodollars) / PICO).normalize()


def period_start(period: str, now: datetime) -> datetime:
    """The start (UTC) of the calendar day or month containing ``now``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if BudgetPeriod(period) == BudgetPeriod.DAY else day.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    """When the period containing ``now`` ends and the next one starts (UTC)."""
    start = period_start(period, now)
    if BudgetPeriod(period) == BudgetPeriod.DAY:
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def describe(budget: Budget) -> str:
    """``the tenant budget``, ``feature 'triage''s budget``… (for messages)."""
    if budget.scope == BudgetScope.TENANT:
        return "the tenant's"
    if budget.scope == BudgetScope.FEATURE:
        return f"feature {budget.scope_value!r}'s"
    return f"API key {budget.scope_value}'s"


def _sort_key(budget: Budget) -> tuple[int, str]:
    return SCOPE_ORDER[BudgetScope(budget.scope)], budget.period


async def applicable_budgets(
    session: AsyncSession, tenant_id: str, feature: str | None, api_key_id: str | None
) -> list[Budget]:
    """The tenant's budgets, the feature's and the API key's, in that order."""
    matches = [Budget.scope == BudgetScope.TENANT.value]
    if feature is not None:
        matches.append(
            and_(Budget.scope == BudgetScope.FEATURE.value, Budget.scope_value == feature)
        )
    if api_key_id is not None:
        matches.append(
            and_(Budget.scope == BudgetScope.API_KEY.value, Budget.scope_value == api_key_id)
        )
    rows = await session.scalars(select(Budget).where(Budget.tenant_id == tenant_id, or_(*matches)))
    return sorted(rows, key=_sort_key)


# ------------------------------------------------------------- usage rows


async def lock_usage(
    session: AsyncSession, keys: Iterable[UsageKey]
) -> dict[UsageKey, BudgetUsage]:
    """Lock the usage rows for ``keys`` in (budget id, period start) order."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.scalars(
        select(BudgetUsage)
        .where(
            or_(
                *(
                    and_(BudgetUsage.budget_id == bid, BudgetUsage.period_start == start)
                    for bid, start in wanted
                )
            )
        )
        .order_by(BudgetUsage.budget_id, BudgetUsage.period_start)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {(row.budget_id, row.period_start): row for row in rows}


async def take_reservations(
    session: AsyncSession, where: Any
) -> tuple[dict[UsageKey, int], set[str]]:
    """Delete reservation rows matching ``where``; returns the amounts they held per usage
    row and the reservation ids. Whoever deletes a row releases it (settle, release and
    sweep may race for one reservation)."""
    result = await session.execute(
        delete(BudgetReservation)
        .where(where)
        .returning(
            BudgetReservation.id,
            BudgetReservation.budget_id,
            BudgetReservation.period_start,
            BudgetReservation.amount_picodollars,
        )
    )
    held: dict[UsageKey, int] = defaultdict(int)
    ids: set[str] = set()
    for reservation_id, budget_id, start, amount in result:
        held[(budget_id, start)] += amount
        ids.add(reservation_id)
    return held, ids


def unreserve(usage: BudgetUsage, amount: int) -> None:
    usage.reserved_picodollars = max(usage.reserved_picodollars - amount, 0)


# ------------------------------------------------------------------ administration


@dataclass(frozen=True)
class BudgetStatus:
    """A budget and where it stands in the current period."""

    budget: Budget
    period_start: datetime
    resets_at: datetime
    spent_picodollars: int
    reserved_picodollars: int

    @property
    def remaining_picodollars(self) -> int:
        left = self.budget.limit_picodollars - self.spent_picodollars - self.reserved_picodollars
        return max(left, 0)


def snapshot(budget: Budget) -> dict[str, Any]:
    """The budget's settings, for audit entries (before/after)."""
    return {
        "scope": budget.scope,
        "scope_value": budget.scope_value,
        "period": budget.period,
        "limit_picodollars": budget.limit_picodollars,
        "soft_thresholds": list(budget.soft_thresholds),
    }


def _thresholds(values: list[float] | None) -> list[float]:
    if values is None:
        return list(DEFAULT_THRESHOLDS)
    if len(values) > MAX_THRESHOLDS:
        raise InvalidRequest(f"a budget takes at most {MAX_THRESHOLDS} soft thresholds")
    for value in values:
        if not 0 < value <= 1:
            raise InvalidRequest(f"soft threshold {value} is not a fraction in (0, 1]")
    return sorted(set(values))


def _scope_value(scope: BudgetScope, value: str | None) -> str | None:
    if scope == BudgetScope.TENANT:
        if value is not None:
            raise InvalidRequest("a tenant budget takes no scope_value")
        return None
    if not value:
        raise InvalidRequest(f"a {scope.value} budget needs a scope_value")
    if len(value) > 100:
        raise InvalidRequest("scope_value is longer than 100 characters")
    return value


async def list_budgets(
    session: AsyncSession, tenant_id: str, *, now: datetime
) -> list[BudgetStatus]:
    """The tenant's budgets with their current-period spend and reservations."""
    budgets = sorted(
        await session.scalars(select(Budget).where(Budget.tenant_id == tenant_id)),
        key=lambda b: (*_sort_key(b), b.scope_value or ""),
    )
    if not budgets:
        return []
    starts = {b.id: period_start(b.period, now) for b in budgets}
    usage = {
        (row.budget_id, row.period_start): row
        for row in await session.scalars(
            select(BudgetUsage).where(
                or_(
                    *(
                        and_(BudgetUsage.budget_id == bid, BudgetUsage.period_start == start)
                        for bid, start in starts.items()
                    )
                )
            )
        )
    }
    statuses = []
    for budget in budgets:
        row = usage.get((budget.id, starts[budget.id]))
        statuses.append(
            BudgetStatus(
                budget=budget,
                period_start=starts[budget.id],
                resets_at=period_end(budget.period, now),
                spent_picodollars=row.spent_picodollars if row else 0,
                reserved_picodollars=row.reserved_picodollars if row else 0,
            )
        )
    return statuses


async def put_budget(
    session: AsyncSession,
    *,
    tenant_id: str,
    scope: BudgetScope,
    scope_value: str | None,
    period: BudgetPeriod,
    limit_picodollars: int,
    soft_thresholds: list[float] | None = None,
) -> tuple[Budget, dict[str, Any] | None]:
    """Create or update the budget for (scope, scope_value, period); returns it and its
    settings before (``None`` when it is new). Spend so far in the period is kept."""
    if limit_picodollars < 0:
        raise InvalidRequest("limit must not be negative")
    value = _scope_value(scope, scope_value)
    thresholds = _thresholds(soft_thresholds)
    budget = await session.scalar(
        select(Budget)
        .where(
            Budget.tenant_id == tenant_id,
            Budget.scope == scope.value,
            Budget.scope_value.is_(None) if value is None else Budget.scope_value == value,
            Budget.period == period.value,
        )
        .with_for_update()
    )
    before = None
    if budget is None:
        budget = Budget(
            id=new_id("bud"),
            tenant_id=tenant_id,
            scope=scope.value,
            scope_value=value,
            period=period.value,
        )
        session.add(budget)
    else:
        before = snapshot(budget)
    budget.limit_picodollars = limit_picodollars
    if soft_thresholds is not None or before is None:
        budget.soft_thresholds = thresholds
    await session.flush()
    return budget, before


async def get_budget(session: AsyncSession, budget_id: str, tenant_id: str) -> Budget:
    budget = await session.get(Budget, budget_id)
    if budget is None or budget.tenant_id != tenant_id:
        raise NotFound(f"no budget {budget_id}")
    return budget


async def delete_budget(session: AsyncSession, budget_id: str, tenant_id: str) -> Budget:
    """Delete a budget with its usage and open reservations (which then hold nothing)."""
    budget = await get_budget(session, budget_id, tenant_id)
    await session.delete(budget)
    await session.flush()
    return budget
