"""Admission shared by every instance: the token buckets live in Redis.

Each model is one Redis hash (``<prefix><model>``) holding the three buckets' capacities
and levels, the time they were last refilled, a pause (after an upstream 429) and an
"interactive request waiting" mark. Every change is one Lua script, so a check-and-take
of all three buckets is atomic across instances. Refill uses Redis ``TIME``, never the
caller's clock, so instances with skewed clocks agree. A hash left alone expires once its
buckets would be full again (plus a minute), which equals a fresh one.

Waiting stays local: each instance keeps its own line per model
(:class:`~core.gateway.fair_line.WaitingLine`: priority, then fair shares between tenants,
each tenant first come first served), so fairness between tenants holds among one
instance's waiters, not across instances. Its head runs the take-or-report-wait script
and, when there is no room, sleeps for the reported wait —
bounded by ``max_sleep`` so room given back by other instances is noticed, and jittered so
instances do not retry in lock-step. Across instances, priority holds through the mark: an
interactive head that finds no room marks the model for slightly longer than it will
sleep, and background requests from any instance are refused while the mark stands.

``settle``, ``release``, ``observe`` and ``penalize`` are synchronous (they must work in
cleanup code during cancellation): they queue their script for one writer task owned by
this object, applied in order; :meth:`RedisAdmission.flush` waits for the queue and
:meth:`RedisAdmission.aclose` drains it. A penalty also pauses this instance at once.
A lost update is logged, never raised. Redis failures during ``acquire`` raise
:class:`AdmissionUnavailable` (503, transient).

Known limit: instances of equal priority race for room, so across instances a large
request can be delayed by a stream of small ones (within one instance the line prevents it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from core.errors import TransientError
from core.gateway.admission import (
    Amounts,
    Clock,
    ModelSnapshot,
    Permit,
    Priority,
    RequestTooLarge,
    Sleep,
    check_fits,
    limits_for,
    parse_ratelimit_headers,
    request_cost,
)
from core.gateway.catalog import RateLimits, UnknownModel
from core.gateway.fair_line import TenantWeights, WaitingLine
from core.logging import get_logger

log = get_logger(__name__)

# ARGV[1..3] are the configured capacities, used when the hash does not exist yet.
_PROLOGUE = """
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local f = redis.call('HMGET', key, 'cr', 'ci', 'co', 'lr', 'li', 'lo', 'ts', 'pu', 'iw')
local cap, lvl = {}, {}
for i = 1, 3 do
  cap[i] = tonumber(f[i]) or tonumber(ARGV[i])
  lvl[i] = tonumber(f[i + 3]) or cap[i]
end
local ts = tonumber(f[7]) or now
local paused = tonumber(f[8]) or 0
local iw = tonumber(f[9]) or 0
local elapsed = math.max(0, now - ts)
for i = 1, 3 do
  lvl[i] = math.min(cap[i], lvl[i] + cap[i] / 60 * elapsed)
end
ts = math.max(ts, now)

local function num(x)
  return string.format('%.17g', x)
end

local function save()
  local ttl = math.max(paused - now, iw - now, 0)
  for i = 1, 3 do
    ttl = math.max(ttl, (cap[i] - lvl[i]) * 60 / cap[i])
  end
  redis.call('HSET', key, 'cr', num(cap[1]), 'ci', num(cap[2]), 'co', num(cap[3]),
    'lr', num(lvl[1]), 'li', num(lvl[2]), 'lo', num(lvl[3]),
    'ts', num(ts), 'pu', num(paused), 'iw', num(iw))
  redis.call('PEXPIRE', key, math.ceil((ttl + 60) * 1000))
end
"""

# ARGV[4..6] cost, [7] priority, [8] dry run, [9] max sleep, [10] jitter factor, [11] grace.
# Returns {status, wait, capacities...}: 1 taken, 0 wait, -1 can never fit.
_ACQUIRE = (
    _PROLOGUE
    + """
local cost = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local priority = tonumber(ARGV[7])
local dry = ARGV[8] == '1'
local caps = {num(cap[1]), num(cap[2]), num(cap[3])}
if not dry then
  for i = 1, 3 do
    if cost[i] > cap[i] then return {-1, '0', caps[1], caps[2], caps[3]} end
  end
