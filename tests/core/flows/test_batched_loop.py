"""The batch loop's safety: no request in two batches, nothing lost to a crash between
steps, results applied once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
from sqlalchemy import func, select, update

from core.db.models import BatchRequest, GatewayRequest, Job, JobStatus, MessageBatch
from core.db.models import BatchRequestStatus as RS
from core.db.models import MessageBatchStatus as BS
from core.db.types import utcnow
from core.flows.batched import batches_for
from core.gateway.batch_results import apply
from core.gateway.batch_submit import claim, recover
from core.gateway.message_batches import MessageBatches, TickReport
from tests.core.flows.conftest import World
from tests.core.flows.test_batched import run_jobs, settings, settle_batches  # noqa: F401


def later(world: World, hours: float) -> MessageBatches:
    """The batch loop as seen from ``hours`` in the future (stale batches are due)."""
    base = batches_for(world.services)
    return MessageBatches(
        base.gateway,
        base.sessions,
        base.keyring,
        base.settings,
        clock=lambda: utcnow() + timedelta(hours=hours),
    )


async def park(world: World, count: int) -> list[int]:
    ids = [await world.change({"body": f"Ticket body {n}"}) for n in range(count)]
    statuses = await run_jobs(world)
    assert all(statuses[i] is JobStatus.AWAITING_BATCH for i in ids)
    return ids


async def count(world: World, model: type, *where: object) -> int:
    async with world.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_concurrent_loops_never_submit_a_request_twice(world: World) -> None:
    await park(world, 12)
    loops = [batches_for(world.services) for _ in range(4)]
    await asyncio.gather(*(loop.tick() for loop in loops))
    await settle_batches(loops[0])
    assert world.claude.stats.batch_requests == 12  # each answered once
    assert await count(world, BatchRequest, BatchRequest.submissions == 1) == 12
    assert await count(world, BatchRequest, BatchRequest.status == RS.SUCCEEDED) == 12


async def test_a_crash_before_the_create_call_puts_requests_back(world: World) -> None:
    await park(world, 3)
    batches = batches_for(world.services)
    claimed = await claim(batches, 10)  # ...and the process dies before calling the API
    assert claimed is not None
    assert len(claimed[1]) == 3
    assert await batches.tick() == TickReport()  # too recent to judge: left alone
    assert await recover(later(world, 1)) == 1
    async with world.services.sessions() as session:
        batch = await session.get(MessageBatch, claimed[0].id)
        assert batch is not None
        assert batch.status == BS.ABANDONED
    await settle_batches(batches)
    assert await count(world, BatchRequest, BatchRequest.status == RS.SUCCEEDED) == 3
    assert world.claude.stats.batch_requests == 3


async def test_a_crash_after_the_create_call_adopts_the_batch(world: World) -> None:
    world.claude.batches.delay = 0.3
    await park(world, 2)
    batches = batches_for(world.services)
    claimed = await claim(batches, 10)
    assert claimed is not None
    batch, rows = claimed
    # The API got the batch; the process died before recording the acknowledgement.
    params = [{"custom_id": r.id, "params": batches.request_of(r)["params"]} for r in rows]
    await world.services.gateway.upstream.create_batch(params)
    # Checked once the create call cannot be under way any more (the upstream timeout).
    assert await recover(later(world, 0.2)) == 1
    async with world.services.sessions.begin() as session:
        adopted = await session.get(MessageBatch, batch.id)
        assert adopted is not None
        assert adopted.status == BS.IN_PROGRESS
        adopted.next_poll_at = utcnow()  # the shifted clock scheduled it 12 minutes out
    await settle_batches(batches)
    assert world.claude.stats.batch_requests == 2  # not submitted a second time
    assert await count(world, BatchRequest, BatchRequest.status == RS.SUCCEEDED) == 2


async def test_results_applied_twice_change_nothing(world: World) -> None:
    await park(world, 2)
    batches = batches_for(world.services)
    await settle_batches(batches)
    async with world.services.sessions() as session:
        batch = await session.scalar(select(MessageBatch))
    assert batch is not None
    assert batch.anthropic_id is not None
    lines = [
        orjson.loads(line)
        async for line in world.services.gateway.upstream.batch_results(batch.anthropic_id)
    ]
    report = TickReport()
    await apply(batches, batch, lines, report)  # a second poller, or a re-read after a crash
    assert report == TickReport()
    await world.services.gateway.recorder.flush()
    assert await count(world, GatewayRequest) == 2


async def test_a_job_parked_after_its_answer_arrived_is_requeued(world: World) -> None:
    (job_id,) = await park(world, 1)
    batches = batches_for(world.services)
    await settle_batches(batches)
    # As if the job's worker recorded "awaiting_batch" only after the result was applied.
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(status=JobStatus.AWAITING_BATCH.value)
        )
    assert (await batches.tick()).requeued == 1
    assert (await run_jobs(world))[job_id] is JobStatus.DONE
