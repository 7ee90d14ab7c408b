"""Injected failures of the SANDBOX: probabilities, and the seeded draw per request.

:class:`Faults` is a plain mutable dataclass; change its fields (or replace
``sandbox.faults``) while the server runs. Each Messages request draws its fate from the
sandbox's seeded :class:`random.Random`, so a run with the same seed, configuration and
request order fails the same requests. Only non-zero rates draw, in a fixed order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields


@dataclass
class Faults:
    """Per-request probabilities (0..1) of each injected failure.

    * ``rate_429`` / ``rate_529`` / ``rate_500``: answer ``rate_limit_error`` (with
      ``retry-after: 1``), ``overloaded_error`` or ``api_error`` instead of a message.
    * ``mid_stream_error_rate``: a stream sends a few deltas after HTTP 200, then
      ``event: error`` (``overloaded_error``) and ends.
    * ``slow_rate``: the answer is ``slow_seconds`` later (not scaled by latency_scale).
    * ``schema_break_rate``: a ``tool_use`` input violates the tool's ``input_schema``.
    * ``batch_errored_rate`` / ``batch_invalid_rate``: a Message Batches request's result
      is ``errored`` with an ``api_error`` (transient) or an ``invalid_request_error``.
    * ``batch_expired_rate``: a Message Batches request's result is ``expired`` (the API
      did not get to it within 24 hours).
    """

    rate_429: float = 0.0
    rate_529: float = 0.0
    rate_500: float = 0.0
    mid_stream_error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    schema_break_rate: float = 0.0
    batch_errored_rate: float = 0.0
    batch_invalid_rate: float = 0.0
    batch_expired_rate: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "slow_seconds":
                if value < 0:
                    raise ValueError("slow_seconds must be >= 0")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be a probability in [0, 1], not {value}")


@dataclass(frozen=True)
class Fate:
    """What the faults decided for one request."""

    status: int | None = None  # 429, 500 or 529 instead of an answer
    mid_stream_error: bool = False
    delay: float = 0.0
    schema_break: bool = False


CLEAN = Fate()


def draw(faults: Faults, rng: random.Random) -> Fate:
    """One request's fate; :data:`CLEAN` without a draw when no fault is enabled."""
    f = faults
    if not (
        f.rate_429
        or f.rate_529
        or f.rate_500
        or f.mid_stream_error_rate
        or f.slow_rate
        or f.schema_break_rate
    ):
        return CLEAN
    status: int | None = None
    for rate, code in ((f.rate_529, 529), (f.rate_500, 500), (f.rate_429, 429)):
        if rate and rng.random() < rate:
            status = code
            break
    return Fate(
        status=status,
        mid_stream_error=bool(f.mid_stream_error_rate and rng.random() < f.mid_stream_error_rate),
        delay=f.slow_seconds if f.slow_rate and rng.random() < f.slow_rate else 0.0,
        schema_break=bool(f.schema_break_rate and rng.random() < f.schema_break_rate),
    )


def draw_batch(faults: Faults, rng: random.Random) -> str | None:
    """One batch request's injected result: ``"expired"``, an error type for ``errored``
    (``api_error``, ``invalid_request_error``), or None to answer it. No draw when off."""
    f = faults
    for rate, outcome in (
        (f.batch_expired_rate, "expired"),
        (f.batch_errored_rate, "api_error"),
        (f.batch_invalid_rate, "invalid_request_error"),
    ):
        if rate and rng.random() < rate:
            return outcome
    return None
