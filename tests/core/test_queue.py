"""The durable queue on SQLite and PostgreSQL: outbox enqueue, claiming, fencing, retries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.registry import ConnectorRegistry
from core.db.engine import make_engine, make_sessionmaker
from core.db.models import Job, JobStatus
from core.db.types import utcnow
from core.errors import Conflict, ConnectorTerminalError, ConnectorTransientError, NotFound
from core.flows.catalog import FlowCatalog
from core.queue import JobQueue, NewJob, cancel, enqueue, replay
from core.retry import RetryPolicy
from core.services import Services, build_services
from core.settings import Settings

FAST = RetryPolicy(max_attempts=5, initial=0.001, maximum=0.001)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    # No connectors or flows: the queue must not depend on either.
    built = build_services(settings, registry=ConnectorRegistry([]), flows=FlowCatalog())
    yield built
    await built.aclose()


@pytest.fixture
def queue(services: Services) -> JobQueue:
    return JobQueue(services.sessions, worker_id="w1", lease_seconds=30)


async def add(services: Services, *jobs: NewJob) -> list[int]:
    async with services.sessions.begin() as session:
        return await enqueue(session, list(jobs))


async def load(services: Services, job_id: int) -> Job:
    async with services.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def test_enqueue_commits_or_rolls_back_with_the_callers_transaction(
    services: Services,
) -> None:
    class Abort(Exception):
        pass

    async def enqueue_then_abort() -> None:
        async with services.sessions.begin() as session:
            await enqueue(session, [NewJob(kind="k"), NewJob(kind="k")])
            raise Abort

    with pytest.raises(Abort):
        await enqueue_then_abort()
    async with services.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Job))).scalar_one() == 0
    (job_id,) = await add(services, NewJob(kind="k", payload={"a": 1}))
    job = await load(services, job_id)
    assert (job.status, job.payload, job.attempts) == (JobStatus.QUEUED, {"a": 1}, 0)
    assert len(job.trace_id) == 32


async def test_claim_order_is_priority_then_id(services: Services, queue: JobQueue) -> None:
    ids = await add(services, *(NewJob(kind="k", priority=p) for p in (5, 0, 5, -1, 0)))
    order = []
    while claimed := await queue.claim(["k"], 1):
        order.append(claimed[0].id)
    assert order == [ids[3], ids[1], ids[4], ids[0], ids[2]]


async def test_claim_skips_future_jobs_and_unknown_kinds(
    services: Services, queue: JobQueue
) -> None:
    later, now, other = await add(
        services,
        NewJob(kind="k", run_at=utcnow() + timedelta(hours=1)),
        NewJob(kind="k", run_at=utcnow() - timedelta(seconds=1)),
        NewJob(kind="other"),
    )
    claimed = await queue.claim(["k"], 10)
    assert [job.id for job in claimed] == [now]
    job = await load(services, now)
    assert (job.status, job.attempts, job.leased_by) == (JobStatus.RUNNING, 1, "w1")
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > utcnow()
    assert (await load(services, later)).status == JobStatus.QUEUED
    assert (await load(services, other)).status == JobStatus.QUEUED


async def test_a_stale_lease_token_can_change_nothing(services: Services) -> None:
    (job_id,) = await add(services, NewJob(kind="k"))
    stalled = JobQueue(services.sessions, worker_id="stalled", lease_seconds=0.05)
    (old,) = await stalled.claim(["k"], 1)
    await asyncio.sleep(0.1)
    assert await stalled.recover_expired() == 1
    fresh = JobQueue(services.sessions, worker_id="fresh", lease_seconds=30)
    (new,) = await fresh.claim(["k"], 1)
    assert new.id == old.id
    assert new.lease_token != old.lease_token
    assert new.attempts == 2

    assert await stalled.renew([old]) == set()
    assert await stalled.complete(old, {"from": "stalled"}) is False
    assert await stalled.fail(old, ConnectorTerminalError("x"), FAST) is None
    assert await stalled.release(old) is False
    job = await load(services, job_id)
    assert (job.status, job.leased_by, job.result) == (JobStatus.RUNNING, "fresh", None)

    assert await fresh.renew([new]) == {job_id}
    assert await fresh.complete(new, {"from": "fresh"}) is True
    job = await load(services, job_id)
    assert (job.status, job.result) == (JobStatus.DONE, {"from": "fresh"})
    assert job.lease_token is None
    assert job.finished_at is not None


async def test_transient_failure_requeues_later_and_keeps_the_attempt(
    services: Services, queue: JobQueue
) -> None:
    (job_id,) = await add(services, NewJob(kind="k"))
    (job,) = await queue.claim(["k"], 1)
    before = utcnow()
    status = await queue.fail(job, ConnectorTransientError("busy", retry_after=60), FAST)
    assert status is JobStatus.QUEUED
    row = await load(services, job_id)
    assert row.status == JobStatus.QUEUED
    assert row.attempts == 1
    assert row.run_at >= before + timedelta(seconds=59)  # retry_after is a floor on backoff
    assert row.last_error is not None
    assert "ConnectorTransientError: busy" in row.last_error
    assert row.lease_token is None
    assert await queue.claim(["k"], 1) == []


async def test_terminal_error_goes_to_dead_at_once(services: Services, queue: JobQueue) -> None:
    (job_id,) = await add(services, NewJob(kind="k"))
    (job,) = await queue.claim(["k"], 1)
    assert await queue.fail(job, ConnectorTerminalError("400 bad field"), FAST) is JobStatus.DEAD
    row = await load(services, job_id)
    assert (row.status, row.attempts) == (JobStatus.DEAD, 1)
    assert row.last_error is not None
    assert "terminal error" in row.last_error
    assert row.finished_at is not None


async def test_exhausted_attempts_go_to_dead(services: Services, queue: JobQueue) -> None:
    # The job's own limit (2) is below the policy's (5): the smaller one wins.
    (job_id,) = await add(services, NewJob(kind="k", max_attempts=2))
    statuses = []
    for _ in range(2):
        await asyncio.sleep(0.01)  # let the tiny backoff pass
        (job,) = await queue.claim(["k"], 1)
        statuses.append(await queue.fail(job, RuntimeError("bug"), FAST))
    assert statuses == [JobStatus.QUEUED, JobStatus.DEAD]
    row = await load(services, job_id)
    assert row.attempts == 2
    assert row.last_error is not None
    assert "gave up after 2 attempts" in row.last_error


async def test_replay_requeues_dead_jobs_only(services: Services, queue: JobQueue) -> None:
    dead_id, done_id, queued_id = await add(
        services, NewJob(kind="k", tenant_id=None), NewJob(kind="d"), NewJob(kind="q")
    )
    (job,) = await queue.claim(["k"], 1)
    await queue.fail(job, ConnectorTerminalError("no"), FAST)
    (done,) = await queue.claim(["d"], 1)
    await queue.complete(done)

    async with services.sessions.begin() as session:
        replayed = await replay(session, dead_id, None)
    assert (replayed.status, replayed.attempts, replayed.finished_at) == ("queued", 0, None)
    (again,) = await queue.claim(["k"], 1)
    assert again.id == dead_id
    assert again.attempts == 1

    for job_id in (done_id, queued_id):
        with pytest.raises(Conflict):
            async with services.sessions.begin() as session:
                await replay(session, job_id, None)
    with pytest.raises(NotFound):
        async with services.sessions.begin() as session:
            await replay(session, 10**9, None)


async def test_replay_refuses_while_a_live_job_has_the_same_dedupe_key(
    services: Services, queue: JobQueue
) -> None:
    (dead_id,) = await add(services, NewJob(kind="poll", dedupe_key="poll:c1"))
    (job,) = await queue.claim(["poll"], 1)
    await queue.fail(job, ConnectorTerminalError("no"), FAST)
    (live_id,) = await add(services, NewJob(kind="poll", dedupe_key="poll:c1"))

    with pytest.raises(Conflict, match=f"job {live_id} already does this work"):
        async with services.sessions.begin() as session:
            await replay(session, dead_id, None)

    (live,) = await queue.claim(["poll"], 1)
    await queue.complete(live)
    async with services.sessions.begin() as session:
        replayed = await replay(session, dead_id, None)
    assert (replayed.status, replayed.last_error) == ("queued", None)


async def test_cancel_stops_queued_and_running_jobs(services: Services, queue: JobQueue) -> None:
    queued_id, running_id = await add(services, NewJob(kind="a"), NewJob(kind="b"))
    (running,) = await queue.claim(["b"], 1)
    async with services.sessions.begin() as session:
        await cancel(session, queued_id, None)
        await cancel(session, running_id, None)
    assert await queue.claim(["a", "b"], 10) == []
    assert await queue.complete(running, {"late": True}) is False  # the result is discarded
    row = await load(services, running_id)
    assert (row.status, row.result) == (JobStatus.CANCELLED, None)
    with pytest.raises(Conflict):
        async with services.sessions.begin() as session:
            await cancel(session, running_id, None)


async def test_recover_expired_requeues_or_buries(services: Services) -> None:
    finished: list[tuple[int, str]] = []

    async def listener(session: AsyncSession, job: Job) -> None:
        finished.append((job.id, job.status))

    live = JobQueue(services.sessions, worker_id="live", lease_seconds=30)
    gone = JobQueue(services.sessions, worker_id="gone", lease_seconds=0.05, listeners=[listener])
    retry_id, last_id, live_id = await add(
        services, NewJob(kind="r"), NewJob(kind="l", max_attempts=1), NewJob(kind="live")
    )
    await gone.claim(["r", "l"], 10)
    await live.claim(["live"], 1)
    await asyncio.sleep(0.1)
    assert await gone.recover_expired() == 2

    retry, last, alive = [await load(services, i) for i in (retry_id, last_id, live_id)]
    assert (retry.status, retry.attempts, retry.leased_by) == (JobStatus.QUEUED, 1, None)
    assert retry.last_error is not None
    assert retry.last_error.startswith("lease expired")
    assert (last.status, last.attempts) == (JobStatus.DEAD, 1)
    assert last.finished_at is not None
    assert alive.status == JobStatus.RUNNING  # a live lease is never taken
    assert finished == [(last_id, "dead")]  # subscribers hear about the dead one only


async def test_finish_listeners_run_when_asked(services: Services) -> None:
    seen: list[int] = []

    async def listener(session: AsyncSession, job: Job) -> None:
        seen.append(job.id)

    queue = JobQueue(services.sessions, worker_id="w", lease_seconds=30, listeners=[listener])
    _, loud_id = await add(services, NewJob(kind="q"), NewJob(kind="l"))
    (quiet,) = await queue.claim(["q"], 1)
    (loud,) = await queue.claim(["l"], 1)
    await queue.complete(quiet, notify=False)
    await queue.complete(loud, {"ok": True})
    assert seen == [loud_id]


async def test_release_gives_the_attempt_back(services: Services, queue: JobQueue) -> None:
    (job_id,) = await add(services, NewJob(kind="k"))
    (job,) = await queue.claim(["k"], 1)
    assert await queue.release(job) is True
    row = await load(services, job_id)
    assert (row.status, row.attempts, row.lease_token) == (JobStatus.QUEUED, 0, None)


async def test_one_live_job_per_dedupe_key(services: Services, queue: JobQueue) -> None:
    (first,) = await add(services, NewJob(kind="k", dedupe_key="poll:c1"))
    assert await add(services, NewJob(kind="k", dedupe_key="poll:c1")) == []
    (job,) = await queue.claim(["k"], 1)
    assert await add(services, NewJob(kind="k", dedupe_key="poll:c1")) == []  # running is live
    other = await add(services, NewJob(kind="k", dedupe_key="poll:c2"), NewJob(kind="k"))
    assert len(other) == 2
    await queue.complete(job)
    (second,) = await add(services, NewJob(kind="k", dedupe_key="poll:c1"))
    assert second != first


async def test_concurrent_claimers_never_share_a_job(settings: Settings) -> None:
    """Four queues on four engines (separate connections) drain one queue at once."""
    engines = [make_engine(settings.database_url) for _ in range(4)]
    try:
        queues = [
            JobQueue(make_sessionmaker(engine), worker_id=f"w{n}", lease_seconds=30)
            for n, engine in enumerate(engines)
        ]
        async with make_sessionmaker(engines[0]).begin() as session:
            ids = await enqueue(session, [NewJob(kind="k") for _ in range(300)])

        async def drain(queue: JobQueue) -> list[int]:
            got: list[int] = []
            while claimed := await queue.claim(["k"], random.randint(1, 10)):
                got.extend(job.id for job in claimed)
            return got

        results = await asyncio.gather(*(drain(queue) for queue in queues))
    finally:
        for engine in engines:
            await engine.dispose()
    everything = [job_id for got in results for job_id in got]
    assert sorted(everything) == sorted(ids)  # each job handed out exactly once
