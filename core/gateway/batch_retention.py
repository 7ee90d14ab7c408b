"""Deleting resolved Message Batches requests, and then their batches, after retention.

A resolved request holds its sealed prompt and answer until its job has used them; a job
resumes seconds after its request resolves, so after ``batch_retention_days`` nothing needs
them and they are deleted (a job that somehow resumed later would ask again). A batch row
goes once no request refers to it. Run by every worker's housekeeping: plain deletes by
age, safe from any number of processes at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import BatchRequest, BatchRequestStatus, MessageBatch, MessageBatchStatus

_DONE = (
    BatchRequestStatus.SUCCEEDED.value,
    BatchRequestStatus.FAILED.value,
    BatchRequestStatus.SUPERSEDED.value,
)
_FINISHED = (MessageBatchStatus.RESOLVED.value, MessageBatchStatus.ABANDONED.value)


async def purge_resolved(
    sessions: async_sessionmaker[AsyncSession], *, retention: timedelta, now: datetime
) -> tuple[int, int]:
    """Delete requests resolved before ``now - retention``, then batches left empty;
    returns how many of each."""
    cutoff = now - retention
    async with sessions.begin() as session:
        requests = await session.execute(
            delete(BatchRequest).where(
                BatchRequest.status.in_(_DONE),
                func.coalesce(BatchRequest.resolved_at, BatchRequest.created_at) < cutoff,
            )
        )
        referenced = exists(select(BatchRequest.id).where(BatchRequest.batch_id == MessageBatch.id))
        batches = await session.execute(
            delete(MessageBatch).where(
                MessageBatch.status.in_(_FINISHED),
                func.coalesce(MessageBatch.resolved_at, MessageBatch.created_at) < cutoff,
                ~referenced,
            )
        )
    return requests.rowcount or 0, batches.rowcount or 0  # type: ignore[attr-defined]
