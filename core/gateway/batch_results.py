"""Polling submitted Message Batches and applying their results (the loop's second half).

Per result line, matched to its request by ``custom_id`` (the request id), never by order:

* ``succeeded``: the usage is costed at the batch price (the catalogue's
  ``batch_discount``) on a call record with ``batch`` set, written in the transaction that
  stores the answer (sealed) and re-queues the job; the budget reservation is settled at
  that cost right after.
* ``errored`` with a transient error (``api_error``, ``overloaded_error``, ...) and
  ``expired``: back to ``pending`` for the next batch, at most ``batch_max_resubmits``
  times; then ``failed``.
* ``errored`` with any other error (``invalid_request_error``: retrying cannot help) and
  ``canceled`` (someone cancelled the batch): ``failed`` at once.

A failed request gets a call record with ``status`` error and its error type, releases its
reservation (errored and expired requests are not billed), and re-queues its job, which
then fails with :class:`~core.flows.batched.BatchRequestFailed` naming the cause. Requests
the results file does not mention are treated as expired.

Every transition is a compare-and-set from ``submitted`` in this batch, under row locks
(PostgreSQL) or the write lock (SQLite): applying a file twice, or from two workers, changes
nothing the second time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, update

from core.db.models import BatchRequest, Job, MessageBatch
from core.db.models import BatchRequestStatus as RS
from core.db.models import MessageBatchStatus as BS
from core.gateway import accounting
from core.gateway.accounting import picodollars
from core.gateway.message_batches import record_from, record_template, requeue_jobs
from core.gateway.message_batches import reservation_from as _reservation
from core.gateway.records import REQUESTS, UPSTREAM_CALLS, AttemptRecord, CallRecord, insert_for
from core.gateway.upstream import UpstreamError
from core.logging import get_logger

if TYPE_CHECKING:
    from core.gateway.message_batches import MessageBatches, TickReport

log = get_logger("switchyard.batches")

CHUNK = 200  # results applied per transaction
POLLS_PER_TICK = 20
TRANSIENT_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})
ERROR_STATUS = {"invalid_request_error": 400, "expired": 408, "canceled": 499}


@dataclass
class _After:
    """What to do once a chunk's transaction committed."""

    settle: list[tuple[Any, int]] = field(default_factory=list)  # (reservation, cost)
    records: list[tuple[CallRecord, dict[str, Any], bytes | None]] = field(default_factory=list)


async def poll_due(batches: MessageBatches, report: TickReport) -> None:
    """Poll the in-progress batches whose turn it is; apply the results of ended ones."""
    now = batches.clock()
    async with batches.sessions() as session:
        due = list(
            await session.scalars(
                select(MessageBatch)
                .where(
                    MessageBatch.status == BS.IN_PROGRESS.value, MessageBatch.next_poll_at <= now
                )
                .order_by(MessageBatch.next_poll_at)
                .limit(POLLS_PER_TICK)
            )
        )
    for batch in due:
        if not await _take_turn(batches, batch):
            continue  # another worker polls it this round
        report.polled += 1
        try:
            await poll(batches, batch, report)
        except UpstreamError as exc:
            log.warning("polling a message batch failed", batch=batch.id, error=str(exc))


async def _take_turn(batches: MessageBatches, batch: MessageBatch) -> bool:
    later = batches.clock() + timedelta(seconds=batches.settings.batch_poll_seconds)
    async with batches.sessions.begin() as session:
        taken = await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch.id, MessageBatch.next_poll_at == batch.next_poll_at)
            .values(next_poll_at=later)
            .returning(MessageBatch.id)
        )
        return taken.scalar() is not None


async def poll(batches: MessageBatches, batch: MessageBatch, report: TickReport) -> None:
    assert batch.anthropic_id is not None  # in progress means acknowledged
    upstream = batches.gateway.upstream
    state = orjson.loads((await upstream.get_batch(batch.anthropic_id)).body)
    async with batches.sessions.begin() as session:
        await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch.id)
            .values(counts=state.get("request_counts") or {})
        )
    if state.get("processing_status") != "ended":
        return
    chunk: list[dict[str, Any]] = []
    async for line in upstream.batch_results(batch.anthropic_id):
        chunk.append(orjson.loads(line))
        if len(chunk) >= CHUNK:
            await apply(batches, batch, chunk, report)
            chunk = []
    await apply(batches, batch, chunk, report)
    await _finish(batches, batch, report)
    log.info("message batch resolved", batch=batch.id, anthropic_id=batch.anthropic_id)


async def _finish(batches: MessageBatches, batch: MessageBatch, report: TickReport) -> None:
    """Requests the file did not mention count as expired; then the batch is resolved."""
    async with batches.sessions() as session:
        missing = list(
            await session.scalars(
                select(BatchRequest.id).where(
                    BatchRequest.batch_id == batch.id,
                    BatchRequest.status == RS.SUBMITTED.value,
                )
            )
        )
    if missing:
        log.warning("results missing from a batch", batch=batch.id, requests=len(missing))
        lines = [{"custom_id": rid, "result": {"type": "expired"}} for rid in missing]
        await apply(batches, batch, lines, report)
    async with batches.sessions.begin() as session:
        await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch.id)
            .values(status=BS.RESOLVED.value, ended_at=batches.clock(), resolved_at=batches.clock())
        )


