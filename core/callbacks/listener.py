"""The finish listener that turns a finished job into deliveries (outbox)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.callbacks.store import (
    DELIVER_KIND,
    EVENT_FOR_STATUS,
    DeliveryStatus,
    deliver_job,
)
from core.db.models import Delivery, Job, JobStatus, Subscription
from core.db.types import utcnow
from core.queue import FinishListener, enqueue


def job_snapshot(job: Job) -> dict[str, Any]:
    """The job as subscribers see it in a callback body."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "flow": job.flow,
        "connection_id": job.connection_id,
        "event_id": job.event_id,
        "attempts": job.attempts,
        "result": job.result,
        "last_error": job.last_error,
        "trace_id": job.trace_id,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


async def _bury(session: AsyncSession, job: Job) -> None:
    """A delivery job died outside its handler (e.g. its worker vanished on the last try)."""
    delivery_id = job.payload.get("delivery_id")
    if not isinstance(delivery_id, int):
        return
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.DEAD.value, last_error=job.last_error)
    )


def make_finish_listener(silent_kinds: Iterable[str] = ()) -> FinishListener:
    """A finish listener creating deliveries; jobs of ``silent_kinds`` never notify.

    Pass the names of job kinds registered with ``notify=False``: the queue's lease
    recovery notifies listeners about every job it buries, whatever its kind.
    """
    silent = frozenset(silent_kinds)

    async def listener(session: AsyncSession, job: Job) -> None:
        if job.kind == DELIVER_KIND:
            if job.status == JobStatus.DEAD:
                await _bury(session, job)
            return
        if job.kind in silent or job.tenant_id is None:
            return
        event_type = EVENT_FOR_STATUS.get(JobStatus(job.status))
        if event_type is None:
            return
        await notify(
            session,
            tenant_id=job.tenant_id,
            event_type=event_type.value,
            data={"job": job_snapshot(job)},
            job_id=job.id,
            trace_id=job.trace_id,
        )

    return listener


on_job_finished: FinishListener = make_finish_listener()


async def notify(
    session: AsyncSession,
    *,
    tenant_id: str,
    event_type: str,
    data: dict[str, Any],
    job_id: int | None = None,
    trace_id: str | None = None,
) -> int:
    """One delivery (and its sender job) per active subscription of ``tenant_id`` to
    ``event_type``, in the caller's transaction; returns how many. The body is
    ``{"id", "type", "created_at", "delivered_for", **data}``."""
    rows = await session.scalars(
        select(Subscription)
        .where(Subscription.tenant_id == tenant_id, Subscription.active.is_(True))
        .order_by(Subscription.created_at, Subscription.id)
    )
    targets = [sub for sub in rows if event_type in sub.events]
    if not targets:
        return 0
    now = utcnow()
    deliveries = [
        Delivery(
            tenant_id=tenant_id,
            subscription_id=sub.id,
            job_id=job_id,
            event_type=event_type,
            payload={},
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            created_at=now,
        )
        for sub in targets
    ]
    session.add_all(deliveries)
    await session.flush()  # assigns ids, which the bodies carry
    for delivery in deliveries:
        delivery.payload = {
            "id": delivery.id,
            "type": event_type,
            "created_at": now.isoformat(),
            "delivered_for": {
                "tenant_id": delivery.tenant_id,
                "subscription_id": delivery.subscription_id,
            },
            **data,
        }
    await enqueue(session, [deliver_job(d, trace_id) for d in deliveries])
    return len(deliveries)
