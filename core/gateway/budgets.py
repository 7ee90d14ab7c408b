"""Spending budgets with reservations: a call reserves its worst case before it goes out.

The flow around one gateway call::

    reservation = await budgets.reserve(tenant_id, feature, api_key_id, worst_case)
    ...call upstream...
    crossings = await budgets.settle(reservation, actual_cost)   # or release() on failure

* :meth:`Budgets.reserve` checks every applicable budget (the tenant's, the feature's, the
  API key's; each in its current UTC calendar day or month) for ``spent + reserved + amount
  <= limit`` and adds ``amount`` to ``reserved`` on all of them, or on none: it raises
  :class:`BudgetExhausted` (402) naming the first budget that cannot take it. One
  transaction does it, holding row locks on the usage rows (``SELECT … FOR UPDATE`` in a
  fixed order on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write lock), so concurrent
  requests and processes never overspend together.
* :meth:`Budgets.settle` moves the reservation to ``spent`` at its actual cost, which may
  exceed the reservation (it never refuses: the call already happened), and returns the
  soft thresholds this spend crossed for the first time in the period.
* :meth:`Budgets.release` drops a reservation whose call cost nothing.
* Reservations are rows: they survive a restart, and :meth:`Budgets.sweep` releases those
  past ``expires_at`` (a crashed request's). Settling after a sweep still records the spend.

Lock order (deadlock freedom on PostgreSQL): a transaction first deletes its reservation
rows, then locks usage rows ordered by (budget id, period start). Reservations are
charged in the period they were made in, even when settled after it ended.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.dialect import insert_ignoring_conflicts
from core.db.models import Budget, BudgetReservation, BudgetUsage
from core.db.types import new_id
from core.errors import TerminalError
from core.gateway import accounting
from core.gateway.budget_store import (
    PICO,
    applicable_budgets,
    describe,
    lock_usage,
    period_end,
    period_start,
    take_reservations,
    unreserve,
    usd,
)
from core.gateway.catalog import Catalog

DEFAULT_RESERVATION_TTL = timedelta(minutes=15)
# Writes what crossing soft thresholds should cause, in the settling transaction.
Announce = Callable[[AsyncSession, "list[ThresholdCrossing]"], Awaitable[None]]
SWEEP_BATCH = 500

USAGE: Table = BudgetUsage.__table__  # type: ignore[assignment]


class BudgetExhausted(TerminalError):
    """A budget of the tenant, the feature or the API key cannot cover the call's worst
    case in the current period. It resets at ``resets_at``; an admin may raise the limit."""

    problem_type = "budget-exhausted"
    title = "Budget exhausted"
    status = 402


@dataclass(frozen=True)
class Hold:
    budget_id: str
    period_start: datetime


@dataclass(frozen=True)
class Reservation:
    """What :meth:`Budgets.reserve` set aside; pass it to settle or release."""

    id: str
    tenant_id: str
    amount_picodollars: int
    holds: tuple[Hold, ...]
    expires_at: datetime


@dataclass(frozen=True)
class ThresholdCrossing:
    """A soft threshold reached for the first time in a budget's period."""

    budget_id: str
    tenant_id: str
    scope: str
    scope_value: str | None
    period: str
    period_start: datetime
    threshold: float
    limit_picodollars: int
    spent_picodollars: int


def worst_case_picodollars(
    catalog: Catalog,
    model: str,
    input_tokens_estimate: int,
    max_tokens: int,
    *,
    at: datetime | None = None,
) -> int:
    """A ceiling on a call's cost: every input token at the input price (no cache
    discount), ``max_tokens`` of output, the long-prompt tier when it applies."""
    usage = accounting.Usage(input_tokens=input_tokens_estimate, output_tokens=max_tokens)
    total = accounting.cost(catalog.get(model), usage, at=at or datetime.now(UTC)).total
    return int((total * PICO).to_integral_value(rounding=ROUND_CEILING))


def threshold_event(crossing: ThresholdCrossing, *, now: datetime | None = None) -> dict[str, Any]:
    """A ``budget.threshold`` callback payload (plain JSON types) for ``crossing``."""
    return {
        "type": "budget.threshold",
        "created_at": (now or datetime.now(UTC)).isoformat(),
        "tenant_id": crossing.tenant_id,
        "budget": {
            "id": crossing.budget_id,
            "scope": crossing.scope,
            "scope_value": crossing.scope_value,
            "period": crossing.period,
            "limit_usd": float(usd(crossing.limit_picodollars)),
            "limit_picodollars": crossing.limit_picodollars,
        },
        "threshold": crossing.threshold,
        "spent_usd": float(usd(crossing.spent_picodollars)),
        "spent_picodollars": crossing.spent_picodollars,
        "period_start": crossing.period_start.isoformat(),
        "resets_at": period_end(crossing.period, crossing.period_start).isoformat(),
    }


def _exhausted(budget: Budget, now: datetime) -> BudgetExhausted:
    limit = usd(budget.limit_picodollars)
    resets_at = period_end(budget.period, now)
    return BudgetExhausted(
        f"{describe(budget)} budget of ${limit} per {budget.period} is exhausted "
        f"for this call; it resets at {resets_at.isoformat()}",
        scope=budget.scope,
        scope_value=budget.scope_value,
        period=budget.period,
        limit_usd=float(limit),
        resets_at=resets_at.isoformat(),
    )


def _new_crossings(budget: Budget, usage: BudgetUsage) -> list[float]:
    spent = usage.spent_picodollars
    announced = usage.announced_threshold
    return [
        t
        for t in sorted(budget.soft_thresholds)
        if spent > 0
        and spent >= Decimal(str(t)) * budget.limit_picodollars
        and (announced is None or t > announced)
    ]


