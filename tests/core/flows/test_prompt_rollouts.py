"""Flows under a prompt rollout: the chosen version answers, is recorded everywhere, and the
versions compare by cost, latency, validation failures and review rejections."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from core.db.models import GatewayRequest, JobStatus, ReviewItem, ReviewStatus
from core.flows.question import AnswerInvalid
from core.gateway import rollout_store
from core.gateway.prompt_usage import compare_versions
from core.sandbox.anthropic.faults import Faults
from tests.core.flows.conftest import TICKET, World

PROMPT = "ticket_test"


async def _rollout(world: World, share: int) -> None:
    async with world.services.sessions.begin() as session:
        await rollout_store.put_rollout(
            session,
            world.services.flows,
            tenant_id=world.tenant_id,
            prompt=PROMPT,
            candidate_version=2,
            share_basis_points=share,
            sticky=None,
            actor="test",
        )


async def _call_records(world: World) -> list[GatewayRequest]:
    await world.services.gateway.recorder.flush()
    async with world.services.sessions() as session:
        rows = await session.scalars(select(GatewayRequest).order_by(GatewayRequest.created_at))
        return list(rows.all())


async def test_the_candidate_answers_and_every_record_names_it(world: World) -> None:
    await _rollout(world, 10_000)
    candidate = world.services.flows.prompts.get(f"{PROMPT}@2")
    assert candidate is not None

    outcome = await world.run(await world.claim(await world.change()))

    assert outcome.status is JobStatus.DONE
    claude = next(step for step in outcome.result["steps"] if step["step"] == "claude")
    assert (claude["prompt"], claude["arm"], claude["reason"]) == (
        f"{PROMPT}@2",
        "candidate",
        "SPLIT",
    )
    assert world.upstream.bodies[0]["system"][0]["text"] == candidate.system
    assert '<ticket subject="Printer on fire"' in world.upstream.bodies[0]["messages"][0]["content"]
    (record,) = await _call_records(world)
    assert record.prompt_ref == f"{PROMPT}@2"
    assert record.validation_failed is False


async def test_rollback_applies_to_the_next_job(world: World) -> None:
    await _rollout(world, 10_000)
    await world.run(await world.claim(await world.change()))
    async with world.services.sessions.begin() as session:
        await rollout_store.rollback(
            session, tenant_id=world.tenant_id, prompt=PROMPT, actor="test"
        )

    outcome = await world.run(await world.claim(await world.change({"body": "It smokes."})))

    claude = next(step for step in outcome.result["steps"] if step["step"] == "claude")
    assert (claude["prompt"], claude["arm"]) == (f"{PROMPT}@1", "pinned")
    assert [r.prompt_ref for r in await _call_records(world)] == [f"{PROMPT}@2", f"{PROMPT}@1"]


async def test_a_review_item_remembers_the_version_that_proposed_it(world: World) -> None:
    await _rollout(world, 10_000)
    job = await world.claim(
        await world.change({**TICKET, "status": "escalated"}, changed_fields=["status"])
    )
    assert (await world.run(job)).status is JobStatus.AWAITING_REVIEW
    async with world.services.sessions() as session:
        item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job.id))
    assert item is not None
    assert item.prompt_ref == f"{PROMPT}@2"


async def test_versions_compare_by_cost_latency_failures_and_rejections(world: World) -> None:
    # Version 1: two clean answers, one of them proposed for review and rejected.
    await world.run(await world.claim(await world.change()))
    escalated = await world.claim(
        await world.change({**TICKET, "status": "escalated"}, changed_fields=["status"])
    )
    await world.run(escalated)
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.job_id == escalated.id)
            .values(status=ReviewStatus.REJECTED.value)
        )
    # Version 2: every answer breaks the schema (the call and its repair both count).
    await _rollout(world, 10_000)
    world.claude.faults = Faults(schema_break_rate=1.0)
    with pytest.raises(AnswerInvalid):
        await world.run(await world.claim(await world.change({"body": "It smokes."})))
    await world.services.gateway.recorder.flush()

    async with world.services.sessions() as session:
        report = await compare_versions(session, world.tenant_id, PROMPT, pinned=frozenset({1}))

    one, two = report.versions
    assert (one.prompt, one.arm, two.prompt, two.arm) == (
        f"{PROMPT}@1",
        "pinned",
        f"{PROMPT}@2",
        "candidate",
    )
    assert (one.usage.requests, one.usage.validation_failures) == (2, 0)
    assert (two.usage.requests, two.usage.validation_failures) == (2, 2)
    assert two.validation_failure_rate == 1.0
    assert (one.reviews.proposed, one.reviews.rejected, one.reviews.rejection_rate) == (1, 1, 1.0)
    assert two.reviews.proposed == 0
    assert one.usage.cost_usd > 0
    assert one.usage.latency_ms is not None
    assert report.rollout is not None
    assert report.rollout.share_percent == 100.0
