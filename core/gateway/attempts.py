"""Admission and retry around one upstream operation.

Each attempt first takes a permit from admission (the per-model token buckets, waited for
in the tenant's fair share of the line), so a retry waits its turn like any other request.
Transient upstream errors (429, 5xx, 529, connection failures) are retried with full-jitter
exponential backoff (:class:`core.retry.RetryPolicy`, built on tenacity's wait),
``retry-after`` honoured; an upstream 429 also pauses the model's admission for everyone.
The overall deadline bounds waiting and retrying together: when it is spent the caller gets
the last error, or :class:`AdmissionTimeout` (429 with our own ``retry-after``) if it never
got a turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from core.gateway.admission import Admission, Permit, Priority
from core.gateway.records import AttemptRecord, CallRecord
from core.gateway.upstream import UpstreamError
from core.retry import RetryPolicy


class _Answer(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def request_id(self) -> str | None: ...


T = TypeVar("T", bound=_Answer)


@dataclass
class Attempted(Generic[T]):
    answer: T
    permit: Permit
    started: float  # monotonic time the successful attempt was sent


async def with_admission_and_retry(
    operation: Callable[[], Awaitable[T]],
    *,
    admission: Admission,
    policy: RetryPolicy,
    model: str,
    input_tokens: int,
    max_tokens: int,
    priority: Priority,
    deadline: float,
    tenant: str,
    record: CallRecord,
    clock: Callable[[], float] = time.monotonic,
) -> Attempted[T]:
    attempt = 0
    while True:
        attempt += 1
        waited_from = clock()
        permit = await admission.acquire(
            model,
            input_tokens=input_tokens,
            max_tokens=max_tokens,
            priority=priority,
            deadline=deadline,
            tenant=tenant,
        )
        started = clock()
        record.queue_ms += (started - waited_from) * 1000
        try:
            answer = await operation()
        except UpstreamError as exc:
            if exc.http_status in (429, 529):
                permit.release()  # refused before any work: nothing counted upstream
            else:
                permit.settle(input_tokens=input_tokens, output_tokens=0)
            _note_failure(record, attempt, model, exc, started, clock())
            if exc.headers:
                admission.observe(model, exc.headers)
            if exc.http_status == 429:
                admission.penalize(model, exc.retry_after or 1.0)
            decision = policy.decide(attempt, exc)
            # After a 429 admission itself holds the next attempt until the upstream has
            # room again; sleeping here as well would wait twice.
            delay = 0.0 if exc.http_status == 429 else decision.delay
            if not decision.retry or clock() + delay >= deadline:
                raise
            record.retries += 1
            if delay:
                await asyncio.sleep(delay)
            continue
        except BaseException:
            permit.release()
            raise
        admission.observe(model, answer.headers)
        record.attempts.append(
            AttemptRecord(
                attempt=attempt,
                model=model,
                http_status=answer.status,
                latency_ms=(clock() - started) * 1000,
                upstream_request_id=answer.request_id,
            )
        )
        return Attempted(answer, permit, started)


def _note_failure(
    record: CallRecord,
    attempt: int,
    model: str,
    exc: UpstreamError,
    started: float,
    now: float,
) -> None:
    record.attempts.append(
        AttemptRecord(
            attempt=attempt,
            model=model,
            http_status=exc.http_status,
            latency_ms=(now - started) * 1000,
            error_type=exc.error_type,
            upstream_request_id=exc.request_id,
            retry_after=exc.retry_after,
        )
    )


def fill_attempt_usage(attempt: AttemptRecord, usage: Any, cost_picodollars: int) -> None:
    attempt.input_tokens = usage.input_tokens
    attempt.output_tokens = usage.output_tokens
    attempt.cache_read_tokens = usage.cache_read_input_tokens
    attempt.cache_write_tokens = usage.cache_creation_input_tokens
    attempt.cost_picodollars = cost_picodollars