class Budgets:
    """Reserve, settle and release spend against a tenant's budgets (see module docs)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self._ttl = reservation_ttl
        self._clock = clock

    async def reserve(
        self,
        tenant_id: str,
        feature: str | None,
        api_key_id: str | None,
        worst_case_picodollars: int,
    ) -> Reservation:
        """Set ``worst_case_picodollars`` aside on every applicable budget, or raise
        :class:`BudgetExhausted` and set nothing aside."""
        if worst_case_picodollars < 0:
            raise ValueError("a reservation cannot be negative")
        now = self._clock()
        reservation = Reservation(
            id=new_id("bres"),
            tenant_id=tenant_id,
            amount_picodollars=worst_case_picodollars,
            holds=(),
            expires_at=now + self._ttl,
        )
        async with self.sessions.begin() as session:
            budgets = await applicable_budgets(session, tenant_id, feature, api_key_id)
            if not budgets:
                return reservation
            starts = {b.id: period_start(b.period, now) for b in budgets}
            keys = sorted(starts.items())
            await session.execute(
                insert_ignoring_conflicts(session, USAGE, ["budget_id", "period_start"]).values(
                    [
                        {
                            "budget_id": budget_id,
                            "period_start": start,
                            "spent_picodollars": 0,
                            "reserved_picodollars": 0,
                        }
                        for budget_id, start in keys
                    ]
                )
            )
            usage = await lock_usage(session, keys)
            for budget in budgets:
                row = usage[(budget.id, starts[budget.id])]
                committed = row.spent_picodollars + row.reserved_picodollars
                if committed + worst_case_picodollars > budget.limit_picodollars:
                    raise _exhausted(budget, now)  # rolls back: nothing was reserved
            for row in usage.values():
                row.reserved_picodollars += worst_case_picodollars
            session.add_all(
                BudgetReservation(
                    id=reservation.id,
                    budget_id=budget_id,
                    tenant_id=tenant_id,
                    period_start=start,
                    amount_picodollars=worst_case_picodollars,
                    created_at=now,
                    expires_at=reservation.expires_at,
                )
                for budget_id, start in keys
            )
        holds = tuple(Hold(budget_id, start) for budget_id, start in keys)
        return Reservation(
            id=reservation.id,
            tenant_id=tenant_id,
            amount_picodollars=worst_case_picodollars,
            holds=holds,
            expires_at=reservation.expires_at,
        )

    async def settle(
        self,
        reservation: Reservation,
        actual_picodollars: int,
        *,
        announce: Announce | None = None,
    ) -> list[ThresholdCrossing]:
        """Charge ``actual_picodollars`` (more or less than reserved) and drop the
        reservation; returns the soft thresholds crossed for the first time this period,
        now marked announced. Never refuses: the call already happened.

        ``announce`` runs in the same transaction with the crossings (to write their
        callbacks), so a threshold is marked announced exactly when its callback exists."""
        if actual_picodollars < 0:
            raise ValueError("a call cannot cost less than nothing")
        if not reservation.holds:
            return []
        crossings: list[ThresholdCrossing] = []
        async with self.sessions.begin() as session:
            held, _ = await take_reservations(session, BudgetReservation.id == reservation.id)
            keys = [(hold.budget_id, hold.period_start) for hold in reservation.holds]
            usage = await lock_usage(session, keys)
            budgets = {
                b.id: b
                for b in await session.scalars(
                    select(Budget).where(Budget.id.in_([key[0] for key in usage]))
                )
            }
            for key, row in usage.items():
                unreserve(row, held.get(key, 0))
                row.spent_picodollars += actual_picodollars
                budget = budgets.get(key[0])
                if budget is None:
                    continue
                new = _new_crossings(budget, row)
                if new:
                    row.announced_threshold = new[-1]
                crossings.extend(
                    ThresholdCrossing(
                        budget_id=budget.id,
                        tenant_id=budget.tenant_id,
                        scope=budget.scope,
                        scope_value=budget.scope_value,
                        period=budget.period,
                        period_start=row.period_start,
                        threshold=threshold,
                        limit_picodollars=budget.limit_picodollars,
                        spent_picodollars=row.spent_picodollars,
                    )
                    for threshold in new
                )
            if crossings and announce is not None:
                await announce(session, crossings)
        return crossings

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call cost nothing (it failed before any tokens)."""
        if not reservation.holds:
            return
        async with self.sessions.begin() as session:
            held, _ = await take_reservations(session, BudgetReservation.id == reservation.id)
            for key, row in (await lock_usage(session, held)).items():
                unreserve(row, held[key])

    async def sweep(self) -> int:
        """Release reservations past their expiry; returns how many were released."""
        released = 0
        while True:
            async with self.sessions.begin() as session:
                due = select(BudgetReservation.id).where(
                    BudgetReservation.expires_at <= self._clock()
                )
                ids = list(await session.scalars(due.distinct().limit(SWEEP_BATCH)))
                if not ids:
                    return released
                held, taken = await take_reservations(session, BudgetReservation.id.in_(ids))
                for key, row in (await lock_usage(session, held)).items():
                    unreserve(row, held[key])
            released += len(taken)
            if len(ids) < SWEEP_BATCH:
                return released


__all__ = [
    "BudgetExhausted",
    "Budgets",
    "Hold",
    "Reservation",
    "ThresholdCrossing",
    "threshold_event",
    "worst_case_picodollars",
]
