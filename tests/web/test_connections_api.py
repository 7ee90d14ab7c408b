"""The connections API: create/list/get, write-only secrets, flow switches, audit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select
from structlog.testing import capture_logs

from core.db.models import AuditEntry, Connection, FlowEnablement, Role
from core.services import Services
from tests.web.support import TenantKeys, assert_problem, row_counts, snapshot

SECRET = "s3cr3t-signing-value-that-must-never-leak"
TOKEN = "api-token-value-that-must-never-leak"
WEBHOOK_FLOWS = {
    "webhook/ticket_broken": False,
    "webhook/ticket_deletions": False,
    "webhook/ticket_triage": False,
    "webhook/ticket_updates": False,
}


def _payload(name: str = "helpdesk", **overrides: Any) -> dict[str, Any]:
    return {
        "connector": "webhook",
        "name": name,
        "config": {"base_url": "http://127.0.0.1:9/api", "timeout_seconds": 5},
        "secrets": {"signing_secret": SECRET, "api_token": TOKEN},
    } | overrides


async def _create(
    client: httpx.AsyncClient, tenant: TenantKeys, **overrides: Any
) -> httpx.Response:
    return await client.post(
        "/v1/connections", json=_payload(**overrides), headers=tenant.headers()
    )


async def _audit(services: Services, tenant_id: str) -> list[AuditEntry]:
    async with services.sessions.begin() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == tenant_id).order_by(AuditEntry.id)
        )
        return list(rows.all())


async def test_create_answers_the_connection_without_secrets(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    with capture_logs() as logs:
        response = await _create(client, tenant_a)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= {"id", "connector", "kind", "name", "config", "hook_url", "flows"}
    assert "secrets" not in body
    assert body["id"].startswith("con_")
    assert (body["connector"], body["kind"], body["name"]) == ("webhook", "crm", "helpdesk")
    assert body["config"]["base_url"] == "http://127.0.0.1:9/api"
    assert body["hook_url"] == f"/hooks/{body['id']}"
    # Only this connector's flows are offered (not the hubspot fixture flow), all off.
    assert body["flows"] == WEBHOOK_FLOWS
    for leak in (SECRET, TOKEN):
        assert leak not in response.text
        assert leak not in repr(logs)
    async with services.sessions.begin() as session:
        stored = await session.get(Connection, body["id"])
    assert stored is not None
    assert SECRET not in stored.secrets_encrypted
    assert SECRET not in str(stored.config)


async def test_secrets_never_appear_in_reads(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    created = (await _create(client, tenant_a)).json()
    for role in Role:
        headers = tenant_a.headers(role)
        listed = await client.get("/v1/connections", headers=headers)
        one = await client.get(f"/v1/connections/{created['id']}", headers=headers)
        assert listed.status_code == one.status_code == 200
        assert [c["id"] for c in listed.json()["data"]] == [created["id"]]
        assert one.json() == created
        for leak in (SECRET, TOKEN):
            assert leak not in listed.text
            assert leak not in one.text


async def test_create_is_audited_without_secrets(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    created = (await _create(client, tenant_a)).json()
    [entry] = await _audit(services, tenant_a.id)
    assert (entry.action, entry.object_type, entry.object_id) == (
        "connection.create",
        "connection",
        created["id"],
    )
    assert entry.actor == f"key:{tenant_a.key_ids[Role.ADMIN]}"
    assert entry.details == {"connector": "webhook", "name": "helpdesk"}


async def test_unknown_connector(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    before = await snapshot(services)
    response = await _create(client, tenant_a, connector="salesforce-classic")
    problem = assert_problem(response, 422, "unknown-connector")
    assert "webhook" in problem["detail"]  # names what is installed
    assert await snapshot(services) == before


async def test_invalid_secrets_list_fields_but_not_values(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    short = "tiny-Secret"  # under the 16-character minimum
    before = await snapshot(services)
    response = await _create(
        client, tenant_a, secrets={"signing_secret": short, "surprise": "UnexpectedValue42"}
    )
    problem = assert_problem(response, 422, "connector-config-invalid")
    assert short not in response.text
    assert "UnexpectedValue42" not in response.text
    fields = " ".join(problem["errors"])
    assert "secrets.signing_secret" in fields
    assert "secrets.surprise" in fields
    assert await snapshot(services) == before


async def test_invalid_config(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    response = await _create(client, tenant_a, config={"base_url": "not a url"})
    problem = assert_problem(response, 422, "connector-config-invalid")
    assert "config.base_url" in problem["detail"]
    assert (await row_counts(services))["connections"] == 0


async def test_duplicate_name_conflicts_within_a_tenant_only(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    assert (await _create(client, tenant_a)).status_code == 201
    duplicate = await _create(client, tenant_a)
    other_tenant = await _create(client, tenant_b)

    assert_problem(duplicate, 409, "conflict")
    assert other_tenant.status_code == 201
    assert (await row_counts(services))["connections"] == 2


async def test_unknown_connection_is_not_found(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.get("/v1/connections/con_nope", headers=tenant_a.headers())
    assert_problem(response, 404, "not-found")


async def _switch(
    client: httpx.AsyncClient, tenant: TenantKeys, connection_id: str, flow: str, enabled: bool
) -> httpx.Response:
    return await client.put(
        f"/v1/connections/{connection_id}/flows/{flow}",
        json={"enabled": enabled},
        headers=tenant.headers(),
    )


async def test_enable_and_disable_a_flow(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    on = await _switch(client, tenant_a, connection_a, "webhook/ticket_updates", True)
    assert on.status_code == 200, on.text
    assert on.json()["flows"] == WEBHOOK_FLOWS | {"webhook/ticket_updates": True}
    read = await client.get(f"/v1/connections/{connection_a}", headers=tenant_a.headers())
    assert read.json()["flows"]["webhook/ticket_updates"] is True

    off = await _switch(client, tenant_a, connection_a, "webhook/ticket_updates", False)
    assert off.json()["flows"] == WEBHOOK_FLOWS

    async with services.sessions.begin() as session:
        rows = (await session.execute(select(FlowEnablement.flow, FlowEnablement.enabled))).all()
    assert [tuple(row) for row in rows] == [("webhook/ticket_updates", False)]
    actions = [(e.action, e.details) for e in await _audit(services, tenant_a.id)]
    flow = "webhook/ticket_updates"
    assert actions[-2:] == [
        (
            "connection.flow.enable",
            {"flow": flow, "before": {"enabled": False}, "after": {"enabled": True}},
        ),
        (
            "connection.flow.disable",
            {"flow": flow, "before": {"enabled": True}, "after": {"enabled": False}},
        ),
    ]


async def test_an_invalid_flow_is_refused_with_its_problems_located(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    response = await _switch(client, tenant_a, connection_a, "webhook/ticket_broken", True)
    body = assert_problem(response, 422, "flow-invalid")
    (problem,) = body["problems"]
    assert problem["code"] == "prompt-missing"
    assert (problem["line"], problem["column"]) == (8, 9)
    assert problem["file"].endswith("ticket_broken.yaml")
    assert "web_test@9" in body["detail"]
    async with services.sessions.begin() as session:
        rows = (await session.execute(select(FlowEnablement.flow))).all()
    assert rows == []  # nothing enabled
    # Disabling is always allowed: an admin can switch off a flow that broke.
    off = await _switch(client, tenant_a, connection_a, "webhook/ticket_broken", False)
    assert off.status_code == 200


async def test_concurrent_switches_leave_one_row(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    responses = await asyncio.gather(
        *(_switch(client, tenant_a, connection_a, "webhook/ticket_triage", True) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}
    async with services.sessions.begin() as session:
        count = await session.scalar(select(func.count()).select_from(FlowEnablement))
    assert count == 1


async def test_unknown_flow_is_not_found(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    before = await snapshot(services)
    response = await _switch(client, tenant_a, connection_a, "webhook/no_such_flow", True)
    assert_problem(response, 404, "not-found")
    assert await snapshot(services) == before


async def test_flow_of_another_connector_is_refused_with_the_reason(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    before = await snapshot(services)
    response = await _switch(client, tenant_a, connection_a, "hubspot/contact_enrich", True)
    problem = assert_problem(response, 422, "invalid-request")
    assert "'hubspot'" in problem["detail"]
    assert "'webhook'" in problem["detail"]
    assert await snapshot(services) == before


async def test_flow_switch_body_is_validated(
    client: httpx.AsyncClient, tenant_a: TenantKeys, connection_a: str
) -> None:
    response = await client.put(
        f"/v1/connections/{connection_a}/flows/webhook/ticket_updates",
        json={"enabled": "maybe"},
        headers=tenant_a.headers(),
    )
    assert_problem(response, 422, "invalid-request")
