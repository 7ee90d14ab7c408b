"""Review items: proposed writes held for a person.

The flow engine creates one when a flow's review rule fires or its target is an ERP, and
parks the job (``awaiting_review``). One item per job (a unique key), so a job that runs
twice proposes once. Decisions (approve, reject, expiry) are :mod:`core.review_decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.dialect import insert_ignoring_conflicts
from core.db.models import ReviewItem, ReviewStatus
from core.db.types import new_id, utcnow


async def propose(
    session: AsyncSession,
    *,
    tenant_id: str,
    job_id: int,
    flow: str,
    connection_id: str,
    object_name: str,
    record_id: str | None,
    expected_version: str | None,
    before: Mapping[str, Any],
    patch: Mapping[str, Any],
    output: Mapping[str, Any],
    reasons: Sequence[str],
    trace_id: str,
    prompt_ref: str | None = None,
    triggered_by: str | None = None,
    expires_at: datetime | None = None,
) -> ReviewItem:
    """The job's review item, created now or found from an earlier run of the same job."""
    row = {
        "id": new_id("rev"),
        "tenant_id": tenant_id,
        "job_id": job_id,
        "flow": flow,
        "connection_id": connection_id,
        "object": object_name,
        "record_id": record_id,
        "expected_version": expected_version,
        "before": dict(before),
        "patch": dict(patch),
        "output": dict(output),
        "reasons": list(reasons),
        "status": ReviewStatus.PENDING.value,
        "trace_id": trace_id,
        "prompt_ref": prompt_ref,
        "triggered_by": triggered_by,
        "expires_at": expires_at,
        "created_at": utcnow(),
    }
    await session.execute(
        insert_ignoring_conflicts(session, ReviewItem.__table__, ["job_id"]),  # type: ignore[arg-type]
        [row],
    )
    item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job_id))
    if item is None:  # pragma: no cover - the row was just inserted or already there
        raise RuntimeError(f"review item for job {job_id} vanished")
    return item