end
local wait = math.max(paused - now, 0)
for i = 1, 3 do
  local short = cost[i] - lvl[i]
  if short > 1e-6 then wait = math.max(wait, short * 60 / cap[i]) end
end
if dry then return {0, num(wait), caps[1], caps[2], caps[3]} end
if wait <= 0 and priority > 0 and iw > now then wait = iw - now end
if wait > 0 then
  if priority == 0 then
    local sleep = math.min(wait, tonumber(ARGV[9])) * tonumber(ARGV[10])
    iw = math.max(iw, now + sleep + tonumber(ARGV[11]))
    save()
  end
  return {0, num(wait), caps[1], caps[2], caps[3]}
end
for i = 1, 3 do lvl[i] = lvl[i] - cost[i] end
if priority == 0 then iw = 0 end
save()
return {1, '0', caps[1], caps[2], caps[3]}
"""
)

# ARGV[4..6]: amounts to add (negative charges), capped at capacity.
_CREDIT = (
    _PROLOGUE
    + """
for i = 1, 3 do lvl[i] = math.min(cap[i], lvl[i] + tonumber(ARGV[3 + i])) end
save()
return 1
"""
)

# ARGV[4..9]: limit, remaining per bucket ('' when the header was absent).
_OBSERVE = (
    _PROLOGUE
    + """
for i = 1, 3 do
  local limit = tonumber(ARGV[2 + 2 * i])
  local remaining = tonumber(ARGV[3 + 2 * i])
  if limit and limit > 0 and limit ~= cap[i] then
    cap[i] = limit
    lvl[i] = math.min(lvl[i], limit)
  end
  if remaining and remaining < lvl[i] then lvl[i] = remaining end
end
save()
return 1
"""
)

_PENALIZE = (
    _PROLOGUE
    + """
paused = math.max(paused, now + tonumber(ARGV[4]))
save()
return 1
"""
)

_PEEK = (
    _PROLOGUE
    + """
return {num(cap[1]), num(cap[2]), num(cap[3]), num(lvl[1]), num(lvl[2]), num(lvl[3]),
  num(math.max(paused - now, 0))}
"""
)

# How much longer than its own sleep an interactive waiter's mark holds background back.
_HOLD_GRACE = 0.1


class AdmissionUnavailable(TransientError):
    problem_type = "admission-unavailable"
    title = "The shared rate-limit store cannot be reached"
    status = 503
    retry_after = 5.0


class _Local:
    """This instance's view of one model: its line, last known capacity and pause."""

    def __init__(self, capacity: Amounts, line: WaitingLine) -> None:
        self.capacity = capacity
        self.line = line
        self.paused_until = float("-inf")
        self.last_wait = 0.0


