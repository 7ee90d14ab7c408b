"""The worker: bounded concurrency, retries, review parking, lease renewal, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.registry import ConnectorRegistry
from core.db.models import Job, JobStatus
from core.flows.catalog import FlowCatalog
from core.handlers import Handlers, JobContext, JobKind, Outcome
from core.queue import NewJob, cancel, enqueue
from core.retry import RetryPolicy
from core.services import Services, build_services
from core.worker import Worker
from tests.conftest import make_settings
from tests.core.durability_worker import KIND, create_tables, effect_kind

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=3, initial=0.01, maximum=0.01)

MakeServices = Callable[..., Awaitable[Services]]


@pytest.fixture
async def make_services(database_url: str) -> AsyncIterator[MakeServices]:
    built: list[Services] = []

    async def make(**overrides: Any) -> Services:
        settings = make_settings(database_url, **overrides)
        services = build_services(settings, registry=ConnectorRegistry([]), flows=FlowCatalog())
        built.append(services)
        return services

    yield make
    for services in built:
        await services.aclose()


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Event]:
    """Run ``worker`` in the background; stop it (and wait, bounded) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def add(services: Services, *jobs: NewJob) -> list[int]:
    async with services.sessions.begin() as session:
        return await enqueue(session, list(jobs))


async def load(services: Services, job_id: int) -> Job:
    async with services.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def wait_status(services: Services, job_id: int, status: JobStatus) -> Job:
    deadline = time.monotonic() + 20
    while (job := await load(services, job_id)).status != status:
        assert time.monotonic() < deadline, f"job {job_id} is {job.status}, not {status}"
        await asyncio.sleep(0.02)
    return job


def sample(services: Services, name: str, **labels: str) -> float:
    return services.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_jobs_run_with_bounded_concurrency_in_their_log_context(
    make_services: MakeServices,
) -> None:
    services = await make_services()
    active, peak, contexts = 0, 0, []

    async def handler(ctx: JobContext) -> None:
        nonlocal active, peak
        contexts.append(structlog.contextvars.get_contextvars())
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    ids = await add(services, *(NewJob(kind="work", tenant_id=None) for _ in range(9)))
    worker = Worker(services, Handlers([JobKind("work", handler)]), concurrency=3)
    async with running(worker):
        for job_id in ids:
            await wait_status(services, job_id, JobStatus.DONE)
    assert peak == 3
    first = await load(services, ids[0])
    assert {"trace_id": first.trace_id, "job_id": ids[0], "kind": "work"}.items() <= next(
        c for c in contexts if c["job_id"] == ids[0]
    ).items()
    assert sample(services, "switchyard_jobs_finished_total", kind="work", outcome="done") == 9
    assert sample(services, "switchyard_job_run_seconds_count", kind="work") == 9
    # With 3 slots for 9 jobs of 50 ms, the last ones waited at least two rounds.
    assert sample(services, "switchyard_job_queue_wait_seconds_count", kind="work") == 9
    assert sample(services, "switchyard_job_queue_wait_seconds_sum", kind="work") >= 0.1


async def test_handler_errors_retry_then_go_dead(make_services: MakeServices) -> None:
    services = await make_services()
    calls = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"broken on attempt {ctx.job.attempts}")

    (job_id,) = await add(services, NewJob(kind="boom"))
    async with running(Worker(services, Handlers([JobKind("boom", handler, retry=FAST)]))):
        job = await wait_status(services, job_id, JobStatus.DEAD)
    assert calls == job.attempts == 3
    assert job.last_error is not None
    assert "broken on attempt 3" in job.last_error
    assert sample(services, "switchyard_job_retries_total", kind="boom") == 2
    assert sample(services, "switchyard_dead_letters_total", kind="boom") == 1


async def test_awaiting_review_parks_the_job_and_tells_listeners(
    make_services: MakeServices,
) -> None:
    services = await make_services()
    heard: list[tuple[int, str]] = []

    async def listener(session: AsyncSession, job: Job) -> None:
        heard.append((job.id, job.status))

    async def handler(ctx: JobContext) -> Outcome:
        return Outcome({"review": "r1"}, status=JobStatus.AWAITING_REVIEW)

    (job_id,) = await add(services, NewJob(kind="erp.write"))
    worker = Worker(services, Handlers([JobKind("erp.write", handler)]), listeners=[listener])
    async with running(worker):
        job = await wait_status(services, job_id, JobStatus.AWAITING_REVIEW)
    assert (job.result, job.finished_at, job.lease_token) == ({"review": "r1"}, None, None)
    assert heard == [(job_id, "awaiting_review")]


async def test_a_status_a_job_cannot_end_in_is_a_terminal_failure(
    make_services: MakeServices,
) -> None:
    services = await make_services()

    async def handler(ctx: JobContext) -> Outcome:
        return Outcome(status=JobStatus.RUNNING)

    (job_id,) = await add(services, NewJob(kind="odd"))
    async with running(Worker(services, Handlers([JobKind("odd", handler, retry=FAST)]))):
        job = await wait_status(services, job_id, JobStatus.DEAD)
    assert job.attempts == 1
    assert job.last_error is not None
    assert "UnsupportedOutcome" in job.last_error


async def test_workers_claim_only_kinds_they_know(make_services: MakeServices) -> None:
    services = await make_services()

    async def handler(ctx: JobContext) -> None:
        return None

    unknown, known = await add(services, NewJob(kind="elsewhere"), NewJob(kind="here"))
    async with running(Worker(services, Handlers([JobKind("here", handler)]))):
        assert (await wait_status(services, known, JobStatus.DONE)).result == {}
    job = await load(services, unknown)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


