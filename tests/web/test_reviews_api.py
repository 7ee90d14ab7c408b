"""The review queue's API: roles, listing, the item's detail, decisions and their problems.

The decisions' logic (four eyes, stale records, the job's second run) is tested end to end
in ``tests/core/flows/test_review_decisions.py``; this is the HTTP contract over it.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from core.db.models import AuditEntry, Job, JobStatus, Role
from core.services import Services
from tests.web.support import (
    TenantKeys,
    assert_problem,
    body_of,
    deliver,
    enable_flow,
    propose_review,
    ticket,
)


async def _pending(
    client: httpx.AsyncClient, services: Services, tenant: TenantKeys, connection_id: str, n: int
) -> list[str]:
    await enable_flow(client, tenant, connection_id, "webhook/ticket_updates")
    events = [ticket(f"evt-{i}", record_id=f"T-{i}") for i in range(n)]
    response = await deliver(client, connection_id, body_of(*events))
    assert response.status_code == 202, response.text
    job_ids = response.json()["jobs"]
    return [
        await propose_review(services, tenant.id, job_id, connection_id, record_id=f"T-{i}")
        for i, job_id in enumerate(job_ids)
    ]


async def _job_status(services: Services, job_id: int) -> str:
    async with services.sessions() as session:
        status = await session.scalar(select(Job.status).where(Job.id == job_id))
    assert status is not None
    return status


async def test_the_queue_pages_oldest_first_and_shows_each_change(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    ids = await _pending(client, services, tenant_a, connection_a, 3)
    reviewer = tenant_a.headers(Role.REVIEWER)

    first = await client.get("/v1/reviews", params={"limit": 2}, headers=reviewer)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [item["id"] for item in page["data"]] == ids[:2]
    rest = await client.get(
        "/v1/reviews", params={"limit": 2, "cursor": page["next_cursor"]}, headers=reviewer
    )
    assert [item["id"] for item in rest.json()["data"]] == ids[2:]
    assert rest.json()["next_cursor"] is None

    detail = (await client.get(f"/v1/reviews/{ids[0]}", headers=reviewer)).json()
    assert detail["status"] == "pending"
    assert detail["job_status"] == JobStatus.AWAITING_REVIEW.value
    assert {change["field"]: change for change in detail["changes"]}["category"] == {
        "field": "category",
        "before": None,
        "after": "bug",
    }
    assert detail["output"]["summary"] == "Printer on fire"  # the model's rationale
    assert detail["reasons"] == ["review rule: record.status == 'escalated'"]


async def test_service_keys_cannot_see_or_decide(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    [item] = await _pending(client, services, tenant_a, connection_a, 1)
    service = tenant_a.headers(Role.SERVICE)
    assert_problem(await client.get("/v1/reviews", headers=service), 403, "forbidden")
    approve = await client.post(f"/v1/reviews/{item}/approve", json={}, headers=service)
    assert_problem(approve, 403, "forbidden")


async def test_approve_queues_the_write_and_a_second_decision_is_refused(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    [item] = await _pending(client, services, tenant_a, connection_a, 1)
    reviewer = tenant_a.headers(Role.REVIEWER)

    approved = await client.post(
        f"/v1/reviews/{item}/approve",
        json={"patch": {"summary": "Printer smoking"}, "note": "checked with the customer"},
        headers=reviewer,
    )

    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["approved_patch"] == {"category": "bug", "summary": "Printer smoking"}
    assert body["decided_by"] == f"key:{tenant_a.key_ids[Role.REVIEWER]}"
    assert await _job_status(services, body["job_id"]) == JobStatus.QUEUED.value
    again = await client.post(
        f"/v1/reviews/{item}/reject", json={"reason": "not needed"}, headers=reviewer
    )
    assert_problem(again, 409, "review-not-pending")
    async with services.sessions() as session:
        audited = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.object_id == item))
        ).all()
    assert audited == ["review.approve"]


async def test_bad_decisions_get_clear_problems(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    [item] = await _pending(client, services, tenant_a, connection_a, 1)
    reviewer = tenant_a.headers(Role.REVIEWER)

    edit = await client.post(
        f"/v1/reviews/{item}/approve", json={"patch": {"status": "closed"}}, headers=reviewer
    )
    assert "status" in assert_problem(edit, 422, "review-edit-invalid")["detail"]
    no_reason = await client.post(f"/v1/reviews/{item}/reject", json={}, headers=reviewer)
    assert_problem(no_reason, 422, "invalid-request")
    missing = await client.get("/v1/reviews/rev_nope", headers=reviewer)
    assert_problem(missing, 404, "not-found")

    rejected = await client.post(
        f"/v1/reviews/{item}/reject", json={"reason": "wrong category"}, headers=reviewer
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["decision_note"] == "wrong category"
    listed = await client.get("/v1/reviews", params={"status": "rejected"}, headers=reviewer)
    assert [row["id"] for row in listed.json()["data"]] == [item]