class RedisAdmission:
    """Token buckets in Redis, shared by every instance using the same ``prefix``."""

    def __init__(
        self,
        redis: Redis,
        limits: Mapping[str, RateLimits],
        default: RateLimits | None = None,
        *,
        prefix: str = "switchyard:admission:",
        weights: TenantWeights | None = None,
        headroom: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_sleep: float = 0.5,
        jitter: float = 0.2,
    ) -> None:
        self._redis = redis
        self._limits = dict(limits)
        self._default = default
        self._prefix = prefix
        self.weights = weights or TenantWeights()  # how tenants share each line
        self._headroom = headroom  # kept off limits the upstream reports, as off ours
        self._clock = clock
        self._sleep = sleep
        self._max_sleep = max_sleep
        self._jitter = jitter
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source)
            for name, source in {
                "acquire": _ACQUIRE,
                "credit": _CREDIT,
                "observe": _OBSERVE,
                "penalize": _PENALIZE,
                "peek": _PEEK,
            }.items()
        }
        self._locals: dict[str, _Local] = {}
        self._pending: deque[tuple[str, str, list[Any]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    def _local(self, model: str) -> _Local:
        local = self._locals.get(model)
        if local is None:
            capacity = limits_for(model, self._limits, self._default)
            line = WaitingLine(self._clock, self._sleep, self.weights)
            local = self._locals[model] = _Local(capacity, line)
        return local

    async def _run(self, script: str, model: str, args: Sequence[Any]) -> Any:
        configured = limits_for(model, self._limits, self._default)
        try:
            return await self._scripts[script](
                keys=[self._prefix + model], args=[*configured, *args]
            )
        except RedisError as exc:
            raise AdmissionUnavailable(f"admission store failed: {exc}") from exc

    # ------------------------------------------------------------------------- acquire

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
        local = self._local(model)
        cost = request_cost(input_tokens, max_tokens)
        check_fits(model, cost, local.capacity)
        started = self._clock()

        async def attempt(cost: Amounts, priority: Priority) -> float:
            paused = local.paused_until - self._clock()
            if paused > 0:
                return paused
            factor = 1 + random.uniform(0, self._jitter)
            taken, wait, capacity = await self._take(model, cost, priority, factor)
            local.capacity = capacity
            if taken < 0:
                check_fits(model, cost, capacity)
                raise RequestTooLarge(f"the request can never fit {model}'s limits")
            if taken:
                return 0.0
            local.last_wait = wait
            return min(wait, self._max_sleep) * factor

        async def estimate(ahead: Amounts) -> float:
            try:
                reply = await self._run("acquire", model, [*ahead, int(priority), 1, 0, 1, 0])
            except AdmissionUnavailable:
                return local.last_wait
            return max(float(reply[1]), local.paused_until - self._clock())

        await local.line.admit(
            cost, priority, deadline, attempt, estimate, tenant=tenant, capacity=local.capacity
        )
        return Permit(
            model,
            cost,
            lambda amounts: self._credit(model, local, amounts),
            waited=self._clock() - started,
        )

    async def _take(
        self, model: str, cost: Amounts, priority: Priority, factor: float
    ) -> tuple[int, float, Amounts]:
        args = [*cost, int(priority), 0, self._max_sleep, factor, _HOLD_GRACE]
        call = asyncio.ensure_future(self._run("acquire", model, args))
        try:
            reply = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The script may have taken the cost before the cancellation arrived: once it
            # answers, give back whatever it took.
            call.add_done_callback(lambda done: self._refund_if_taken(model, cost, done))
            raise
        return int(reply[0]), float(reply[1]), Amounts(*(float(c) for c in reply[2:5]))

    def _refund_if_taken(self, model: str, cost: Amounts, call: asyncio.Future[Any]) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        if int(call.result()[0]) == 1:
            self._submit("credit", model, list(cost))

    # ---------------------------------------------------------- queued, ordered updates

    def _credit(self, model: str, local: _Local, amounts: Amounts) -> None:
        self._submit("credit", model, list(amounts))
        local.line.kick()

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        try:
            local = self._local(model)
        except UnknownModel:
            return
        args: list[Any] = []
        for limit, remaining in parse_ratelimit_headers(headers, self._headroom):
            args += ["" if limit is None else limit, "" if remaining is None else remaining]
        self._submit("observe", model, args)
        local.line.kick()

    def penalize(self, model: str, retry_after: float) -> None:
        try:
            local = self._local(model)
        except UnknownModel:
            return
        seconds = max(0.0, retry_after)
        local.paused_until = max(local.paused_until, self._clock() + seconds)
        self._submit("penalize", model, [seconds])

    def _submit(self, script: str, model: str, args: list[Any]) -> None:
        self._pending.append((script, model, args))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            script, model, args = self._pending.popleft()
            try:
                await self._run(script, model, args)
            except Exception as exc:  # a lost update must not kill the writer
                log.warning("admission update lost", script=script, model=model, error=str(exc))

    async def flush(self) -> None:
        """Wait until every queued update has reached Redis."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    # ------------------------------------------------------------------------- metrics

    async def snapshot(self) -> dict[str, ModelSnapshot]:
        await self.flush()
        found: dict[str, ModelSnapshot] = {}
        for model in sorted({*self._limits, *self._locals}):
            local = self._local(model)
            reply = [float(value) for value in await self._run("peek", model, [])]
            found[model] = ModelSnapshot(
                capacity=Amounts(*reply[0:3]),
                remaining=Amounts(*reply[3:6]),
                queued=local.line.counts(),
                paused_for=max(reply[6], local.paused_until - self._clock()),
                queued_by_tenant=local.line.tenant_counts(),
            )
        return found

    async def aclose(self) -> None:
        """Drain queued updates; the Redis client stays the caller's to close."""
        await self.flush()
