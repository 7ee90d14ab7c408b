"""Review-gated writes end to end: proposal → decision → the job carries it out, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core import review_decisions
from core.auth import Principal, assign_person, create_api_key
from core.db.models import AuditEntry, Job, JobStatus, ReviewItem, ReviewStatus, Role
from core.errors import InvalidRequest
from core.housekeeping import housekeep
from core.review_decisions import FourEyes, ReviewEditInvalid, ReviewNotPending, ReviewStale
from tests.core.flows.conftest import TICKET, World

ESCALATED = {**TICKET, "status": "escalated"}


async def _proposed(world: World, **event: object) -> tuple[int, ReviewItem]:
    event.setdefault("changed_fields", ["status"])
    job = await world.claim(await world.change(ESCALATED, **event))
    outcome = await world.run(job)
    assert outcome.status is JobStatus.AWAITING_REVIEW
    async with world.services.sessions.begin() as session:  # as the worker records it
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status=outcome.status.value, result=outcome.result)
        )
    async with world.services.sessions() as session:
        item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job.id))
    assert item is not None
    return job.id, item


async def _reviewer(
    world: World, email: str | None = None, platform_ids: tuple[str, ...] = ()
) -> Principal:
    async with world.services.sessions.begin() as session:
        row, _ = await create_api_key(session, world.tenant_id, Role.REVIEWER, name="ana")
        if email is not None:
            await assign_person(session, row, email, platform_ids)
    return Principal(world.tenant_id, row.id, Role.REVIEWER)


async def _job(world: World, job_id: int) -> Job:
    async with world.services.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def _rerun(world: World, job_id: int) -> None:
    job = await world.claim(job_id)
    outcome = await world.run(job)
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=outcome.status.value, result=outcome.result)
        )


async def test_an_approval_writes_once_without_asking_claude_again(world: World) -> None:
    job_id, item = await _proposed(world)
    calls = len(world.upstream.bodies)
    reviewer = await _reviewer(world)

    approved = await review_decisions.approve(world.services, item.id, reviewer, note="ok")

    assert approved.status == ReviewStatus.APPROVED.value
    assert (await _job(world, job_id)).status == JobStatus.QUEUED.value
    await _rerun(world, job_id)
    assert len(world.upstream.bodies) == calls  # no fetch-and-ask again: only the write
    assert [(o, r) for o, r, _ in world.tool.applied] == [("ticket", "T-1")]
    job = await _job(world, job_id)
    assert job.result is not None
    steps = [step["step"] for step in job.result["steps"]]
    assert steps[-2:] == ["decision", "write"]
    assert steps.count("claude") == 1
    async with world.services.sessions() as session:
        assert (await session.get(ReviewItem, item.id)).status == ReviewStatus.WRITTEN.value  # type: ignore[union-attr]

    # The worker died after the write, before recording it: recovery runs the job again.
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item.id).values(status="approved")
        )
        await session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    await _rerun(world, job_id)
    assert len(world.tool.applied) == 1  # the platform saw the same idempotency key


async def test_edits_are_written_and_checked(world: World) -> None:
    job_id, item = await _proposed(world)
    reviewer = await _reviewer(world)
    with pytest.raises(ReviewEditInvalid, match="may only change the proposed fields"):
        await review_decisions.approve(
            world.services, item.id, reviewer, edits={"status": "closed"}
        )

    await review_decisions.approve(
        world.services, item.id, reviewer, edits={"summary": "Printer fire after update"}
    )
    await _rerun(world, job_id)

    written = world.tool.get("ticket", "T-1")
    assert written is not None
    assert written["summary"] == "Printer fire after update"
    assert written["category"] == item.patch["category"]


async def test_a_changed_record_refuses_the_approval_and_shows_its_new_state(
    world: World,
) -> None:
    _, item = await _proposed(world)
    world.tool.put("ticket", "T-1", {**ESCALATED, "summary": "edited by a person meanwhile"})
    reviewer = await _reviewer(world)

    with pytest.raises(ReviewStale, match="changed since the proposal"):
        await review_decisions.approve(world.services, item.id, reviewer)

    async with world.services.sessions() as session:
        fresh = await session.get(ReviewItem, item.id)
    assert fresh is not None
    assert fresh.status == ReviewStatus.PENDING.value
    assert fresh.before["summary"] == "edited by a person meanwhile"
    assert fresh.expected_version != item.expected_version
    await review_decisions.approve(world.services, item.id, reviewer)  # a fresh decision


async def test_whoever_made_the_change_cannot_approve_it(world: World) -> None:
    _, item = await _proposed(world)
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id)
            .values(triggered_by="webhook:ada@example.com")
        )
    author = await _reviewer(world, email="Ada@Example.com")
    with pytest.raises(FourEyes):
        await review_decisions.approve(world.services, item.id, author)
    colleague = await _reviewer(world, email="grace@example.com")
    await review_decisions.approve(world.services, item.id, colleague)
    with pytest.raises(ReviewNotPending):  # decided once
        await review_decisions.reject(world.services, item.id, colleague, "too late")


async def test_a_connector_reported_author_is_kept(world: World) -> None:
    job = await world.claim(
        await world.change(ESCALATED, changed_fields=["status"], data={"changed_by": "Ada@X.io"})
    )
    await world.run(job)
    async with world.services.sessions() as session:
        item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job.id))
    assert item is not None
    assert item.triggered_by == "webhook:Ada@X.io"


async def test_reject_and_expiry_end_the_job_without_writing(world: World) -> None:
    rejected_job, rejected = await _proposed(world)
    reviewer = await _reviewer(world)
    await review_decisions.reject(world.services, rejected.id, reviewer, "wrong category")
    await _rerun(world, rejected_job)
    job = await _job(world, rejected_job)
    assert job.status == JobStatus.DONE.value
    assert job.result is not None
    assert job.result["steps"][-1]["status"] == "rejected"
    assert job.result["steps"][-1]["note"] == "wrong category"

    expiring_job, expiring = await _proposed(world, changed_fields=["status", "body"])
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == expiring.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert (await housekeep(world.services))["review_items_expired"] == 1
    with pytest.raises(ReviewNotPending):
        await review_decisions.approve(world.services, expiring.id, reviewer)
    await _rerun(world, expiring_job)
    assert world.tool.applied == []
    async with world.services.sessions() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.object_type == "review_item")
            )
        ).all()
    assert sorted(actions) == ["review.expire", "review.reject"]


async def test_a_replayed_job_still_waiting_does_not_ask_again(world: World) -> None:
    job_id, _ = await _proposed(world)
    calls = len(world.upstream.bodies)
    async with world.services.sessions.begin() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    job = await world.claim(job_id)
    assert (await world.run(job)).status is JobStatus.AWAITING_REVIEW
    assert len(world.upstream.bodies) == calls


async def test_four_eyes_can_be_turned_off_for_a_team_of_one(world: World) -> None:
    _, item = await _proposed(world)
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id)
            .values(triggered_by="webhook:ada@example.com")
        )
    world.services.settings = world.services.settings.model_copy(update={"review_four_eyes": False})
    author = await _reviewer(world, email="ada@example.com")
    approved = await review_decisions.approve(world.services, item.id, author)
    assert approved.status == ReviewStatus.APPROVED.value


async def test_a_reviewer_is_known_by_their_platform_user_id(world: World) -> None:
    """SAP, Dynamics and Salesforce name users by id: a key that carries the person's id in
    the platform cannot approve that person's change; their email alone would not tell."""
    _, item = await _proposed(world)
    async with world.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item.id).values(triggered_by="sap:JSMITH")
        )
    author = await _reviewer(world, "john.smith@example.com", ("sap:jsmith", "hubspot:9001"))
    with pytest.raises(FourEyes, match="sap:JSMITH triggered this change"):
        await review_decisions.approve(world.services, item.id, author)
    same_id_elsewhere = await _reviewer(world, "grace@example.com", ("dynamics:jsmith",))
    approved = await review_decisions.approve(world.services, item.id, same_id_elsewhere)
    assert approved.status == ReviewStatus.APPROVED.value


async def test_a_person_and_their_platform_ids_are_checked(world: World) -> None:
    async with world.services.sessions.begin() as session:
        row, _ = await create_api_key(session, world.tenant_id, Role.REVIEWER)
        with pytest.raises(InvalidRequest, match="not an email address"):
            await assign_person(session, row, "jsmith")
        with pytest.raises(InvalidRequest, match="<connector>:<user id>"):
            await assign_person(session, row, "j@example.com", ["JSMITH"])
        first = await assign_person(session, row, "j@example.com", ["sap:JSMITH"])
        again = await assign_person(session, row, "j@example.com", ["hubspot:9001"])
    assert again.id == first.id
    assert again.platform_ids == ["hubspot:9001", "sap:JSMITH"]
