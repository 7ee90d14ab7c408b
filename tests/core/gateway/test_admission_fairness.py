"""Fair shares between tenants in the admission line: one tenant's burst cannot push
another's requests back by more than its weighted share, priority still comes first, and
leaving the line (deadline, cancellation) neither charges a tenant nor stalls the line —
all on the manual clock, counting admissions, never timing them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.db.engine import make_engine
from core.gateway.admission import AdmissionTimeout, Amounts, Priority
from core.gateway.admission_memory import InProcessAdmission
from core.gateway.catalog import RateLimits
from core.gateway.factory import build_gateway
from core.gateway.fair_line import TenantWeights, dominant_share
from core.metrics import Metrics
from core.settings import GatewaySettings, load_settings
from tests.core.gateway.test_admission import FAR, MODEL, ManualClock, settle

BG, FG = Priority.BACKGROUND, Priority.INTERACTIVE


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Line:
    """An InProcessAdmission with its request bucket spent (one request refills a second),
    and a log of who got in, in order."""

    def __init__(
        self, clock: ManualClock, weights: TenantWeights | None = None, input_tpm: int = 6_000
    ) -> None:
        limits = RateLimits(rpm=60, input_tpm=input_tpm, output_tpm=6_000)
        self.clock = clock
        self.admission = InProcessAdmission(
            {MODEL: limits}, weights=weights, clock=clock, sleep=clock.sleep
        )
        self.admitted: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._sent: Counter[str] = Counter()

    async def drain(self, input_tokens: int = 0) -> None:
        for _ in range(60):
            await self.admission.acquire(
                MODEL,
                input_tokens=input_tokens,
                max_tokens=1,
                priority=BG,
                deadline=FAR,
                tenant="warm-up",
            )

    async def request(
        self,
        tenant: str,
        name: str,
        *,
        priority: Priority = BG,
        input_tokens: int = 0,
        deadline: float = FAR,
    ) -> None:
        await self.admission.acquire(
            MODEL,
            input_tokens=input_tokens,
            max_tokens=1,
            priority=priority,
            deadline=deadline,
            tenant=tenant,
        )
        self.admitted.append(name)

    async def send(
        self,
        tenant: str,
        count: int = 1,
        *,
        priority: Priority = BG,
        input_tokens: int = 0,
        deadline: float = FAR,
    ) -> list[asyncio.Task[None]]:
        """Queue ``count`` requests named ``<tenant><n>`` (n counts per tenant from 1)."""
        made = []
        for _ in range(count):
            self._sent[tenant] += 1
            name = f"{tenant}{self._sent[tenant]}"
            request = self.request(
                tenant, name, priority=priority, input_tokens=input_tokens, deadline=deadline
            )
            made.append(asyncio.create_task(request))
        self.tasks += made
        await settle()
        return made

    async def admit(self, count: int, seconds: float = 1.0) -> list[str]:
        """Let time pass until ``count`` more have been admitted; returns who, in order."""
        before = len(self.admitted)
        while len(self.admitted) < before + count:
            await self.clock.advance(seconds)
        return self.admitted[before:]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def tenants(names: list[str]) -> str:
    """``["A1", "B1", "A2"]`` → ``"ABA"``."""
    return "".join(name[0] for name in names)


async def test_a_burst_of_a_thousand_does_not_push_another_tenant_back(
    clock: ManualClock,
) -> None:
    line = Line(clock)
    await line.drain()
    await line.send("A", 1_000)
    await line.send("B", 3)
    snapshot = (await line.admission.snapshot())[MODEL]
    assert snapshot.queued_by_tenant == {"A": 1_000, "B": 3}
    # A's head keeps its place; then the two tenants alternate (equal weights) until B's
    # three are in: the sixth admission, not the 1,003rd.
    assert await line.admit(6) == ["A1", "B1", "A2", "B2", "A3", "B3"]
    assert tenants(await line.admit(5)) == "AAAAA"
    snapshot = (await line.admission.snapshot())[MODEL]
    assert snapshot.queued_by_tenant == {"A": 992}
    assert snapshot.queued == {FG: 0, BG: 992}
    # B comes back later: it joins at the current virtual time, again next but one, and
    # has banked no credit for the time it was away.
    await line.send("B", 3)
    assert tenants(await line.admit(6)) == "ABABAB"
    await line.close()
    assert (await line.admission.snapshot())[MODEL].queued_by_tenant == {}


async def test_weights_two_to_one_give_two_to_one_shares(clock: ManualClock) -> None:
    line = Line(clock, TenantWeights({"A": 2}))
    await line.drain()
    await line.send("A", 200)
    await line.send("B", 200)
    await line.send("C", 200)
    shares = Counter(tenants(await line.admit(120)))
    assert shares == {"A": 60, "B": 30, "C": 30}
    await line.close()


async def test_shares_count_the_bucket_a_request_uses_most(clock: ManualClock) -> None:
    # 600 input tokens a minute: a 300-token request is half the minute, a 10-token one
    # a sixtieth — the same as its one request of 60.
    assert dominant_share(Amounts(1, 300, 1), Amounts(60, 600, 6_000)) == 0.5
    assert dominant_share(Amounts(1, 10, 1), Amounts(60, 600, 6_000)) == pytest.approx(1 / 60)
    line = Line(clock, input_tpm=600)  # ten input tokens (and one request) a second
    await line.drain(input_tokens=10)
    await line.send("A", 2, input_tokens=295)
    await line.send("B", 100, input_tokens=10)
    # After A's first request (295 tokens, a share of 29.5/60), B gets thirty requests of
    # ten tokens (300 tokens, 30/60) before A's second one.
    assert tenants(await line.admit(32)) == "A" + "B" * 30 + "A"
    await line.close()


async def test_interactive_still_goes_first_whatever_the_tenant(clock: ManualClock) -> None:
    line = Line(clock)
    await line.drain()
    await line.send("A", 100)  # background
    await line.send("B", 2, priority=FG)
    await line.send("C", 1)  # background
    assert await line.admit(2) == ["B1", "B2"]  # took the head from A's background request
    assert tenants(await line.admit(4)) == "ACAA"
    # A burst of interactive requests from A is shared with B's interactive ones, and
    # every one of them goes before any background request.
    await line.send("A", 50, priority=FG)
    await line.send("B", 2, priority=FG)
    assert tenants(await line.admit(4)) == "ABAB"
    assert tenants(await line.admit(48)) == "A" * 48
    assert (await line.admission.snapshot())[MODEL].queued == {FG: 0, BG: 97}
    await line.close()


async def test_without_fairness_tenants_are_served_first_come_first_served(
    clock: ManualClock,
) -> None:
    line = Line(clock, TenantWeights(fair=False))
    await line.drain()
    await line.send("A", 20)
    await line.send("B", 2)
    assert tenants(await line.admit(22)) == "A" * 20 + "BB"
    await line.close()


async def test_a_cancelled_head_wakes_the_next_tenant_at_once(clock: ManualClock) -> None:
    line = Line(clock)
    await line.drain()
    await clock.advance(0.5)  # half a request refilled
    (a1,) = await line.send("A")
    await line.send("B")
    a1.cancel()
    await settle()
    await clock.advance(0.5)  # B1 was woken as the head: it is in as soon as there is room
    assert line.admitted == ["B1"]
    assert a1.cancelled()
    await line.close()


async def test_a_waiter_that_leaves_does_not_charge_its_tenant(clock: ManualClock) -> None:
    line = Line(clock)
    await line.drain()
    await line.send("A", 3)
    b1, _ = await line.send("B", 2)
    b1.cancel()  # B's front, not the head: B2 takes its place, and its turn
    await settle()
    assert await line.admit(3) == ["A1", "B2", "A2"]
    await line.close()


async def test_a_deadline_removes_the_waiter_and_estimates_only_what_is_ahead(
    clock: ManualClock,
) -> None:
    line = Line(clock)
    await line.drain()
    await line.send("A", 10)
    (b1,) = await line.send("B", deadline=clock.now + 0.5)
    await clock.advance(0.5)
    with pytest.raises(AdmissionTimeout) as caught:
        await b1
    # Ahead of B1: A's head and B1 itself, not A's other nine; 0.5 s already refilled.
    assert caught.value.retry_after == pytest.approx(1.5)
    assert (await line.admission.snapshot())[MODEL].queued_by_tenant == {"A": 10}
    await line.close()


async def test_the_heads_deadline_wakes_the_next_head(clock: ManualClock) -> None:
    line = Line(clock)
    await line.drain()
    await clock.advance(0.5)
    (a1,) = await line.send("A", deadline=clock.now + 0.25)  # needs another 0.5 s
    await line.send("B")
    await clock.advance(0.25)
    with pytest.raises(AdmissionTimeout):
        await a1
    await clock.advance(0.25)  # B1 became the head when A1 left, and is in when room is
    assert line.admitted == ["B1"]
    await line.close()


async def test_a_large_request_is_not_starved_by_another_tenants_small_ones(
    clock: ManualClock,
) -> None:
    line = Line(clock, input_tpm=600)  # ten input tokens (and one request) a second
    await line.drain(input_tokens=10)
    await line.send("B", 40, input_tokens=10)  # each fits after one second
    assert await line.admit(5) == ["B1", "B2", "B3", "B4", "B5"]
    started = clock.now
    await line.send("A", 1, input_tokens=300)  # needs 30 s of refill
    # A1 joins at the current virtual time: after B's head, and then nothing overtakes it
    # while it waits for its 300 tokens, although each of B's would fit after a second.
    assert await line.admit(2) == ["B6", "A1"]
    assert clock.now - started == pytest.approx(31.0)
    assert tenants(await line.admit(3)) == "BBB"
    await line.close()


async def test_weights_are_checked_and_come_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="positive"):
        TenantWeights({"A": 0})
    with pytest.raises(ValidationError):
        GatewaySettings(tenant_weights={"A": -1})
    monkeypatch.setenv("SWITCHYARD_GATEWAY__TENANT_WEIGHTS", '{"ten_big": 3}')
    monkeypatch.setenv("SWITCHYARD_GATEWAY__TENANT_FAIRNESS", "false")
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    engine = make_engine(settings.database_url)
    gateway = build_gateway(settings, async_sessionmaker(engine), Metrics())
    assert isinstance(gateway.admission, InProcessAdmission)
    assert gateway.admission.weights == TenantWeights({"ten_big": 3}, fair=False)
    assert gateway.admission.weights.weight("ten_big") == 3
    assert gateway.admission.weights.weight("ten_other") == 1
    await gateway.aclose()
    await engine.dispose()
