"""Admission: per-model token buckets in front of the upstream.

Switchyard keeps its own copy of each model's three Anthropic limits, so that it never trips
them itself: requests, input tokens and output tokens per minute. Each is a token bucket
with continuous refill (capacity = the per-minute limit, refill = limit / 60 per second;
a 60 RPM limit admits one request a second once the burst is spent, as the API does).

A request reserves, all at once, one request, its estimated *uncached* input tokens (cache
reads do not count toward the input limit) and its whole ``max_tokens`` of output (the API
reserves output the same way). The :class:`Permit` it gets back is then either

* **settled** with the real usage (``input_tokens`` = uncached + cache-write input,
  ``output_tokens``): the input reservation is corrected to the real figure either way and
  the unused output reservation is given back; or
* **released**, for a request that never reached the upstream: everything is given back.

Only the first of these counts; later calls do nothing, so ``settle`` in the body and
``release`` in a ``finally`` is safe. Both are synchronous so they also work in cleanup code
that runs while a task is being cancelled.

Waiting: each model has one line (:class:`~core.gateway.fair_line.WaitingLine`):
interactive before background, and within a priority the waiting tenants share by weight
(fair queueing), each tenant first come first served. Only the head of the line may take
tokens, so a large request is not overtaken forever by small ones. The head sleeps exactly
until enough tokens will have refilled (no polling) and is woken early when tokens come
back (a settle or release) or the line changes. A waiter whose deadline passes gets
:class:`AdmissionTimeout` (429, with ``retry_after`` = the estimated wait): that is the only
rate-limit error a caller of the gateway ever sees. A request larger than a bucket's
capacity can never fit and gets :class:`RequestTooLarge` at once.

The upstream's view wins when it is stricter: :meth:`Admission.observe` applies the
``anthropic-ratelimit-*`` response headers (a lower ``remaining`` lowers our bucket, a
different ``limit`` becomes the capacity), and :meth:`Admission.penalize` pauses a model
after an upstream 429 until its ``retry-after`` has passed.

:class:`~core.gateway.admission_memory.InProcessAdmission` serves one process;
:mod:`core.gateway.admission_redis` shares the buckets between instances. This module holds
what both share: the vocabulary and the protocol; :mod:`core.gateway.fair_line` the line.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from core.errors import TerminalError, TransientError
from core.gateway.catalog import RateLimits, UnknownModel

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

BUCKETS = ("requests", "input_tokens", "output_tokens")
_HEADER_BUCKETS = ("requests", "input-tokens", "output-tokens")
# Tokens are floats while refilling; a shortfall this small counts as room.
EPSILON = 1e-6


class Priority(IntEnum):
    """Lower values are served first."""

    INTERACTIVE = 0
    BACKGROUND = 1


class AdmissionTimeout(TransientError):
    problem_type = "admission-timeout"
    title = "The model's rate limit left no room before the deadline"
    status = 429
    retry_after: float  # seconds until the request would probably have fitted

    def __init__(self, detail: str, *, retry_after: float, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after


class RequestTooLarge(TerminalError):
    problem_type = "request-exceeds-rate-limit"
    title = "The request is larger than the model's per-minute limit"
    status = 400


class Amounts(NamedTuple):
    """One figure per bucket, in :data:`BUCKETS` order."""

    requests: float
    input_tokens: float
    output_tokens: float


def request_cost(input_tokens: int, max_tokens: int) -> Amounts:
    """What one request reserves: itself, its uncached input, its whole output allowance."""
    if input_tokens < 0 or max_tokens < 0:
        raise ValueError("token counts cannot be negative")
    return Amounts(1, input_tokens, max_tokens)


def check_fits(model: str, cost: Amounts, capacity: Amounts) -> None:
    for name, need, room in zip(BUCKETS, cost, capacity, strict=True):
        if need > room:
            raise RequestTooLarge(
                f"{name} {need:g} exceeds {model}'s per-minute limit of {room:g}; "
                "it can never be admitted",
                model=model,
                bucket=name,
            )


class Permit:
    """The right to send one request upstream; settle or release it (once)."""

    def __init__(
        self, model: str, reserved: Amounts, credit: Callable[[Amounts], None], waited: float
    ) -> None:
        self.model = model
        self.reserved = reserved
        self.waited = waited  # seconds spent in the line
        self._credit = credit
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """Correct the reservation to the real usage (uncached + cache-write input)."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("usage cannot be negative")
        if self._closed:
            return
        self._closed = True
        self._credit(
            Amounts(
                0,
                self.reserved.input_tokens - input_tokens,
                self.reserved.output_tokens - output_tokens,
            )
        )

    def release(self) -> None:
        """Give everything back: the request never reached the upstream."""
        if self._closed:
            return
        self._closed = True
        self._credit(self.reserved)


@dataclass(frozen=True)
class ModelSnapshot:
    capacity: Amounts
    remaining: Amounts
    queued: Mapping[Priority, int]
    paused_for: float
    queued_by_tenant: Mapping[str, int] = field(default_factory=dict)  # all priorities


class Admission(Protocol):
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
        """Wait for room in ``model``'s buckets and reserve it; ``deadline`` is monotonic.
        ``tenant`` picks the queue the request waits in (fair shares between tenants)."""
        ...

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        """Apply the upstream's ``anthropic-ratelimit-*`` headers."""
        ...

    def penalize(self, model: str, retry_after: float) -> None:
        """After an upstream 429: admit nothing for ``model`` for ``retry_after`` seconds."""
        ...

    async def snapshot(self) -> dict[str, ModelSnapshot]:
        """Per model (configured or used): capacity, remaining, queue, pause."""
        ...

    async def aclose(self) -> None: ...


def limits_for(model: str, limits: Mapping[str, RateLimits], default: RateLimits | None) -> Amounts:
    found = limits.get(model, default)
    if found is None:
        raise UnknownModel(f"no rate limits are configured for model {model!r}")
    return Amounts(found.rpm, found.input_tpm, found.output_tpm)


def parse_ratelimit_headers(
    headers: Mapping[str, str], headroom: float = 0.0
) -> list[tuple[int | None, int | None]]:
    """(limit, remaining) per bucket from the upstream's headers; absent or malformed → None.

    ``headroom`` (a fraction) is kept off each limit, as it is off the configured limits:
    admission aims below the upstream's limit, also once the upstream has told it.
    """
    lowered = {name.lower(): value for name, value in headers.items()}

    def number(name: str) -> int | None:
        try:
            value = int(lowered[name])
        except (KeyError, ValueError):
            return None
        return value if value >= 0 else None

    found: list[tuple[int | None, int | None]] = []
    for bucket in _HEADER_BUCKETS:
        limit = number(f"anthropic-ratelimit-{bucket}-limit")
        if limit:
            limit = max(1, math.floor(limit * (1 - headroom)))
        found.append(
            (limit or None, number(f"anthropic-ratelimit-{bucket}-remaining")),
        )
    return found
