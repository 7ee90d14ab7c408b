"""Jobs: status of queued work, replay from dead, cancel.

Role policy:

* read (``GET /v1/jobs``, ``GET /v1/jobs/{id}``): any role — admin, service, reviewer;
* replay (``POST /v1/jobs/{id}/replay``): admin or service (a service re-runs its own
  dead work);
* cancel (``POST /v1/jobs/{id}/cancel``): admin only.

A tenant sees only its own jobs; another tenant's job id answers 404, never 403. Replay
and cancel are written to the audit log in the same transaction, and wake the in-process
worker once that transaction has committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit, queue
from core.auth import Principal
from core.db.models import Job, JobStatus, Role
from core.web.deps import ANY_ROLE, SessionDep, require, wake_worker
from core.web.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]
Replayer = Annotated[Principal, Depends(require(Role.ADMIN, Role.SERVICE))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]

DEFAULT_PAGE = 50
MAX_PAGE = 500
_CURSOR_KIND = "job"


class JobOut(BaseModel):
    id: int
    kind: str
    status: JobStatus
    flow: str | None
    connection_id: str | None
    event_id: int | None
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    result: dict[str, Any] | None
    trace_id: str

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            status=JobStatus(job.status),
            flow=job.flow,
            connection_id=job.connection_id,
            event_id=job.event_id,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            priority=job.priority,
            run_at=job.run_at,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            last_error=job.last_error,
            result=job.result,
            trace_id=job.trace_id,
        )


class JobPage(BaseModel):
    data: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


@router.get("", summary="List jobs, newest first")
async def list_jobs(
    session: SessionDep,
    principal: Reader,
    status: JobStatus | None = None,
    flow: str | None = None,
    connection_id: str | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> JobPage:
    statement = select(Job).where(Job.tenant_id == principal.tenant_id)
    if status is not None:
        statement = statement.where(Job.status == status.value)
    if flow is not None:
        statement = statement.where(Job.flow == flow)
    if connection_id is not None:
        statement = statement.where(Job.connection_id == connection_id)
    if kind is not None:
        statement = statement.where(Job.kind == kind)
    if cursor is not None:
        # Keyset, not offset: stable while new jobs arrive, and cheap on any page.
        statement = statement.where(Job.id < decode_cursor(_CURSOR_KIND, cursor))
    rows = (await session.scalars(statement.order_by(Job.id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    next_cursor = encode_cursor(_CURSOR_KIND, page[-1].id) if len(rows) > limit else None
    return JobPage(data=[JobOut.of(job) for job in page], next_cursor=next_cursor)


@router.get("/{job_id}", summary="One job")
async def get_job(job_id: JobId, session: SessionDep, principal: Reader) -> JobOut:
    return JobOut.of(await queue.get_job(session, job_id, principal.tenant_id))


async def _locked(session: AsyncSession, job_id: int, tenant_id: str) -> Job:
    """The job, row-locked on PostgreSQL so a worker finishing it cannot interleave with
    our status change (SQLite's BEGIN IMMEDIATE already serializes writers)."""
    await session.get(Job, job_id, with_for_update=True)
    return await queue.get_job(session, job_id, tenant_id)


@router.post("/{job_id}/replay", summary="Run a dead or cancelled job again")
async def replay_job(
    job_id: JobId,
    session: SessionDep,
    principal: Replayer,
    request: Request,
    background: BackgroundTasks,
) -> JobOut:
    previous = (await _locked(session, job_id, principal.tenant_id)).status
    job = await queue.replay(session, job_id, principal.tenant_id)
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="job.replay",
        object_type="job",
        object_id=str(job.id),
        previous_status=previous,
    )
    background.add_task(wake_worker, request)  # runs after the commit and the response
    return JobOut.of(job)


@router.post("/{job_id}/cancel", summary="Cancel a job that has not finished")
async def cancel_job(
    job_id: JobId,
    session: SessionDep,
    principal: Admin,
    request: Request,
    background: BackgroundTasks,
) -> JobOut:
    previous = (await _locked(session, job_id, principal.tenant_id)).status
    job = await queue.cancel(session, job_id, principal.tenant_id)
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="job.cancel",
        object_type="job",
        object_id=str(job.id),
        previous_status=previous,
    )
    background.add_task(wake_worker, request)
    return JobOut.of(job)
