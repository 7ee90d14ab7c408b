"""Reading the encrypted call audit log through the app: admin only, a reason required, and
every read (found or not) in the admin audit log."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from core.db.models import AuditEntry, Role
from core.db.types import new_id
from core.gateway.records import CallRecord
from core.services import Services
from tests.web.support import TenantKeys, assert_problem

REASON = "INC-4711: customer disputes the summary"
REQUEST = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "<EMAIL_1>"}]}
ANSWER = {"type": "message", "content": [{"type": "text", "text": "hello <EMAIL_1>"}]}


async def audited_call(services: Services, tenant_id: str) -> str:
    """A call of ``tenant_id`` sealed in the audit log, as the gateway would have; its id."""
    log = services.gateway.call_audit
    assert log is not None
    record = CallRecord(
        id=new_id("gwr"),
        trace_id="t" * 32,
        tenant_id=tenant_id,
        feature="api",
        api_key_id=None,
        task=None,
        requested_model=None,
        model="claude-haiku-4-5",
        stream=False,
        priority="interactive",
        prompt_hash="0" * 64,
        created_at=datetime.now(UTC),
    )
    log.submit(record, REQUEST, ANSWER)
    assert await log.flush() == 1
    return record.id


async def reads(services: Services, tenant_id: str) -> list[AuditEntry]:
    async with services.sessions() as session:
        found = await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant_id, AuditEntry.action == "call_audit.read")
            .order_by(AuditEntry.id)
        )
        return list(found.all())


async def test_an_admin_reads_a_call_for_a_reason_and_the_read_is_audited(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    request_id = await audited_call(services, tenant_a.id)
    path = f"/v1/calls/{request_id}/audit"

    response = await client.post(path, json={"reason": REASON}, headers=tenant_a.headers())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == request_id
    assert body["key_id"] == "test"
    assert (body["request"], body["response"], body["error"]) == (REQUEST, ANSWER, None)
    assert datetime.fromisoformat(body["created_at"]) <= datetime.now(UTC)
    assert response.headers["cache-control"] == "no-store"
    (entry,) = await reads(services, tenant_a.id)
    assert entry.actor == f"key:{tenant_a.key_ids[Role.ADMIN]}"
    assert (entry.object_type, entry.object_id) == ("gateway_request", request_id)
    assert entry.details == {"reason": REASON, "outcome": "read"}


async def test_no_reason_no_read(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    request_id = await audited_call(services, tenant_a.id)
    path = f"/v1/calls/{request_id}/audit"
    for body in (None, {}, {"reason": "because"}, {"reason": " " * 12}):
        response = await client.post(path, json=body, headers=tenant_a.headers())
        assert_problem(response, 422, "invalid-request")
    assert (await client.get(path, headers=tenant_a.headers())).status_code == 405
    for role in (Role.SERVICE, Role.REVIEWER):
        refused = await client.post(path, json={"reason": REASON}, headers=tenant_a.headers(role))
        assert_problem(refused, 403, "forbidden")
    assert await reads(services, tenant_a.id) == []


async def test_another_tenants_call_is_not_found_and_the_attempt_is_audited(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    request_id = await audited_call(services, tenant_a.id)
    for probe in (request_id, "gwr_missing"):
        response = await client.post(
            f"/v1/calls/{probe}/audit", json={"reason": REASON}, headers=tenant_b.headers()
        )
        assert_problem(response, 404, "not-found")
    entries = await reads(services, tenant_b.id)
    assert [(e.object_id, e.details["outcome"]) for e in entries] == [
        (request_id, "not-found"),
        ("gwr_missing", "not-found"),
    ]
    assert await reads(services, tenant_a.id) == []
