"""Message Batches: background requests answered at the batch price (50%), durably.

A flow that opts in (``batch: true``) does not call Claude in its job. The gateway prepares
the request exactly as for a real-time call (:meth:`Gateway.prepare_deferred`: data policy
and redaction, routing, output cap, cache breakpoints), reserves its worst case at the
batch price on the tenant's budgets, and :meth:`MessageBatches.enqueue` stores it — body and
placeholder map sealed with the key ring — as a ``pending`` :class:`BatchRequest`; the job
parks in ``awaiting_batch``. A periodic loop in every worker (:meth:`MessageBatches.tick`)
then moves requests along::

    pending ──claim──▶ submitting ──create acknowledged──▶ submitted ──results──▶ succeeded
       ▲                    │ (the API answered an error)          │            └▶ failed
       └────────────────────┴──── expired / transient error ◀──────┘   (job re-queued)
                                  (up to batch_max_resubmits)

* **Collect**: a batch goes out when ``batch_max_requests`` requests wait or the oldest
  waited ``batch_max_wait_seconds``.
* **Submit** without duplicates across processes: one transaction creates a
  ``message_batches`` row (``submitting``) and moves the chosen requests ``pending →
  submitting`` under ``FOR UPDATE SKIP LOCKED`` (SQLite: the write lock), so no request
  is in two batches. Only then does the create call go out (``custom_id`` = request id);
  its acknowledgement moves both to ``submitted``/``in_progress`` in one transaction.
* **Poll** (:mod:`core.gateway.batch_results`): an in-progress batch is polled at most
  every ``batch_poll_seconds`` (a compare-and-set on ``next_poll_at`` picks one poller);
  an ended batch's JSONL results are applied in chunks, each request by compare-and-set
  from ``submitted``, so a crash mid-file or two pollers never apply one twice.

Crash safety. Each step is one transaction, and every request is always ``pending``,
``submitting``, ``submitted`` or resolved:

* crash after the claim, before or during the create call: the batch row stays
  ``submitting``. After the longest a create call can take (the upstream timeout + a
  minute) :meth:`recover` looks for the batch among the API's recent batches (same size,
  created then, unknown to us) and adopts it; otherwise it abandons the row and its
  requests go back to ``pending``. A wrong adoption is harmless: results are matched by
  ``custom_id`` and requests missing from a batch's results go back to ``pending`` too —
  at worst a request is paid twice, never lost.
* crash while applying results: the batch is still ``in_progress``; the next poll reads
  the file again and skips what was applied.
* a resolution commits, in the same transaction, the call record (``batch`` = true, cost
  at the batch price), the sealed answer and the job's return to ``queued``. The budget
  reservation is taken in that transaction and settled right after; a crash in between
  leaves it to expire (as a real-time call's failed settle does), never charged twice.
* a job parked after its request already resolved (the job's worker was slow) is found by
  the tick's reconcile step and re-queued.

The resumed job reads the stored answer (:mod:`core.flows.batched`): no second call. Only
the repair turn of an answer that fails the flow's schema goes out in real time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import KeyRing
from core.db.models import (
    BatchRequest,
    Job,
    JobStatus,
    MessageBatch,
)
from core.db.models import BatchRequestStatus as RS
from core.db.types import new_id, utcnow
from core.gateway.budgets import Budgets, Hold, Reservation, worst_case_picodollars
from core.gateway.calls import CallOptions
from core.gateway.gateway import Gateway
from core.gateway.records import CallRecord
from core.gateway.redaction import Redactor
from core.logging import get_logger
from core.settings import GatewaySettings

log = get_logger("switchyard.batches")

# The API holds a batch up to 24 hours; the reservation must outlive it.
RESERVATION_TTL = timedelta(hours=25)
RECONCILE_WINDOW = timedelta(days=2)


@dataclass
class TickReport:
    submitted: int = 0  # requests sent in new batches
    polled: int = 0
    resolved: int = 0  # requests answered or failed for good
    resubmitted: int = 0
    recovered: int = 0  # stale ``submitting`` batches adopted or abandoned
    requeued: int = 0  # jobs sent back to run


def _aad(kind: str, tenant_id: str, request_id: str) -> bytes:
    return f"batch-{kind}:{tenant_id}:{request_id}".encode()


def record_template(record: CallRecord) -> dict[str, Any]:
    """A call record's fields as JSON (figures and hashes only, never content)."""
    row = record.request_row()
    row["created_at"] = record.created_at.isoformat()
    return row


