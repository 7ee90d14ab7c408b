"""The line in front of a model's buckets: strict priority, then fair shares per tenant.

Order, in three rules:

1. **Priority first.** Any interactive waiter goes before any background one; an
   interactive arrival takes the head from a background head that is waiting for refill.
2. **Within a priority, tenants share by weight:** start-time fair queueing (SFQ; Goyal,
   Vin and Cheng, 1996). Each tenant has its own first-come-first-served queue, and its
   front waiter carries a *start tag*: ``start = max(V, finish)``, where ``finish`` is the
   start tag of the tenant's last admitted request plus that request's ``share / weight``,
   and ``V`` (the class's virtual time) is the start tag of the class's current head. The
   next head is the front with the smallest (start, arrival). A request's ``share`` is its
   dominant share of the model's per-minute limits — the largest of requests, input and
   output tokens over their capacities — so a tenant sending long prompts spends its turn
   faster than one sending short ones, whichever bucket binds.
3. **The head keeps its place** until it is admitted or leaves (deadline, cancellation,
   too large); only a waiter of a higher priority takes it. A request waiting for enough
   refill is therefore never overtaken forever by smaller ones, whatever their tenant.

Why SFQ: costs are real numbers of very different sizes (one request, or a prompt of a
hundred thousand tokens). Deficit round robin needs a quantum at least the largest cost to
stay O(1) a pick, and then lets a tenant send a whole quantum's worth in a row; classic WFQ
orders by finish tags, which needs a fluid (GPS) simulation to track ``V`` and serves small
requests before large ones. SFQ needs neither a quantum nor a simulation (``V`` is the
head's start tag) and is fair whatever the sizes. A tenant that was idle joins at the
current ``V``: its request waits for the head and at most one request of each other tenant
waiting in its priority, never for another tenant's backlog; while it stays busy it gets
its weight's part (weight / the waiting tenants' total) of the shares admitted. An idle
tenant banks no credit (its start is at least ``V``); a waiter that times out or is cancelled
leaves without charging its tenant (``finish`` moves on admission only). A class with
nobody waiting forgets its tags (``V`` and every ``finish`` restart at 0), so memory holds
only the tenants of the current busy period. A pick scans the waiting tenants' fronts:
O(tenants waiting), once per admission.

Weights (:class:`TenantWeights`) come from ``SWITCHYARD_GATEWAY__TENANT_WEIGHTS`` (tenant
id → weight, default 1); ``SWITCHYARD_GATEWAY__TENANT_FAIRNESS=false`` puts every tenant in
one queue per priority (first come, first served, as before).

Scope: one line per model *per process*. With
:class:`~core.gateway.admission_redis.RedisAdmission` the buckets are shared but each
instance orders only its own waiters; instances compete for room as they did before.

Not done: a per-tenant cap on admitted (in-flight) requests or on a slice of the bucket.
Admission is a rate limiter with continuous refill, not a concurrency limit: an admitted
burst has spent its tokens, and what every waiter waits for next is refill, which this
line hands out fairly. A burst that emptied a full bucket delays another tenant by about
the head's refill and its own (measured by ``switchyard bench fairness``), not by the
burst's size. A cap would leave room unused while only one tenant is busy (it is not
work-conserving), and across instances it would need per-tenant state in the Redis script.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from core.gateway.admission import AdmissionTimeout, Amounts, Clock, Priority, Sleep


@dataclass(frozen=True)
class TenantWeights:
    """How tenants waiting in the same priority share a model: in proportion to weight."""

    overrides: Mapping[str, float] = field(default_factory=dict)
    default: float = 1.0
    fair: bool = True  # False: one queue per priority, first come first served

    def __post_init__(self) -> None:
        for weight in (self.default, *self.overrides.values()):
            if not weight > 0:
                raise ValueError(f"tenant weights must be positive, not {weight!r}")

    def weight(self, tenant: str) -> float:
        return self.overrides.get(tenant, self.default)

    def queue(self, tenant: str) -> str:
        """The queue ``tenant``'s requests wait in."""
        return tenant if self.fair else ""