async def apply(
    batches: MessageBatches,
    batch: MessageBatch,
    lines: list[dict[str, Any]],
    report: TickReport,
) -> None:
    """Apply result lines in one transaction, then settle budgets and hand records on."""
    results = {str(line.get("custom_id")): line.get("result") or {} for line in lines}
    if not results:
        return
    after = _After()
    async with batches.sessions.begin() as session:
        rows = list(
            await session.scalars(
                select(BatchRequest)
                .where(
                    BatchRequest.id.in_(list(results)),
                    BatchRequest.batch_id == batch.id,
                    BatchRequest.status == RS.SUBMITTED.value,
                )
                .with_for_update()
            )
        )
        resolved_jobs: list[int] = []
        for row in rows:
            if _resolve(batches, batch, row, results[row.id], after, report):
                resolved_jobs.append(row.job_id)
        connection = await session.connection()
        records = [record for record, _, _ in after.records]
        if records:
            await insert_for(REQUESTS, connection.dialect).execute(
                connection, [record.request_row() for record in records]
            )
            attempts = [row for record in records for row in record.attempt_rows()]
            if attempts:
                await insert_for(UPSTREAM_CALLS, connection.dialect).execute(connection, attempts)
        if resolved_jobs:
            requeued = await session.execute(
                requeue_jobs(Job.id.in_(resolved_jobs), batches.clock())
            )
            report.requeued += len(requeued.all())
    gateway = batches.gateway
    for reservation, cost in after.settle:
        await gateway.governance.settle(_reservation(reservation), cost)
    for record, request, answer in after.records:
        gateway.telemetry.observe(record)
        gateway.audit(record, request, answer)


def _resolve(
    batches: MessageBatches,
    batch: MessageBatch,
    row: BatchRequest,
    result: Mapping[str, Any],
    after: _After,
    report: TickReport,
) -> bool:
    """Move one request on; True when it resolved (its job runs again)."""
    kind = str(result.get("type"))
    now = batches.clock()
    if kind == "succeeded" and isinstance(result.get("message"), Mapping):
        _succeeded(batches, batch, row, result["message"], after)
        report.resolved += 1
        return True
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or {}
        error_type = str(error.get("type") or "api_error")
        message = str(error.get("message") or "")
        retry = error_type in TRANSIENT_ERRORS
    elif kind == "expired":
        error_type, message, retry = "expired", "not processed within 24 hours", True
    else:  # canceled, or a result type this code does not know
        error_type, message, retry = kind, f"the batch request ended {kind}", False
    if retry and row.submissions <= batches.settings.batch_max_resubmits:
        row.status, row.batch_id = RS.PENDING.value, None
        row.error_type, row.error_message = error_type, message[:2000]
        report.resubmitted += 1
        return False
    row.status, row.resolved_at = RS.FAILED.value, now
    row.error_type = error_type
    row.error_message = f"{kind} ({error_type}) after {row.submissions} submission(s): {message}"[
        :2000
    ]
    record = record_from(row.call)
    record.status, record.error_type = "error", error_type
    fallback = 500 if error_type in TRANSIENT_ERRORS else 400
    record.http_status = ERROR_STATUS.get(error_type, fallback)
    record.total_ms = (now - record.created_at).total_seconds() * 1000
    row.gateway_request_id = record.id
    after.records.append((record, {}, None))
    if row.reservation:
        after.settle.append((row.reservation, 0))
        row.reservation = None
    report.resolved += 1
    return True


def _succeeded(
    batches: MessageBatches,
    batch: MessageBatch,
    row: BatchRequest,
    message: Mapping[str, Any],
    after: _After,
) -> None:
    gateway = batches.gateway
    now = batches.clock()
    record = record_from(row.call)
    record.batch = True
    model = gateway.catalog.get(record.model)
    usage = accounting.Usage.from_api(message.get("usage"))
    at = record.created_at
    cost = accounting.cost(
        model, usage, at=at, batch=True, batch_discount=gateway.catalog.batch_discount
    )
    spent = picodollars(cost.total)
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cache_read_tokens = usage.cache_read_input_tokens
    record.cache_write_5m_tokens = usage.cache_write_5m
    record.cache_write_1h_tokens = usage.cache_write_1h
    record.cost_picodollars = spent
    record.list_cost_picodollars = picodollars(accounting.naive_cost(usage, model, at=at))
    record.naive_cost_picodollars = picodollars(
        accounting.naive_cost(usage, gateway.naive_model, at=at)
    )
    body = orjson.dumps(message)
    record.stop_reason = message.get("stop_reason")
    record.response_hash = hashlib.sha256(body).hexdigest()
    if row.submitted_at is not None:
        record.queue_ms = (row.submitted_at - record.created_at).total_seconds() * 1000
    record.total_ms = (now - record.created_at).total_seconds() * 1000
    record.attempts.append(
        AttemptRecord(
            attempt=row.submissions,
            model=record.model,
            http_status=200,
            latency_ms=record.total_ms,
            upstream_request_id=batch.anthropic_id,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
            cost_picodollars=spent,
        )
    )
    row.status, row.resolved_at = RS.SUCCEEDED.value, now
    row.sealed_answer = batches.seal("answer", row, body)
    row.cost_picodollars = spent
    row.gateway_request_id = record.id
    row.call = record_template(record)
    after.records.append((record, batches.request_of(row)["params"], body))
    if row.reservation:
        after.settle.append((row.reservation, spent))
        row.reservation = None


__all__ = ["apply", "poll", "poll_due"]
