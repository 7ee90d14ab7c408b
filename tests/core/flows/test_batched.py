"""Flows with ``batch: true``: jobs park, one batch goes to the sandbox, jobs resume with
the stored answer and write back; the cost is recorded at the batch price."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.db.models import BatchRequest, GatewayRequest, Job, JobStatus, MessageBatch
from core.db.models import BatchRequestStatus as RS
from core.flows.batched import batches_for
from core.flows.engine import flow_job_kind
from core.gateway import accounting
from core.gateway.message_batches import MessageBatches, TickReport
from core.ingest import FLOW_JOB
from core.queue import JobQueue
from core.settings import Settings
from tests.conftest import make_settings
from tests.core.flows.conftest import World

FIXTURES = Path(__file__).parents[2] / "fixtures" / "mappings"


def batch_mappings(root: Path) -> Path:
    """The fixture mappings with the ticket flow opted in to Message Batches."""
    target = root / "mappings"
    shutil.copytree(FIXTURES, target)
    flow = target / "webhook" / "ticket_updates.yaml"
    flow.write_text(flow.read_text() + "batch: true\n")
    return target


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    base = make_settings(database_url, mappings_dir=batch_mappings(tmp_path))
    gateway = base.gateway.model_copy(
        update={"batch_max_wait_seconds": 0, "batch_poll_seconds": 0.01}
    )
    return base.model_copy(update={"gateway": gateway})


async def run_jobs(world: World) -> dict[int, JobStatus]:
    """Claim and run every runnable flow job, recording outcomes as the worker would."""
    queue = JobQueue(world.services.sessions, worker_id="test", lease_seconds=60)
    statuses: dict[int, JobStatus] = {}
    for job in await queue.claim([FLOW_JOB], 1000):
        try:
            outcome = await world.run(job)
        except Exception as exc:
            status = await queue.fail(job, exc, flow_job_kind().retry)
            assert status is not None
            statuses[job.id] = status
            continue
        assert await queue.complete(job, outcome.result, status=outcome.status)
        statuses[job.id] = outcome.status
    return statuses


async def run_job(world: World, job_id: int) -> JobStatus:
    return (await run_jobs(world))[job_id]


async def job_row(world: World, job_id: int) -> Job:
    async with world.services.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def settle_batches(batches: MessageBatches, *, rounds: int = 200) -> TickReport:
    """Tick until nothing is pending or in flight (the sandbox answers within ms)."""
    import asyncio

    total = TickReport()
    for _ in range(rounds):
        report = await batches.tick()
        for name in vars(total):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        async with batches.sessions() as session:
            open_requests = await session.scalar(
                select(func.count()).where(
                    BatchRequest.status.in_([RS.PENDING, RS.SUBMITTING, RS.SUBMITTED])
                )
            )
        if not open_requests:
            return total
        await asyncio.sleep(0.02)
    raise AssertionError("batches did not settle")


async def test_a_batch_flow_parks_submits_resumes_and_writes_at_half_price(world: World) -> None:
    job_ids = [await world.change({"body": f"The printer is on fire, take {n}"}) for n in (1, 2)]
    assert set((await run_jobs(world)).values()) == {JobStatus.AWAITING_BATCH}
    parked = await job_row(world, job_ids[0])
    assert parked.result is not None
    step = parked.result["steps"][-1]
    assert step["step"] == "batch"
    assert step["request_id"].startswith("breq_")
    assert world.upstream.bodies == []  # no real-time call went out

    # Running a parked-then-recovered job again does not enqueue a second request.
    batches = batches_for(world.services)
    report = await settle_batches(batches)
    assert report.submitted == 2
    assert report.resolved == 2
    assert report.requeued == 2
    assert world.claude.stats.batch_requests == 2
    async with world.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MessageBatch)) == 1

    for job_id in job_ids:
        assert (await job_row(world, job_id)).status == JobStatus.QUEUED
    assert set((await run_jobs(world)).values()) == {JobStatus.DONE}
    assert world.upstream.bodies == []  # the stored answer was used: no second call
    assert world.claude.stats.batch_requests == 2

    done = await job_row(world, job_ids[0])
    assert done.result is not None
    claude = next(s for s in done.result["steps"] if s["step"] == "claude")
    (call,) = claude["calls"]
    assert call["batch"]["batch_id"].startswith("msgbatch_")
    assert call["batch"]["request_id"].startswith("breq_")
    assert call["batch"]["waited_seconds"] >= 0
    assert call["cost_usd"] > 0
    assert any(s["step"] == "write" for s in done.result["steps"])

    await world.services.gateway.recorder.flush()
    async with world.services.sessions() as session:
        records = list(await session.scalars(select(GatewayRequest)))
    assert len(records) == 2
    assert all(r.batch for r in records)
    catalog = world.services.gateway.catalog
    for record in records:
        usage = accounting.Usage(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cache_read_input_tokens=record.cache_read_tokens,
            cache_write_5m=record.cache_write_5m_tokens,
            cache_write_1h=record.cache_write_1h_tokens,
            cache_creation_input_tokens=record.cache_write_5m_tokens + record.cache_write_1h_tokens,
        )
        realtime = accounting.cost(catalog.get(record.model), usage, at=record.created_at).total
        assert record.cost_picodollars == int(realtime * 10**12 / 2)
        assert record.cost_picodollars > 0


async def test_a_job_run_again_while_parked_does_not_enqueue_twice(world: World) -> None:
    job_id = await world.change({"body": "Paper jam"})
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    # As if the worker crashed after storing the request and lease recovery re-ran the job.
    async with world.services.sessions.begin() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.QUEUED.value
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    async with world.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(BatchRequest)) == 1


async def test_an_invalid_request_fails_the_job_clearly(world: World) -> None:
    world.claude.faults = replace(world.claude.faults, batch_invalid_rate=1.0)
    job_id = await world.change({"body": "Broken"})
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    report = await settle_batches(batches_for(world.services))
    assert report.resolved == 1
    assert report.resubmitted == 0
    assert await run_job(world, job_id) is JobStatus.DEAD
    job = await job_row(world, job_id)
    assert job.last_error is not None
    assert "BatchRequestFailed" in job.last_error
    assert "invalid_request_error" in job.last_error
    await world.services.gateway.recorder.flush()
    async with world.services.sessions() as session:
        (record,) = list(await session.scalars(select(GatewayRequest)))
    assert record.status == "error"
    assert record.error_type == "invalid_request_error"
    assert record.cost_picodollars == 0


@pytest.mark.parametrize("fault", ["batch_errored_rate", "batch_expired_rate"])
async def test_transient_results_are_resubmitted_then_fail(world: World, fault: str) -> None:
    world.claude.faults = replace(world.claude.faults, **{fault: 1.0})
    job_id = await world.change({"body": "Flaky"})
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    limit = world.services.settings.gateway.batch_max_resubmits
    report = await settle_batches(batches_for(world.services))
    assert report.resubmitted == limit
    assert report.resolved == 1
    async with world.services.sessions() as session:
        (row,) = list(await session.scalars(select(BatchRequest)))
        assert row.submissions == limit + 1
        assert row.status == RS.FAILED
        assert await session.scalar(select(func.count()).select_from(MessageBatch)) == limit + 1
    assert await run_job(world, job_id) is JobStatus.DEAD


async def test_a_transient_error_then_success_completes(world: World) -> None:
    world.claude.faults = replace(world.claude.faults, batch_expired_rate=1.0)
    job_id = await world.change({"body": "Eventually"})
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    batches = batches_for(world.services)
    for _ in range(100):  # the first batch ends expired, the request goes back to pending
        if (await batches.tick()).resubmitted:
            break
    world.claude.faults = replace(world.claude.faults, batch_expired_rate=0.0)
    await settle_batches(batches)
    assert await run_job(world, job_id) is JobStatus.DONE
    async with world.services.sessions() as session:
        (row,) = list(await session.scalars(select(BatchRequest)))
    assert row.submissions == 2
    assert row.status == RS.SUCCEEDED


async def test_a_canceled_batch_fails_its_jobs(world: World) -> None:
    world.claude.batches.delay = 60  # in progress until the cancel ends it
    job_id = await world.change({"body": "Cancelled"})
    assert await run_job(world, job_id) is JobStatus.AWAITING_BATCH
    batches = batches_for(world.services)
    assert (await batches.tick()).submitted == 1
    async with world.services.sessions() as session:
        batch = await session.scalar(select(MessageBatch))
    assert batch is not None
    assert batch.anthropic_id is not None
    await world.services.gateway.upstream.cancel_batch(batch.anthropic_id)
    await settle_batches(batches)
    assert await run_job(world, job_id) is JobStatus.DEAD
    assert "canceled" in ((await job_row(world, job_id)).last_error or "")


def test_the_batch_switch_is_a_boolean_in_flow_files() -> None:
    from tests.core.flows.test_validate import VALID, check

    assert check(VALID + "batch: true\n").spec is not None
    result = check(VALID + "batch: sometimes\n")
    assert not result.ok
    (problem,) = result.problems
    assert problem.code == "wrong-type"
    assert problem.line == VALID.count("\n") + 1
