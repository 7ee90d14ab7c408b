"""Per-model rate limits of the SANDBOX: token buckets with continuous refill.

Each model has three buckets, each holding up to its per-minute limit and refilling at
limit/60 per second: requests, input tokens (uncached input + cache writes; cache reads are
free) and output tokens. Output is reserved from ``max_tokens`` when a request is admitted
and refunded down to the real output when the answer is done, so an oversized
``max_tokens`` eats output headroom while the request runs. A request needing more than a
bucket's capacity is admitted once that bucket is full and drives it below zero.

Every response carries ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
{limit,remaining,reset}``: token ``remaining`` rounded to the nearest thousand, ``reset`` the
RFC 3339 instant (UTC, whole seconds) at which the bucket is full again. ``tokens-*``
describes whichever of the input and output buckets has the smaller share left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from functools import lru_cache

from core.gateway.catalog import RateLimits
from core.sandbox.anthropic.errors import RateLimited

RawHeaders = list[tuple[bytes, bytes]]


@lru_cache(maxsize=512)
def rfc3339(epoch_seconds: int) -> bytes:
    """``2026-11-25T12:00:05Z`` for a whole-second Unix time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds)).encode()


def _thousands(value: float) -> bytes:
    return str(max(0, math.floor(value / 1000 + 0.5) * 1000)).encode()


class TokenBucket:
    """Holds up to ``capacity``; refills ``capacity / 60`` per second of ``clock`` time."""

    __slots__ = ("capacity", "level", "limit_header", "rate", "stamp")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self.stamp = now
        self.limit_header = str(capacity).encode()

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` (at most the capacity) is available; 0 if it is now."""
        missing = min(amount, self.capacity) - self.level
        return missing / self.rate if missing > 0 else 0.0

    def seconds_to_full(self) -> float:
        return (self.capacity - self.level) / self.rate


class ModelBuckets:
    __slots__ = ("input", "output", "requests")

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.requests = TokenBucket(limits.rpm, now)
        self.input = TokenBucket(limits.input_tpm, now)
        self.output = TokenBucket(limits.output_tpm, now)

    def refill(self, now: float) -> None:
        self.requests.refill(now)
        self.input.refill(now)
        self.output.refill(now)


class RateLimiter:
    """All models' buckets; buckets start full on a model's first request."""

    def __init__(
        self,
        limits: Mapping[str, RateLimits],
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._wall = wall
        self._buckets: dict[str, ModelBuckets] = {}

    def reset(self) -> None:
        self._buckets.clear()

    def _get(self, model_id: str) -> ModelBuckets:
        buckets = self._buckets.get(model_id)
        now = self._clock()
        if buckets is None:
            buckets = self._buckets[model_id] = ModelBuckets(self._limits[model_id], now)
        else:
            buckets.refill(now)
        return buckets

    def admit(self, model_id: str, input_tokens: int, max_tokens: int) -> None:
        """Take one request, the input and a ``max_tokens`` reservation, or raise 429."""
        b = self._get(model_id)
        waits = (b.requests.wait(1), b.input.wait(input_tokens), b.output.wait(max_tokens))
        wait = max(waits)
        if wait > 0:
            which = ("requests", "input tokens", "output tokens")[waits.index(wait)]
            raise RateLimited(
                f"This request would exceed the rate limit for {model_id} ({which} per minute)."
                " Please retry after the time in the retry-after header.",
                retry_after=max(1, math.ceil(wait)),
            )
        b.requests.level -= 1
        b.input.level -= input_tokens
        b.output.level -= max_tokens

    def settle(self, model_id: str, reserved: int, used: int) -> None:
        """Refund the unused part of an output reservation."""
        if reserved > used:
            b = self._get(model_id)
            b.output.level = min(b.output.capacity, b.output.level + (reserved - used))

    def headers(self, model_id: str) -> RawHeaders:
        """The ``anthropic-ratelimit-*`` headers for the model's current state."""
        b = self._get(model_id)
        wall = self._wall()
        room_in, room_out = b.input.level / b.input.capacity, b.output.level / b.output.capacity
        tokens = b.input if room_in <= room_out else b.output
        return [
            (b"anthropic-ratelimit-requests-limit", b.requests.limit_header),
            (b"anthropic-ratelimit-requests-remaining", _floor(b.requests.level)),
            (b"anthropic-ratelimit-requests-reset", _reset(wall, b.requests)),
            (b"anthropic-ratelimit-tokens-limit", tokens.limit_header),
            (b"anthropic-ratelimit-tokens-remaining", _thousands(tokens.level)),
            (b"anthropic-ratelimit-tokens-reset", _reset(wall, tokens)),
            (b"anthropic-ratelimit-input-tokens-limit", b.input.limit_header),
            (b"anthropic-ratelimit-input-tokens-remaining", _thousands(b.input.level)),
            (b"anthropic-ratelimit-input-tokens-reset", _reset(wall, b.input)),
            (b"anthropic-ratelimit-output-tokens-limit", b.output.limit_header),
            (b"anthropic-ratelimit-output-tokens-remaining", _thousands(b.output.level)),
            (b"anthropic-ratelimit-output-tokens-reset", _reset(wall, b.output)),
        ]


def _floor(value: float) -> bytes:
    return str(max(0, math.floor(value))).encode()


def _reset(wall: float, bucket: TokenBucket) -> bytes:
    return rfc3339(math.ceil(wall + bucket.seconds_to_full()))
