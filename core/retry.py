"""Retry policy as a value, shared by queue jobs and (later) gateway calls.

Backoff is exponential with full jitter (tenacity's ``wait_random_exponential``): the n-th
retry waits a uniform random time in ``[0, min(maximum, initial * 2**(n-1))]``, which spreads a
burst of failures instead of retrying them in lock-step. A ``retry_after`` carried by a
transient error is a floor on the wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tenacity import RetryCallState, wait_random_exponential

from core.errors import is_transient

RETRY_AFTER_CEILING = 3600.0


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial: float = 1.0
    maximum: float = 300.0
    _wait: wait_random_exponential = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        object.__setattr__(
            self, "_wait", wait_random_exponential(multiplier=self.initial, max=self.maximum)
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))

    def decide(self, attempt: int, error: BaseException) -> RetryDecision:
        if not is_transient(error):
            return RetryDecision(False, reason="terminal error")
        if attempt >= self.max_attempts:
            return RetryDecision(False, reason=f"gave up after {attempt} attempts")
        delay = self.backoff(attempt)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            # Honoured up to an hour: a hostile or broken Retry-After must not park a job
            # for years (or overflow the datetime arithmetic).
            delay = min(float(retry_after), RETRY_AFTER_CEILING)
        return RetryDecision(True, delay=delay)
