"""A reviewed job's second run: carry out the reviewer's decision, nothing else.

When a decision (:mod:`core.review_decisions`) sends a parked job back to the queue, the
flow engine calls :func:`carry_out` before anything else: the record is not fetched again
and Claude is not asked again. The job's story (its result) keeps the steps of the first
run and gains one ``decision`` step and, after an approval, the ``write``.

* ``approved`` (or ``failed``, when a replay retries a write that failed): the approved
  patch is written with the job's idempotency key and the version the reviewer saw, so a
  crash between the write and this bookkeeping makes the rerun a no-op at the platform,
  never a second write. A conflict (the record changed after the approval) is not
  overwritten: the item becomes ``conflict`` and the job ends; a terminal platform error
  marks the item ``failed`` and fails the job; a transient one retries the job.
* ``rejected`` or ``expired``: the job ends without writing.
* ``written`` or ``conflict``: already carried out (a rerun after a crash); the job ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from connectors.base import Patch, WriteStatus
from core.connections import get_connection
from core.db.models import Job, ReviewItem, ReviewStatus
from core.errors import TerminalError
from core.handlers import Outcome
from core.queue import ClaimedJob

if TYPE_CHECKING:
    from core.services import Services

_WRITE = (ReviewStatus.APPROVED.value, ReviewStatus.FAILED.value)


async def review_of(services: Services, job_id: int) -> ReviewItem | None:
    async with services.sessions() as session:
        item: ReviewItem | None = await session.scalar(
            select(ReviewItem).where(ReviewItem.job_id == job_id)
        )
        return item


async def _first_run(services: Services, job_id: int) -> dict[str, Any]:
    """The result the job parked with (a rerun's own decision and write steps dropped)."""
    async with services.sessions() as session:
        result = await session.scalar(select(Job.result).where(Job.id == job_id))
    earlier = dict(result or {})
    earlier["steps"] = [
        step for step in earlier.get("steps", []) if step.get("step") not in ("decision", "write")
    ]
    return earlier


async def _mark(services: Services, item_id: str, status: ReviewStatus) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item_id).values(status=status.value)
        )


async def carry_out(services: Services, job: ClaimedJob, item: ReviewItem) -> Outcome:
    result = await _first_run(services, job.id)
    result.setdefault("flow", job.flow)
    steps: list[dict[str, Any]] = result["steps"]
    steps.append(
        {
            "step": "decision",
            "review_item": item.id,
            "status": item.status,
            "decided_by": item.decided_by,
        }
        | ({"note": item.decision_note} if item.decision_note else {})
    )
    if item.status not in _WRITE:
        return Outcome(result)
    patch = item.approved_patch if item.approved_patch is not None else item.patch
    async with services.sessions() as session:
        connection = await get_connection(session, item.connection_id, item.tenant_id)
    target = await services.connectors.get(connection)
    try:
        written = await target.write(
            Patch(item.object, item.record_id, dict(patch), item.expected_version),
            job.idempotency_key,
        )
    except TerminalError as exc:
        await _mark(services, item.id, ReviewStatus.FAILED)
        exc.job_result = result  # type: ignore[attr-defined]
        raise
    if written.status is WriteStatus.CONFLICT:
        await _mark(services, item.id, ReviewStatus.CONFLICT)
        steps.append({"step": "write", "status": "conflict", "detail": written.detail or "changed"})
        return Outcome(result)
    await _mark(services, item.id, ReviewStatus.WRITTEN)
    steps.append(
        {
            "step": "write",
            "status": written.status.value,
            "record_id": written.record_id,
            "version": written.version,
        }
    )
    return Outcome(result)