async def test_renewal_keeps_a_job_longer_than_its_lease(make_services: MakeServices) -> None:
    """Two workers with 1 s leases, both recovering; a 2.5 s job still runs exactly once."""
    services = await make_services(lease_seconds=1.0)
    calls = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(2.5)

    (job_id,) = await add(services, NewJob(kind="slow"))
    kinds = Handlers([JobKind("slow", handler)])
    async with (
        running(Worker(services, kinds, worker_id="a")),
        running(Worker(services, kinds, worker_id="b")),
    ):
        job = await wait_status(services, job_id, JobStatus.DONE)
    assert calls == job.attempts == 1
    assert sample(services, "switchyard_leases_recovered_total") == 0


async def test_a_lost_lease_cancels_the_handler(make_services: MakeServices) -> None:
    services = await make_services(lease_seconds=1.0)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext) -> Outcome:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Outcome({"never": "stored"})

    (job_id,) = await add(services, NewJob(kind="long"))
    async with running(Worker(services, Handlers([JobKind("long", handler)]))):
        await asyncio.wait_for(started.wait(), 10)
        async with services.sessions.begin() as session:
            await cancel(session, job_id, None)
        await asyncio.wait_for(cancelled.wait(), 10)  # at the next renewal (≤ lease/3)
    job = await load(services, job_id)
    assert (job.status, job.result) == (JobStatus.CANCELLED, None)
    assert sample(services, "switchyard_jobs_finished_total", kind="long", outcome="lost") == 1


async def test_shutdown_finishes_quick_jobs_and_releases_the_rest(
    make_services: MakeServices,
) -> None:
    services = await make_services(shutdown_grace_seconds=0.5)
    started = 0

    async def handler(ctx: JobContext) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(ctx.job.payload["sleep"])

    quick, stuck = await add(
        services,
        NewJob(kind="nap", payload={"sleep": 0.1}),
        NewJob(kind="nap", payload={"sleep": 60}),
    )
    worker = Worker(services, Handlers([JobKind("nap", handler)]), concurrency=2)
    async with running(worker):
        while started < 2:
            await asyncio.sleep(0.01)
    # `running` returned: run() is over, within the grace period plus the release.
    assert (await load(services, quick)).status == JobStatus.DONE
    job = await load(services, stuck)
    assert (job.status, job.attempts, job.lease_token) == (JobStatus.QUEUED, 0, None)
    assert sample(services, "switchyard_jobs_finished_total", kind="nap", outcome="released") == 1


async def test_wake_claims_without_waiting_for_the_poll_interval(
    make_services: MakeServices,
) -> None:
    services = await make_services(worker_poll_seconds=60.0)

    async def handler(ctx: JobContext) -> None:
        return None

    worker = Worker(services, Handlers([JobKind("now", handler)]), run_scheduler=False)
    async with running(worker):
        await asyncio.sleep(0.3)  # the first (empty) claim is over; the loop is idle
        (job_id,) = await add(services, NewJob(kind="now"))
        worker.wake()
        await wait_status(services, job_id, JobStatus.DONE)  # bounded at 20 s < 60 s


async def test_sigterm_releases_in_flight_work_for_the_next_worker(
    database_url: str, make_services: MakeServices, tmp_path: Path
) -> None:
    services = await make_services()
    await create_tables(services.engine)
    try:
        await sigterm_then_second_worker(services, database_url, tmp_path)
    finally:
        async with services.engine.begin() as connection:
            await connection.execute(text("DROP TABLE effects"))
            await connection.execute(text("DROP TABLE invocations"))


async def sigterm_then_second_worker(services: Services, database_url: str, tmp_path: Path) -> None:
    # Concurrency 4 takes the two quick jobs and two stuck ones; grace 3 s lets the quick
    # ones finish and forces the stuck ones to be released.
    sleeps = [1.0, 1.0, 60, 60, 60, 60]
    ids = await add(services, *(NewJob(kind=KIND, payload={"sleep": s}) for s in sleeps))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.core.durability_worker", database_url, "first"),
                *("--concurrency=4", "--grace=3", "--lease=5"),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        deadline = time.monotonic() + 30
        while await invocations(services) < 4:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3 + 10) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    jobs = [await load(services, job_id) for job_id in ids]
    assert [job.status for job in jobs] == ["done", "done"] + ["queued"] * 4
    assert [job.attempts for job in jobs] == [1, 1, 0, 0, 0, 0]  # released: attempt not counted

    second = Worker(services, Handlers([effect_kind("second", max_sleep=0.01)]))
    async with running(second):
        for job_id in ids:
            await wait_status(services, job_id, JobStatus.DONE)
    async with services.sessions() as session:
        effects: dict[int, str] = dict(
            (await session.execute(text("SELECT job_id, worker FROM effects"))).all()
        )
        running_jobs = (
            await session.execute(select(func.count()).where(Job.status == "running"))
        ).scalar_one()
    assert effects == {**dict.fromkeys(ids[:2], "first"), **dict.fromkeys(ids[2:], "second")}
    assert running_jobs == 0


async def invocations(services: Services) -> int:
    async with services.sessions() as session:
        return int((await session.execute(text("SELECT COUNT(*) FROM invocations"))).scalar_one())
