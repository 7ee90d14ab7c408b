"""Budgets: reservations are all-or-nothing across budgets, atomic under concurrency, survive
restarts, expire, roll over with the calendar; soft thresholds fire once per period."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from core.auth import create_tenant
from core.db.models import BudgetPeriod, BudgetReservation, BudgetScope, BudgetUsage
from core.gateway.budget_store import delete_budget, list_budgets, period_end, put_budget
from core.gateway.budgets import (
    BudgetExhausted,
    Budgets,
    Reservation,
    threshold_event,
    worst_case_picodollars,
)
from core.gateway.catalog import Catalog
from core.services import Services
from core.web.problems import problem_body

USD = 10**12
T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def tenant(services: Services, name: str = "acme") -> str:
    async with services.sessions.begin() as session:
        return (await create_tenant(session, name)).id


async def budget(
    services: Services,
    tenant_id: str,
    limit: int,
    *,
    scope: BudgetScope = BudgetScope.TENANT,
    value: str | None = None,
    period: BudgetPeriod = BudgetPeriod.MONTH,
    thresholds: list[float] | None = None,
) -> str:
    async with services.sessions.begin() as session:
        row, _ = await put_budget(
            session,
            tenant_id=tenant_id,
            scope=scope,
            scope_value=value,
            period=period,
            limit_picodollars=limit,
            soft_thresholds=thresholds,
        )
        return row.id


async def standing(services: Services, tenant_id: str, now: datetime) -> dict[str, tuple[int, int]]:
    """{budget id: (spent, reserved)} for the period containing ``now``."""
    async with services.sessions() as session:
        return {
            s.budget.id: (s.spent_picodollars, s.reserved_picodollars)
            for s in await list_budgets(session, tenant_id, now=now)
        }


async def open_reservations(services: Services) -> int:
    async with services.sessions() as session:
        count = await session.scalar(select(func.count(func.distinct(BudgetReservation.id))))
        return int(count or 0)


async def test_reserve_settle_release_arithmetic(services: Services) -> None:
    clock = Clock()
    tid = await tenant(services)
    bid = await budget(services, tid, 10 * USD)
    budgets = Budgets(services.sessions, clock=clock)

    first = await budgets.reserve(tid, "triage", "key_1", 3 * USD)
    second = await budgets.reserve(tid, "triage", "key_1", 2 * USD)
    assert await standing(services, tid, clock.now) == {bid: (0, 5 * USD)}

    assert await budgets.settle(first, USD) == []  # cheaper than the worst case
    assert await standing(services, tid, clock.now) == {bid: (USD, 2 * USD)}
    await budgets.settle(second, 4 * USD)  # dearer than reserved: charged, never refused
    assert await standing(services, tid, clock.now) == {bid: (5 * USD, 0)}

    third = await budgets.reserve(tid, "triage", None, 5 * USD)
    await budgets.release(third)
    assert await standing(services, tid, clock.now) == {bid: (5 * USD, 0)}
    assert await open_reservations(services) == 0

    # Exactly up to the limit fits; one picodollar more does not.
    await budgets.reserve(tid, "triage", None, 5 * USD)
    with pytest.raises(BudgetExhausted):
        await budgets.reserve(tid, "triage", None, 1)


async def test_no_budget_means_no_limit(services: Services) -> None:
    tid = await tenant(services)
    budgets = Budgets(services.sessions)
    reservation = await budgets.reserve(tid, "api", None, 10**9 * USD)
    assert reservation.holds == ()
    assert await budgets.settle(reservation, USD) == []
    await budgets.release(reservation)


async def test_a_call_that_exceeds_any_one_budget_reserves_nothing(services: Services) -> None:
    clock = Clock()
    tid = await tenant(services)
    whole = await budget(services, tid, 100 * USD)
    daily = await budget(services, tid, 50 * USD, period=BudgetPeriod.DAY)
    feature = await budget(services, tid, 10 * USD, scope=BudgetScope.FEATURE, value="triage")
    key = await budget(services, tid, 4 * USD, scope=BudgetScope.API_KEY, value="key_1")
    other = await budget(services, tid, USD, scope=BudgetScope.FEATURE, value="summaries")
    budgets = Budgets(services.sessions, clock=clock)

    held = await budgets.reserve(tid, "triage", "key_1", 3 * USD)
    assert {hold.budget_id for hold in held.holds} == {whole, daily, feature, key}

    with pytest.raises(BudgetExhausted) as caught:
        await budgets.reserve(tid, "triage", "key_1", 2 * USD)  # only the key's is short
    assert caught.value.extensions["scope"] == "api_key"
    assert caught.value.extensions["scope_value"] == "key_1"
    assert caught.value.extensions["limit_usd"] == 4.0
    after = await standing(services, tid, clock.now)
    assert after == {
        whole: (0, 3 * USD),
        daily: (0, 3 * USD),
        feature: (0, 3 * USD),
        key: (0, 3 * USD),
        other: (0, 0),
    }
    # Another key is not held back by key_1's budget; the feature's still applies.
    await budgets.reserve(tid, "triage", "key_2", 7 * USD)
    with pytest.raises(BudgetExhausted) as caught:
        await budgets.reserve(tid, "triage", "key_2", 1)
    assert caught.value.extensions["scope"] == "feature"


async def test_budget_exhausted_is_a_402_problem(services: Services) -> None:
    clock = Clock()
    tid = await tenant(services)
    await budget(services, tid, 2 * USD, period=BudgetPeriod.DAY)
    budgets = Budgets(services.sessions, clock=clock)
    with pytest.raises(BudgetExhausted) as caught:
        await budgets.reserve(tid, "api", None, 3 * USD)
    exc = caught.value
    body = problem_body(
        type(exc), exc.detail, instance="/v1/messages", trace_id="t", extensions=exc.extensions
    )
    assert body["status"] == 402 == BudgetExhausted.status
    assert body["type"] == "/problems/budget-exhausted"
    assert body["title"] == "Budget exhausted"
    assert body["scope"] == "tenant"
    assert body["period"] == "day"
    assert body["limit_usd"] == 2.0
    assert body["resets_at"] == "2026-12-01T00:00:00+00:00"
    assert exc.detail == (
        "the tenant's budget of $2 per day is exhausted for this call; "
        "it resets at 2026-12-01T00:00:00+00:00"
    )


async def test_periods_roll_over_with_the_calendar(services: Services) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    tid = await tenant(services)
    daily = await budget(services, tid, 5 * USD, period=BudgetPeriod.DAY)
    monthly = await budget(services, tid, 8 * USD)
    budgets = Budgets(services.sessions, clock=clock)

    late = await budgets.reserve(tid, "api", None, 5 * USD)
    with pytest.raises(BudgetExhausted):
        await budgets.reserve(tid, "api", None, 1)

    clock.now = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)  # a new day and a new month
    early = await budgets.reserve(tid, "api", None, 5 * USD)
    assert await standing(services, tid, clock.now) == {daily: (0, 5 * USD), monthly: (0, 5 * USD)}

    # A reservation is charged to the period it was made in, even when settled later.
    await budgets.settle(late, 4 * USD)
    await budgets.settle(early, 2 * USD)
    assert await standing(services, tid, clock.now) == {daily: (2 * USD, 0), monthly: (2 * USD, 0)}
    november = datetime(2026, 11, 15, tzinfo=UTC)
    assert await standing(services, tid, november) == {daily: (0, 0), monthly: (4 * USD, 0)}
    assert period_end("month", november) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


async def test_concurrent_reservations_never_overspend(services: Services) -> None:
    tid = await tenant(services)
    bid = await budget(services, tid, 10 * USD)
    budgets = Budgets(services.sessions)  # every reserve runs in its own session

    results = await asyncio.gather(
        *(budgets.reserve(tid, "api", "key_1", USD) for _ in range(50)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, Reservation)]
    lost = [r for r in results if isinstance(r, BudgetExhausted)]
    assert (len(won), len(lost)) == (10, 40)
    assert await standing(services, tid, datetime.now(UTC)) == {bid: (0, 10 * USD)}
    assert await open_reservations(services) == 10


async def test_reservations_survive_a_restart_and_expire(services: Services) -> None:
    clock = Clock()
    tid = await tenant(services)
    bid = await budget(services, tid, 10 * USD)
    before = Budgets(services.sessions, clock=clock, reservation_ttl=timedelta(minutes=5))
    crashed = await before.reserve(tid, "api", None, 6 * USD)
    finished = await before.reserve(tid, "api", None, 2 * USD)

    after = Budgets(services.sessions, clock=clock)  # a new process
    with pytest.raises(BudgetExhausted):
        await after.reserve(tid, "api", None, 3 * USD)  # the reservations still hold
    assert await after.sweep() == 0  # not expired yet

    await after.settle(finished, USD)
    clock.now += timedelta(minutes=6)
    assert await after.sweep() == 1
    assert await standing(services, tid, clock.now) == {bid: (USD, 0)}
    assert await open_reservations(services) == 0
    await after.reserve(tid, "api", None, 9 * USD)

    # The crashed call's cost arrives after all: recorded, not released twice.
    await after.settle(crashed, USD)
    assert await standing(services, tid, clock.now) == {bid: (2 * USD, 9 * USD)}


async def test_soft_thresholds_fire_once_per_period(services: Services) -> None:
    clock = Clock()
    tid = await tenant(services)
    bid = await budget(services, tid, 10 * USD, period=BudgetPeriod.DAY, thresholds=[0.5, 0.8])
    budgets = Budgets(services.sessions, clock=clock)

    async def spend(amount: int) -> list[float]:
        crossings = await budgets.settle(await budgets.reserve(tid, "api", None, amount), amount)
        return [c.threshold for c in crossings]

    assert await spend(4 * USD) == []
    assert await spend(USD) == [0.5]  # exactly half
    assert await spend(USD) == []
    assert await spend(3 * USD) == [0.8]
    assert await spend(USD) == []

    clock.now += timedelta(days=1)
    assert await spend(9 * USD) == [0.5, 0.8]  # both at once, in a fresh period
    crossings = await budgets.settle(await budgets.reserve(tid, "api", None, 0), 0)
    assert crossings == []

    clock.now += timedelta(days=1)
    reservation = await budgets.reserve(tid, "api", None, 5 * USD)
    (crossing,) = await budgets.settle(reservation, 5 * USD)
    event = threshold_event(crossing, now=clock.now)
    assert event["type"] == "budget.threshold"
    assert event["budget"] == {
        "id": bid,
        "scope": "tenant",
        "scope_value": None,
        "period": "day",
        "limit_usd": 10.0,
        "limit_picodollars": 10 * USD,
    }
    assert event["threshold"] == 0.5
    assert event["spent_usd"] == 5.0
    assert event["period_start"] == "2026-12-02T00:00:00+00:00"
    assert event["resets_at"] == "2026-12-03T00:00:00+00:00"


async def test_deleting_a_budget_drops_its_usage_and_holds(services: Services) -> None:
    tid = await tenant(services)
    bid = await budget(services, tid, 10 * USD)
    budgets = Budgets(services.sessions)
    reservation = await budgets.reserve(tid, "api", None, 4 * USD)
    async with services.sessions.begin() as session:
        await delete_budget(session, bid, tid)
    assert await budgets.settle(reservation, USD) == []
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(BudgetUsage)) == 0


def test_worst_case_is_a_ceiling_at_list_prices() -> None:
    catalog = Catalog.load()
    model = catalog.get("claude-haiku-5-5")
    prices = model.prices_at(T0)
    expected = (Decimal(1000) * prices.input + Decimal(500) * prices.output) * USD / 10**6
    assert worst_case_picodollars(catalog, "claude-haiku-5-5", 1000, 500, at=T0) == expected
    # Past the long-prompt threshold the long tier prices the whole call.
    long_tier = prices.long_prompt
    assert long_tier is not None
    tokens = long_tier.threshold_tokens + 1
    expected_long = (tokens * long_tier.input + 10 * long_tier.output) * USD / 10**6
    assert worst_case_picodollars(catalog, "claude-haiku-5-5", tokens, 10, at=T0) == expected_long
