"""Housekeeping: what workers clean up on their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.auth import create_tenant
from core.db.models import BatchRequest, BudgetPeriod, BudgetScope, MessageBatch
from core.gateway.budget_store import put_budget
from core.gateway.budgets import Budgets
from core.housekeeping import housekeep
from core.queue import NewJob, enqueue
from core.services import Services


async def test_reservations_of_calls_that_never_settled_are_released(
    services: Services,
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        await put_budget(
            session,
            tenant_id=tenant.id,
            scope=BudgetScope.TENANT,
            scope_value=None,
            period=BudgetPeriod.DAY,
            limit_picodollars=10**12,
        )
    # A process that reserved and then died: its reservation is already past its expiry.
    crashed = Budgets(services.sessions, reservation_ttl=timedelta(seconds=-1))
    await crashed.reserve(tenant.id, "api", None, 4 * 10**11)
    assert (await housekeep(services))["budget_reservations_released"] == 1
    assert (await housekeep(services))["budget_reservations_released"] == 0
    # The whole budget is free again: a reservation of all of it fits.
    await crashed.reserve(tenant.id, "api", None, 10**12)


async def test_resolved_batch_requests_are_deleted_after_retention(services: Services) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=8), now - timedelta(days=1)
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        (job_id,) = await enqueue(session, [NewJob(kind="flow.run", tenant_id=tenant.id)])
        session.add_all(
            [
                MessageBatch(
                    id="mb_old", status="resolved", request_count=2, created_at=old, resolved_at=old
                ),
                MessageBatch(
                    id="mb_kept",
                    status="resolved",
                    request_count=1,
                    created_at=old,
                    resolved_at=old,
                ),
            ]
        )
        await session.flush()

        def request(rid: str, status: str, at: datetime, batch: str | None) -> BatchRequest:
            resolved = at if status in ("succeeded", "failed") else None
            return BatchRequest(
                id=rid,
                tenant_id=tenant.id,
                job_id=job_id,
                status=status,
                question_sha256="0" * 64,
                model="claude-haiku-5-5",
                sealed_request="x",
                call={},
                batch_id=batch,
                created_at=at,
                resolved_at=resolved,
            )

        session.add_all(
            [
                request("br_old_ok", "succeeded", old, "mb_old"),
                request("br_old_failed", "failed", old, "mb_old"),
                request("br_old_superseded", "superseded", old, None),
                request("br_recent", "succeeded", recent, "mb_kept"),
                request("br_waiting", "pending", old, None),  # never resolved: kept
            ]
        )

    done = await housekeep(services)

    assert (done["batch_requests_purged"], done["message_batches_purged"]) == (3, 1)
    async with services.sessions() as session:
        left = set((await session.scalars(select(BatchRequest.id))).all())
        batches = set((await session.scalars(select(MessageBatch.id))).all())
    assert left == {"br_recent", "br_waiting"}
    assert batches == {"mb_kept"}  # still referenced by a request inside retention
