"""Durable job queue on the database, with outbox semantics.

* ``enqueue`` runs in the caller's transaction: an event and its jobs commit together.
* ``claim`` leases runnable jobs (priority, then id) with ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; on SQLite the same UPDATE runs under the ``BEGIN IMMEDIATE`` write lock,
  which is the single-writer path.
* Every state change after a claim is fenced by the lease token: a worker whose lease
  expired (and whose job another worker has taken over) cannot complete or fail it.
* Expired leases go back to ``queued`` (or ``dead`` when out of attempts), so a worker
  killed with SIGKILL loses nothing.
* Listeners run inside the transaction that finishes a job (done, dead, awaiting review),
  so their follow-up rows (callback deliveries) commit with the status change.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.dialect import insert_ignoring_conflicts
from core.db.models import FINISHED, Job, JobStatus
from core.db.types import utcnow
from core.errors import Conflict, NotFound
from core.retry import RetryPolicy

MAX_ERROR_CHARS = 4000
JOBS = cast(Table, Job.__table__)

FinishListener = Callable[[AsyncSession, Job], Awaitable[None]]


def new_trace_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class NewJob:
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    tenant_id: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    connection_id: str | None = None
    flow: str | None = None
    event_id: int | None = None
    dedupe_key: str | None = None
    max_attempts: int = 5
    trace_id: str | None = None


@dataclass(frozen=True)
class ClaimedJob:
    """A leased job as a handler sees it. ``idempotency_key`` is stable across attempts."""

    id: int
    kind: str
    payload: dict[str, Any]
    tenant_id: str | None
    connection_id: str | None
    flow: str | None
    event_id: int | None
    attempts: int
    max_attempts: int
    trace_id: str
    lease_token: str
    run_at: datetime  # when it became due (enqueued, or its retry time)

    @property
    def idempotency_key(self) -> str:
        return f"job-{self.id}"


async def enqueue(session: AsyncSession, jobs: Sequence[NewJob]) -> list[int]:
    """Insert jobs in the caller's transaction; returns the new ids in the order given.

    A job whose ``dedupe_key`` matches a live (queued or running) job is skipped (and has
    no id in the result, so callers mixing dedupe keys must not rely on positions).
    """
    if not jobs:
        return []
    now = utcnow()
    rows = [
        {
            "kind": job.kind,
            "payload": job.payload,
            "tenant_id": job.tenant_id,
            "priority": job.priority,
            "run_at": job.run_at or now,
            "connection_id": job.connection_id,
            "flow": job.flow,
            "event_id": job.event_id,
            "dedupe_key": job.dedupe_key,
            "max_attempts": job.max_attempts,
            "trace_id": job.trace_id or new_trace_id(),
            "status": JobStatus.QUEUED.value,
            "attempts": 0,
            "created_at": now,
        }
        for job in jobs
    ]
    if any(job.dedupe_key for job in jobs):
        statement = insert_ignoring_conflicts(
            session,
            Job.__table__,  # type: ignore[arg-type]
            ["dedupe_key"],
            # The partial index's own predicate, as literal SQL: an IN (...) with bound
            # parameters cannot be used when several rows are inserted at once.
            where=text("status IN ('queued', 'running')"),
        )
        result = await session.execute(statement.returning(Job.id), rows)
        return [row[0] for row in result]
    # A Core insert on the table: the ORM's bulk path costs more per row on this hot path.
    statement = insert(JOBS).returning(JOBS.c.id, sort_by_parameter_order=True)
    return [row[0] for row in await session.execute(statement, rows)]


def _claimed(job: Job) -> ClaimedJob:
    return ClaimedJob(
        id=job.id,
        kind=job.kind,
        payload=job.payload,
        tenant_id=job.tenant_id,
        connection_id=job.connection_id,
        flow=job.flow,
        event_id=job.event_id,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        trace_id=job.trace_id,
        lease_token=job.lease_token or "",
        run_at=job.run_at,
    )


class JobQueue:
    """Claiming and state changes for one worker identity."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        worker_id: str,
        lease_seconds: float,
        listeners: Sequence[FinishListener] = (),
    ) -> None:
        self._sessions = sessions
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self._listeners = list(listeners)

    def add_listener(self, listener: FinishListener) -> None:
        self._listeners.append(listener)

    async def _notify(self, session: AsyncSession, jobs: Sequence[Job]) -> None:
        for job in jobs:
            for listener in self._listeners:
                await listener(session, job)

    async def claim(self, kinds: Sequence[str], limit: int) -> list[ClaimedJob]:
        if limit <= 0 or not kinds:
            return []
        async with self._sessions.begin() as session:
            jobs = await self._claim(session, kinds, limit)
        return sorted((_claimed(job) for job in jobs), key=lambda j: (j.id,))

    async def _claim(
        self, session: AsyncSession, kinds: Sequence[str], limit: int
    ) -> Sequence[Job]:
        # Begin first: on SQLite this waits for the write lock, and that wait must not be
        # taken out of the lease we are about to hand out.
        await session.connection()
        now = utcnow()
        token = secrets.token_hex(16)
        runnable = (
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED.value, Job.run_at <= now, Job.kind.in_(kinds))
            .order_by(Job.priority, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(Job)
            .where(Job.id.in_(runnable.scalar_subquery()))
            .values(
                status=JobStatus.RUNNING.value,
                attempts=Job.attempts + 1,
                lease_token=token,
                leased_by=self.worker_id,
                lease_expires_at=now + self.lease,
                started_at=now,
            )
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        return (await session.execute(statement)).scalars().all()

    async def renew(self, jobs: Sequence[ClaimedJob]) -> set[int]:
        """Extend leases still held; returns the ids whose lease was extended."""
        if not jobs:
            return set()
        held: set[int] = set()
        async with self._sessions.begin() as session:
            await session.connection()  # as in claim: the lock wait is not lease time
            expires = utcnow() + self.lease
            for token in {job.lease_token for job in jobs}:
                ids = [job.id for job in jobs if job.lease_token == token]
                result = await session.execute(
                    update(Job)
                    .where(
                        Job.id.in_(ids),
                        Job.lease_token == token,
                        Job.status == JobStatus.RUNNING.value,
                    )
                    .values(lease_expires_at=expires)
                    .returning(Job.id)
                )
                held.update(result.scalars())
        return held

    async def _fenced(self, job: ClaimedJob, values: dict[str, Any], *, notify: bool) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.lease_token == job.lease_token,
                    Job.status == JobStatus.RUNNING.value,
                )
                .values(lease_token=None, leased_by=None, lease_expires_at=None, **values)
                .returning(Job)
                .execution_options(synchronize_session=False)
            )
            rows = result.scalars().all()
            if notify:
                await self._notify(session, rows)
            return bool(rows)

    async def complete(
        self,
        job: ClaimedJob,
        result: dict[str, Any] | None = None,
        *,
        status: JobStatus = JobStatus.DONE,
        notify: bool = True,
    ) -> bool:
        """Finish a job (or park it awaiting review). False when the lease was lost."""
        finished_at = utcnow() if status in FINISHED else None
        values = {"status": status.value, "result": result, "finished_at": finished_at}
        return await self._fenced(job, values, notify=notify)

    async def fail(
        self, job: ClaimedJob, error: BaseException, policy: RetryPolicy, *, notify: bool = True
    ) -> JobStatus | None:
        """Schedule a retry with backoff, or move to ``dead``. None when the lease was lost."""
        attempt_limit = RetryPolicy(
            max_attempts=min(policy.max_attempts, job.max_attempts),
            initial=policy.initial,
            maximum=policy.maximum,
        )
        decision = attempt_limit.decide(job.attempts, error)
        message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
        # A handler may leave what it did before failing on the error (a flow's steps).
        partial = getattr(error, "job_result", None)
        extra: dict[str, Any] = {"result": partial} if isinstance(partial, dict) else {}
        if decision.retry:
            values: dict[str, Any] = {
                "status": JobStatus.QUEUED.value,
                "run_at": utcnow() + timedelta(seconds=decision.delay),
                "last_error": message,
                **extra,
            }
            return JobStatus.QUEUED if await self._fenced(job, values, notify=False) else None
        values = {
            "status": JobStatus.DEAD.value,
            "last_error": f"{message} ({decision.reason})",
            "finished_at": utcnow(),
            **extra,
        }
        return JobStatus.DEAD if await self._fenced(job, values, notify=notify) else None

    async def release(self, job: ClaimedJob) -> bool:
        """Give a job back unrun (graceful shutdown): the attempt does not count."""
        values = {"status": JobStatus.QUEUED.value, "attempts": Job.attempts - 1}
        return await self._fenced(job, values, notify=False)

    async def recover_expired(self) -> int:
        """Requeue jobs whose worker vanished; out-of-attempts ones go to ``dead``."""
        now = utcnow()
        expired = and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
        async with self._sessions.begin() as session:
            ids = (
                (
                    await session.execute(
                        select(Job.id).where(expired).with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return 0
            result = await session.execute(
                update(Job)
                .where(Job.id.in_(ids), expired)
                .values(
                    status=case(
                        (Job.attempts >= Job.max_attempts, JobStatus.DEAD.value),
                        else_=JobStatus.QUEUED.value,
                    ),
                    lease_token=None,
                    leased_by=None,
                    lease_expires_at=None,
                    last_error="lease expired: the worker stopped renewing (crashed or killed)",
                    finished_at=case((Job.attempts >= Job.max_attempts, now), else_=None),
                )
                .returning(Job)
                .execution_options(synchronize_session=False)
            )
            rows = result.scalars().all()
            await self._notify(session, [job for job in rows if job.status == JobStatus.DEAD])
            return len(rows)


async def get_job(session: AsyncSession, job_id: int, tenant_id: str | None) -> Job:
    job = await session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound(f"no job {job_id}")
    return job


async def replay(session: AsyncSession, job_id: int, tenant_id: str | None) -> Job:
    """Run a dead (or cancelled) job again from its first attempt."""
    job = await get_job(session, job_id, tenant_id)
    if job.status not in (JobStatus.DEAD, JobStatus.CANCELLED):
        raise Conflict(f"job {job_id} is {job.status}; only dead or cancelled jobs are replayed")
    if job.dedupe_key is not None:
        live = await session.scalar(
            select(Job.id).where(
                Job.dedupe_key == job.dedupe_key,
                Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
            )
        )
        if live is not None:
            raise Conflict(
                f"job {live} already does this work ({job.dedupe_key}); "
                f"job {job_id} is not replayed"
            )
    job.status = JobStatus.QUEUED.value
    job.attempts = 0
    job.run_at = utcnow()
    job.started_at = None
    job.finished_at = None
    job.last_error = None
    job.result = None
    await session.flush()
    return job


async def cancel(session: AsyncSession, job_id: int, tenant_id: str | None) -> Job:
    """Cancel a job that has not finished; a running handler's result is then discarded."""
    job = await get_job(session, job_id, tenant_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    job.status = JobStatus.CANCELLED.value
    job.lease_token = None
    job.finished_at = utcnow()
    await session.flush()
    return job


LIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.AWAITING_REVIEW, JobStatus.AWAITING_BATCH)


async def depth(session: AsyncSession) -> dict[str, int]:
    """Unfinished jobs per status (for metrics). Finished ones are counted as they finish
    (``switchyard_jobs_finished``); counting them here would scan an ever-growing table."""
    rows = await session.execute(
        select(Job.status, func.count())
        .where(Job.status.in_([status.value for status in LIVE]))
        .group_by(Job.status)
    )
    counts = {status.value: 0 for status in LIVE}
    counts.update({status: count for status, count in rows})
    return counts