def dominant_share(cost: Amounts, capacity: Amounts) -> float:
    """The largest fraction of a per-minute limit that ``cost`` takes."""
    return max(need / room for need, room in zip(cost, capacity, strict=True) if room > 0)


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    seq: int
    tenant: str
    queue: str
    cost: Amounts
    step: float  # share / weight: how far admitting it moves its queue's finish tag
    start: float = 0.0  # its start tag, set when it reaches the front of its queue
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class _Class:
    """One priority's waiters: a queue per tenant, the virtual time, the finish tags."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[_Waiter]] = {}
        self.finish: dict[str, float] = {}
        self.virtual = 0.0
        self.size = 0

    def join(self, waiter: _Waiter) -> None:
        queue = self.queues.setdefault(waiter.queue, deque())
        queue.append(waiter)
        self.size += 1
        if len(queue) == 1:
            self._tag(waiter)

    def _tag(self, front: _Waiter) -> None:
        front.start = max(self.virtual, self.finish.get(front.queue, 0.0))

    def leave(self, waiter: _Waiter, admitted: bool) -> None:
        queue = self.queues[waiter.queue]
        was_front = queue[0] is waiter
        queue.remove(waiter)
        self.size -= 1
        if admitted:
            self.finish[waiter.queue] = waiter.start + waiter.step
        if not queue:
            del self.queues[waiter.queue]
        elif was_front:
            self._tag(queue[0])
        if not self.queues:
            self.virtual = 0.0
            self.finish.clear()

    def best(self) -> _Waiter | None:
        fronts = (queue[0] for queue in self.queues.values())
        return min(fronts, key=lambda w: (w.start, w.seq), default=None)

    def projected(self) -> Iterator[tuple[float, int, _Waiter]]:
        """Every waiter with the start tag it will get if nobody else arrives."""
        for queue in self.queues.values():
            start = queue[0].start
            for waiter in queue:
                yield start, waiter.seq, waiter
                start += waiter.step


class WaitingLine:
    """One model's requests waiting for room; see the module docstring for the order.

    ``attempt(cost, priority)`` is called for the head only: it takes the cost and returns 0,
    or returns the seconds to sleep before trying again. ``estimate(cost_ahead)`` answers
    the ``retry_after`` of a timeout. Shared by both implementations.
    """

    def __init__(self, clock: Clock, sleep: Sleep, weights: TenantWeights | None = None) -> None:
        self._clock = clock
        self._sleep = sleep
        self._weights = weights or TenantWeights()
        self._classes = {priority: _Class() for priority in sorted(Priority)}
        self._head: _Waiter | None = None
        self._tenants: Counter[str] = Counter()
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(c.size for c in self._classes.values())

    def counts(self) -> dict[Priority, int]:
        return {priority: c.size for priority, c in self._classes.items()}

    def tenant_counts(self) -> dict[str, int]:
        return dict(self._tenants)

    def kick(self) -> None:
        """Wake the head: room may have appeared."""
        if self._head is not None:
            self._head.wake.set()

    async def admit(
        self,
        cost: Amounts,
        priority: Priority,
        deadline: float,
        attempt: Callable[[Amounts, Priority], Awaitable[float]],
        estimate: Callable[[Amounts], Awaitable[float]],
        *,
        tenant: str,
        capacity: Amounts,
    ) -> None:
        waiter = self._join(cost, priority, tenant, capacity)
        admitted = False
        try:
            while True:
                # Cleared before attempting, so a kick during an awaited attempt is kept.
                waiter.wake.clear()
                wait = math.inf
                if self._head is waiter:
                    wait = await attempt(cost, priority)
                    if wait <= 0:
                        admitted = True
                        return
                left = deadline - self._clock()
                if left <= 0:
                    retry_after = await estimate(self._ahead(waiter))
                    raise AdmissionTimeout(
                        f"no room within the deadline (about {retry_after:.1f}s needed)",
                        retry_after=retry_after,
                    )
                await self._nap(waiter.wake, min(wait, left))
        finally:
            self._leave(waiter, admitted)

    def _join(self, cost: Amounts, priority: Priority, tenant: str, capacity: Amounts) -> _Waiter:
        weights = self._weights
        waiter = _Waiter(
            priority,
            next(self._seq),
            tenant,
            weights.queue(tenant),
            cost,
            dominant_share(cost, capacity) / weights.weight(tenant),
        )
        self._classes[priority].join(waiter)
        self._tenants[tenant] += 1
        if self._head is None or priority < self._head.priority:
            self._pick()
        return waiter

    def _leave(self, waiter: _Waiter, admitted: bool) -> None:
        self._classes[waiter.priority].leave(waiter, admitted)
        self._tenants[waiter.tenant] -= 1
        if not self._tenants[waiter.tenant]:
            del self._tenants[waiter.tenant]
        if self._head is waiter:
            self._pick()

    def _pick(self) -> None:
        """Make the best front of the highest waiting priority the head, and wake it."""
        self._head = None
        for waiting in self._classes.values():
            best = waiting.best()
            if best is not None:
                waiting.virtual = max(waiting.virtual, best.start)
                self._head = best
                best.wake.set()
                return

    def _ahead(self, waiter: _Waiter) -> Amounts:
        """What will be admitted up to and including ``waiter`` if nobody else arrives."""
        head = self._head
        ahead = [] if head is None else [head.cost]  # the head keeps its place
        own = self._classes[waiter.priority]
        mine = next((start, seq) for start, seq, w in own.projected() if w is waiter)
        for priority, waiting in self._classes.items():
            if priority > waiter.priority:
                break
            ahead += [
                other.cost
                for start, seq, other in waiting.projected()
                if other is not head and (priority < waiter.priority or (start, seq) <= mine)
            ]
        return Amounts(*(sum(column) for column in zip(*ahead, strict=True)))

    async def _nap(self, wake: asyncio.Event, seconds: float) -> None:
        if seconds == math.inf:
            await wake.wait()
            return

        def ring(timer: asyncio.Future[None]) -> None:
            if not timer.cancelled():
                wake.set()

        timer = asyncio.ensure_future(self._sleep(seconds))
        timer.add_done_callback(ring)
        try:
            await wake.wait()
        finally:
            timer.cancel()
