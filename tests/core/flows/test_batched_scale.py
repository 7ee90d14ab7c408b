"""500 background jobs through the sandbox's Message Batches endpoints, run by a real worker,
with errored (transient and invalid) and expired results injected: every job ends done or
clearly failed, and everything answered is charged at half the real-time price."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from connectors.base import ChangeEvent, ChangeType
from core.db.models import BatchRequest, Connection, GatewayRequest, Job, JobStatus, MessageBatch
from core.db.models import BatchRequestStatus as RS
from core.gateway import accounting
from core.ingest import store_events
from core.jobkinds import builtin_handlers
from core.settings import Settings
from core.worker import Worker
from tests.conftest import make_settings
from tests.core.flows.conftest import TICKET, World
from tests.core.flows.test_batched import batch_mappings

JOBS = 500


@pytest.fixture
def settings(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = make_settings(
        sqlite_url,
        mappings_dir=batch_mappings(tmp_path_factory.mktemp("scale")),
        worker_concurrency=32,
    )
    gateway = base.gateway.model_copy(
        update={
            "batch_max_requests": 200,
            "batch_max_wait_seconds": 0.2,
            "batch_poll_seconds": 0.1,
            "batch_max_resubmits": 2,
        }
    )
    return base.model_copy(update={"gateway": gateway})


async def test_500_batched_jobs_end_done_or_clearly_failed_at_half_price(world: World) -> None:
    world.claude.faults = replace(
        world.claude.faults,
        batch_errored_rate=0.04,
        batch_invalid_rate=0.01,
        batch_expired_rate=0.03,
    )
    for n in range(JOBS):
        world.tool.put("ticket", f"T-{n}", {**TICKET, "body": f"Ticket {n}: the printer jams."})
    events = [
        ChangeEvent(
            platform_event_id=f"scale-{n}",
            object="ticket",
            record_id=f"T-{n}",
            change_type=ChangeType.UPDATED,
            changed_fields=("body",),
        )
        for n in range(JOBS)
    ]
    async with world.services.sessions.begin() as session:
        connection = await session.get(Connection, world.connection_id)
        assert connection is not None
        stored = await store_events(
            session, connection, events, world.services.flows, trace_id="b" * 32
        )
    assert len(stored.jobs) == JOBS

    started = time.monotonic()
    stop = asyncio.Event()
    worker = Worker(world.services, builtin_handlers(), worker_id="scale")
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.25)
                async with world.services.sessions() as session:
                    unfinished = await session.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.status.not_in([JobStatus.DONE.value, JobStatus.DEAD.value]))
                    )
                if unfinished == 0:
                    break
    finally:
        stop.set()
        await running
    elapsed = time.monotonic() - started
    await world.services.gateway.recorder.flush()

    async with world.services.sessions() as session:
        jobs = list(await session.scalars(select(Job)))
        records = list(await session.scalars(select(GatewayRequest)))
        requests = list(await session.scalars(select(BatchRequest)))
        batches = await session.scalar(select(func.count()).select_from(MessageBatch))
    done = [job for job in jobs if job.status == JobStatus.DONE]
    dead = [job for job in jobs if job.status == JobStatus.DEAD]
    assert len(done) + len(dead) == JOBS
    assert dead, "the injected faults should fail some jobs for good"
    for job in dead:
        assert job.last_error is not None
        assert "BatchRequestFailed" in job.last_error
    assert len(done) > JOBS * 0.9
    assert world.upstream.bodies == []  # no real-time call at all
    assert sum(r.submissions > 1 for r in requests) > 0  # transient results were resubmitted
    assert {r.status for r in requests} <= {RS.SUCCEEDED, RS.SUPERSEDED}

    answered = [r for r in records if r.status == "ok"]
    assert len(answered) == len(done)
    assert all(r.batch for r in records)
    catalog = world.services.gateway.catalog
    realtime = sum(
        accounting.cost(
            catalog.get(r.model),
            accounting.Usage(
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cache_read_input_tokens=r.cache_read_tokens,
                cache_creation_input_tokens=r.cache_write_5m_tokens + r.cache_write_1h_tokens,
                cache_write_5m=r.cache_write_5m_tokens,
                cache_write_1h=r.cache_write_1h_tokens,
            ),
            at=r.created_at,
        ).total
        for r in answered
    )
    charged = sum(r.cost_picodollars for r in records)
    assert abs(charged - realtime * 10**12 / 2) <= len(records)  # rounding, per record
    print(  # the figures the README quotes
        f"\nbatch scale: jobs={JOBS} done={len(done)} failed={len(dead)} batches={batches} "
        f"resubmitted={sum(r.submissions - 1 for r in requests if r.submissions > 1)} "
        f"cost_usd={charged / 10**12:.6f} realtime_usd={float(realtime):.6f} "
        f"seconds={elapsed:.1f}"
    )