def record_from(template: Mapping[str, Any]) -> CallRecord:
    names = {f.name for f in dataclasses.fields(CallRecord)} - {"attempts"}
    values = {key: value for key, value in template.items() if key in names}
    values["created_at"] = datetime.fromisoformat(str(template["created_at"]))
    return CallRecord(**values)


def _reservation_json(reservation: Reservation | None) -> dict[str, Any] | None:
    if reservation is None or not reservation.holds:
        return None
    return {
        "id": reservation.id,
        "tenant_id": reservation.tenant_id,
        "amount_picodollars": reservation.amount_picodollars,
        "holds": [[h.budget_id, h.period_start.isoformat()] for h in reservation.holds],
        "expires_at": reservation.expires_at.isoformat(),
    }


def reservation_from(data: Mapping[str, Any] | None) -> Reservation | None:
    if not data:
        return None
    return Reservation(
        id=str(data["id"]),
        tenant_id=str(data["tenant_id"]),
        amount_picodollars=int(data["amount_picodollars"]),
        holds=tuple(Hold(b, datetime.fromisoformat(p)) for b, p in data["holds"]),
        expires_at=datetime.fromisoformat(str(data["expires_at"])),
    )


class MessageBatches:
    """Storing, submitting and resolving batch requests (see the module docs)."""

    def __init__(
        self,
        gateway: Gateway,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        settings: GatewaySettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.keyring = keyring
        self.settings = settings
        self.clock = clock
        budgets = gateway.governance.budgets
        # Same budgets, reservations that outlive a batch (a sweep would free them early).
        self._budgets = (
            Budgets(budgets.sessions, reservation_ttl=RESERVATION_TTL) if budgets else None
        )

    @property
    def interval(self) -> float:
        """Seconds between the worker's ticks: often enough to poll and to submit."""
        return max(
            0.05, min(self.settings.batch_poll_seconds, self.settings.batch_max_wait_seconds)
        )

    # ------------------------------------------------------------------- sealing

    def seal(self, kind: str, row: BatchRequest, data: bytes) -> str:
        return self.keyring.encrypt(data, _aad(kind, row.tenant_id, row.id))

    def unseal(self, kind: str, row: BatchRequest, token: str) -> bytes:
        return self.keyring.decrypt(token, _aad(kind, row.tenant_id, row.id))

    def request_of(self, row: BatchRequest) -> dict[str, Any]:
        """``{"params": <prepared body>, "placeholders": {...}}`` of a stored request."""
        opened: dict[str, Any] = orjson.loads(self.unseal("request", row, row.sealed_request))
        return opened

    def answer_of(self, row: BatchRequest) -> dict[str, Any]:
        """The stored answer, restored (placeholders back to the original values)."""
        if row.sealed_answer is None:
            raise ValueError(f"batch request {row.id} has no answer")
        message: dict[str, Any] = orjson.loads(self.unseal("answer", row, row.sealed_answer))
        placeholders = self.request_of(row).get("placeholders") or {}
        if not placeholders:
            return message
        return Redactor.restoring(placeholders).restore_message(message)

    # ------------------------------------------------------------------- enqueue

    async def enqueue(
        self,
        *,
        job_id: int,
        body: Mapping[str, Any],
        options: CallOptions,
        question_sha256: str,
        supersedes: str | None = None,
    ) -> BatchRequest:
        """Prepare ``body`` as a real-time call would be, reserve its worst case at the
        batch price, and store it ``pending`` (replacing request ``supersedes``)."""
        prepared, redactor, record = await self.gateway.prepare_deferred(body, options)
        record.batch = True
        reservation = await self._reserve(prepared.model.id, prepared, options)
        row = BatchRequest(
            id=new_id("breq"),
            tenant_id=options.tenant_id,
            job_id=job_id,
            status=RS.PENDING.value,
            question_sha256=question_sha256,
            model=prepared.model.id,
            call=record_template(record),
            reservation=_reservation_json(reservation),
            submissions=0,
            cost_picodollars=0,
            created_at=self.clock(),
        )
        payload = {
            "params": prepared.body,
            "placeholders": redactor.placeholders() if redactor else {},
        }
        row.sealed_request = self.seal("request", row, orjson.dumps(payload))
        try:
            async with self.sessions.begin() as session:
                if supersedes is not None:  # never one in flight: its cost must be recorded
                    await session.execute(
                        update(BatchRequest)
                        .where(
                            BatchRequest.id == supersedes,
                            BatchRequest.status.in_(
                                [RS.PENDING.value, RS.SUCCEEDED.value, RS.FAILED.value]
                            ),
                        )
                        .values(status=RS.SUPERSEDED.value)
                    )
                session.add(row)
        except BaseException:
            await self.gateway.governance.settle(reservation, 0)
            raise
        return row

    async def _reserve(self, model: str, prepared: Any, options: CallOptions) -> Reservation | None:
        if self._budgets is None:
            return None
        catalog = self.gateway.catalog
        worst = worst_case_picodollars(catalog, model, prepared.input_estimate, prepared.max_tokens)
        at_batch_price = (Decimal(worst) * catalog.batch_discount).to_integral_value(
            rounding=ROUND_CEILING
        )
        return await self._budgets.reserve(
            options.tenant_id, options.feature, options.api_key_id, int(at_batch_price)
        )

    async def latest_for_job(self, job_id: int) -> tuple[BatchRequest, MessageBatch | None] | None:
        """The job's newest request that is not superseded, with its batch."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(BatchRequest)
                .where(BatchRequest.job_id == job_id, BatchRequest.status != RS.SUPERSEDED.value)
                .order_by(BatchRequest.created_at.desc(), BatchRequest.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            batch = await session.get(MessageBatch, row.batch_id) if row.batch_id else None
        return row, batch

    async def retire(self, request_id: str) -> None:
        """A failed request whose job is failing: a replay of the job asks afresh."""
        async with self.sessions.begin() as session:
            await session.execute(
                update(BatchRequest)
                .where(BatchRequest.id == request_id, BatchRequest.status == RS.FAILED.value)
                .values(status=RS.SUPERSEDED.value)
            )

    # ---------------------------------------------------------------------- tick

    async def tick(self) -> TickReport:
        """One round of the worker's loop: recover, submit what is due, poll, reconcile."""
        # The loop's two halves build on this module.
        from core.gateway.batch_results import poll_due
        from core.gateway.batch_submit import recover, submit_due

        report = TickReport()
        report.recovered = await recover(self)
        report.submitted = await submit_due(self)
        await poll_due(self, report)
        report.requeued += await self.reconcile()
        return report

    async def reconcile(self) -> int:
        """Re-queue parked jobs whose request resolved before they parked."""
        resolved = select(BatchRequest.job_id).where(
            BatchRequest.status.in_([RS.SUCCEEDED.value, RS.FAILED.value]),
            BatchRequest.resolved_at >= self.clock() - RECONCILE_WINDOW,
        )
        async with self.sessions.begin() as session:
            result = await session.execute(
                requeue_jobs(Job.id.in_(resolved.scalar_subquery()), self.clock())
            )
        return len(result.all())


def requeue_jobs(which: Any, now: datetime) -> Any:
    """The UPDATE sending parked jobs back to run; the parked run does not count as an
    attempt (it asked, it did not fail)."""
    return (
        update(Job)
        .where(which, Job.status == JobStatus.AWAITING_BATCH.value)
        .values(status=JobStatus.QUEUED.value, run_at=now, attempts=Job.attempts - 1)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
