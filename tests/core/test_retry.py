"""The retry policy: full-jitter backoff, retry-after floor, terminal errors never retried."""

from __future__ import annotations

import pytest

from core.errors import (
    ConnectorTerminalError,
    ConnectorTransientError,
    NotFound,
    TransientError,
)
from core.retry import RETRY_AFTER_CEILING, RetryPolicy


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    # After failed attempt n the wait is uniform in [0, min(maximum, initial * 2**(n-1))].
    policy = RetryPolicy(max_attempts=10, initial=1.0, maximum=20.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (9, 20.0)]:
        waits = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= wait <= ceiling for wait in waits), (attempt, max(waits))
        # Jitter spreads the waits across the envelope instead of one fixed delay.
        assert max(waits) - min(waits) > ceiling / 4


def test_transient_errors_retry_until_the_attempt_limit() -> None:
    policy = RetryPolicy(max_attempts=3, initial=0.5, maximum=10.0)
    error = ConnectorTransientError("timeout")
    first, second, third = (policy.decide(n, error) for n in (1, 2, 3))
    assert first.retry
    assert second.retry
    assert not third.retry
    assert "3 attempts" in third.reason
    assert 0.0 <= first.delay <= 0.5


def test_unexpected_exceptions_count_as_transient() -> None:
    assert RetryPolicy().decide(1, KeyError("bug fixed by a deploy")).retry


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(max_attempts=5, initial=0.01, maximum=0.02)
    decision = policy.decide(1, ConnectorTransientError("429", retry_after=30))
    assert decision.retry
    assert decision.delay == 30.0
    small = policy.decide(1, ConnectorTransientError("429", retry_after=0.0))
    assert small.delay <= 0.02  # a smaller retry-after does not shorten the backoff


@pytest.mark.parametrize("error", [ConnectorTerminalError("400"), NotFound("gone")])
def test_terminal_errors_are_never_retried(error: Exception) -> None:
    decision = RetryPolicy(max_attempts=10).decide(1, error)
    assert not decision.retry
    assert decision.reason == "terminal error"


def test_marker_wins_over_the_base_class() -> None:
    class Flaky(TransientError):
        pass

    assert RetryPolicy().decide(1, Flaky("again")).retry


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_an_absurd_retry_after_is_capped_at_an_hour() -> None:
    decision = RetryPolicy(max_attempts=3).decide(1, ConnectorTransientError("x", retry_after=1e12))
    assert decision.retry
    assert decision.delay == RETRY_AFTER_CEILING
