"""Admission buckets in this process's memory: right for a single instance.

The protocol and permits are in :mod:`core.gateway.admission`, the waiting line (priority,
then fair shares per tenant) in :mod:`core.gateway.fair_line`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping

from core.gateway.admission import (
    EPSILON,
    Amounts,
    Clock,
    ModelSnapshot,
    Permit,
    Priority,
    Sleep,
    check_fits,
    limits_for,
    parse_ratelimit_headers,
    request_cost,
)
from core.gateway.catalog import RateLimits
from core.gateway.fair_line import TenantWeights, WaitingLine


class _Bucket:
    __slots__ = ("capacity", "level", "stamp")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.stamp)
        self.level = min(self.capacity, self.level + self.capacity / 60 * elapsed)
        self.stamp = max(self.stamp, now)

    def seconds_until(self, amount: float) -> float:
        shortfall = amount - self.level
        return shortfall / (self.capacity / 60) if shortfall > EPSILON else 0.0


class _ModelState:
    def __init__(self, capacity: Amounts, now: float, line: WaitingLine) -> None:
        self.buckets = tuple(_Bucket(c, now) for c in capacity)
        self.paused_until = -math.inf
        self.line = line

    def refill(self, now: float) -> None:
        for bucket in self.buckets:
            bucket.refill(now)

    def capacity(self) -> Amounts:
        return Amounts(*(b.capacity for b in self.buckets))

    def remaining(self) -> Amounts:
        return Amounts(*(b.level for b in self.buckets))

    def seconds_until(self, cost: Amounts, now: float) -> float:
        self.refill(now)
        waits = (b.seconds_until(a) for b, a in zip(self.buckets, cost, strict=True))
        return max(self.paused_until - now, 0.0, *waits)

    def add(self, amounts: Amounts, now: float) -> None:
        self.refill(now)
        for bucket, amount in zip(self.buckets, amounts, strict=True):
            bucket.level = min(bucket.capacity, bucket.level + amount)


class InProcessAdmission:
    """Token buckets in this process's memory: right for a single instance."""

    def __init__(
        self,
        limits: Mapping[str, RateLimits],
        default: RateLimits | None = None,
        *,
        weights: TenantWeights | None = None,
        headroom: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._limits = dict(limits)
        self._default = default
        self.weights = weights or TenantWeights()  # how tenants share each line
        self._headroom = headroom  # kept off limits the upstream reports, as off ours
        self._clock = clock
        self._sleep = sleep
        self._models: dict[str, _ModelState] = {}

    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            capacity = limits_for(model, self._limits, self._default)
            line = WaitingLine(self._clock, self._sleep, self.weights)
            state = self._models[model] = _ModelState(capacity, self._clock(), line)
        return state

    async def acquire(
        self,
        model: str,
        *,
        input_tokens: int,
        max_tokens: int,
        priority: Priority,
        deadline: float,
        tenant: str,
    ) -> Permit:
        state = self._state(model)
        cost = request_cost(input_tokens, max_tokens)
        check_fits(model, cost, state.capacity())
        started = self._clock()

        async def attempt(cost: Amounts, _: Priority) -> float:
            # No await in here: checking and taking happen in one step.
            check_fits(model, cost, state.capacity())  # `observe` may have lowered a limit
            now = self._clock()
            wait = state.seconds_until(cost, now)
            if wait <= 0:
                state.add(Amounts(*(-a for a in cost)), now)
            return wait

        async def estimate(ahead: Amounts) -> float:
            return state.seconds_until(ahead, self._clock())

        await state.line.admit(
            cost, priority, deadline, attempt, estimate, tenant=tenant, capacity=state.capacity()
        )
        return Permit(
            model,
            cost,
            lambda amounts: self._credit(state, amounts),
            waited=self._clock() - started,
        )

    def _credit(self, state: _ModelState, amounts: Amounts) -> None:
        state.add(amounts, self._clock())
        state.line.kick()

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        state = self._models.get(model)
        if state is None:
            return  # never admitted here: nothing to correct
        state.refill(self._clock())
        for bucket, (limit, remaining) in zip(
            state.buckets, parse_ratelimit_headers(headers, self._headroom), strict=True
        ):
            if limit is not None and limit != bucket.capacity:
                bucket.capacity = limit
                bucket.level = min(bucket.level, limit)
            if remaining is not None and remaining < bucket.level:
                bucket.level = remaining
        state.line.kick()  # capacities may have changed the head's wait (or its fit)

    def penalize(self, model: str, retry_after: float) -> None:
        state = self._models.get(model)
        if state is not None:
            state.paused_until = max(state.paused_until, self._clock() + max(0.0, retry_after))

    async def snapshot(self) -> dict[str, ModelSnapshot]:
        now = self._clock()
        found: dict[str, ModelSnapshot] = {}
        for model in sorted({*self._limits, *self._models}):
            state = self._state(model)
            state.refill(now)
            found[model] = ModelSnapshot(
                capacity=state.capacity(),
                remaining=state.remaining(),
                queued=state.line.counts(),
                paused_for=max(0.0, state.paused_until - now),
                queued_by_tenant=state.line.tenant_counts(),
            )
        return found

    async def aclose(self) -> None:
        return None
