"""Helpers for the web tests: tenants with keys, signed deliveries, row snapshots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select, update

from core import reviews, signing
from core.auth import create_api_key, create_tenant
from core.db.models import (
    AuditEntry,
    Connection,
    Delivery,
    Event,
    FlowEnablement,
    Job,
    JobStatus,
    Role,
    Subscription,
)
from core.services import Services

PROBLEM = "application/problem+json"
SIGNING_SECRET = "whsec-0123456789abcdef-not-for-prod"


@dataclass(frozen=True)
class TenantKeys:
    id: str
    name: str
    keys: dict[Role, str]
    key_ids: dict[Role, str]

    def headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}


async def make_tenant(services: Services, name: str) -> TenantKeys:
    keys: dict[Role, str] = {}
    key_ids: dict[Role, str] = {}
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, name)
        for role in Role:
            row, plaintext = await create_api_key(session, tenant.id, role, name=role.value)
            keys[role] = plaintext
            key_ids[role] = row.id
    return TenantKeys(tenant.id, name, keys, key_ids)


def ticket(
    event_id: str,
    change: str = "created",
    *,
    record_id: str = "T-1",
    changed_fields: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "ticket",
        "record_id": record_id,
        "type": change,
        "changed_fields": changed_fields or [],
        "occurred_at": "2025-01-02T03:04:05Z",
        "data": {"subject": "Printer on fire"},
    }


def body_of(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


async def deliver(
    client: httpx.AsyncClient,
    connection_id: str,
    body: bytes,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    signed = {
        signing.HEADER: signing.sign(secret, body, timestamp),
        "content-type": "application/json",
        **(headers or {}),
    }
    return await client.post(f"/hooks/{connection_id}", content=body, headers=signed)


async def create_webhook_connection(
    client: httpx.AsyncClient,
    tenant: TenantKeys,
    name: str = "helpdesk",
    secret: str = SIGNING_SECRET,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/connections",
        json={
            "connector": "webhook",
            "name": name,
            "config": {},
            "secrets": {"signing_secret": secret},
        },
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def enable_flow(
    client: httpx.AsyncClient, tenant: TenantKeys, connection_id: str, flow: str, on: bool = True
) -> None:
    response = await client.put(
        f"/v1/connections/{connection_id}/flows/{flow}",
        json={"enabled": on},
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text


COUNTED = {
    "events": Event,
    "jobs": Job,
    "connections": Connection,
    "flow_enablements": FlowEnablement,
    "subscriptions": Subscription,
    "deliveries": Delivery,
    "audit_log": AuditEntry,
}


async def row_counts(services: Services) -> dict[str, int]:
    async with services.sessions.begin() as session:
        return {
            name: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in COUNTED.items()
        }


async def snapshot(services: Services) -> dict[str, Any]:
    """Every row's state that a request could change, for before/after comparisons."""
    async with services.sessions.begin() as session:
        return {
            "counts": {
                name: int(await session.scalar(select(func.count()).select_from(model)) or 0)
                for name, model in COUNTED.items()
            },
            "jobs": sorted((await session.execute(select(Job.id, Job.status, Job.attempts))).all()),
            "connections": sorted(
                (
                    await session.execute(
                        select(Connection.id, Connection.name, Connection.secrets_encrypted)
                    )
                ).all()
            ),
            "flows": sorted(
                (
                    await session.execute(
                        select(
                            FlowEnablement.connection_id,
                            FlowEnablement.flow,
                            FlowEnablement.enabled,
                        )
                    )
                ).all()
            ),
            "subscriptions": sorted(
                (await session.execute(select(Subscription.id, Subscription.active))).all()
            ),
            "deliveries": sorted(
                (
                    await session.execute(select(Delivery.id, Delivery.status, Delivery.attempts))
                ).all()
            ),
        }


def assert_problem(response: httpx.Response, status: int, problem_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{problem_type}", body
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["trace_id"] == response.headers["x-trace-id"]
    return body


async def propose_review(
    services: Services, tenant_id: str, job_id: int, connection_id: str, record_id: str = "a-2"
) -> str:
    """A pending review item for ``job_id`` (as the flow engine proposes one); its id.

    No expected version: approving it writes blind, so no records API is needed."""
    async with services.sessions.begin() as session:
        item = await reviews.propose(
            session,
            tenant_id=tenant_id,
            job_id=job_id,
            flow="webhook/ticket_updates",
            connection_id=connection_id,
            object_name="ticket",
            record_id=record_id,
            expected_version=None,
            before={"category": None},
            patch={"category": "bug", "summary": "Printer on fire"},
            output={"category": "bug", "summary": "Printer on fire"},
            reasons=["review rule: record.status == 'escalated'"],
            trace_id="a" * 32,
        )
        await session.execute(
            update(Job).where(Job.id == job_id).values(status=JobStatus.AWAITING_REVIEW.value)
        )
        return item.id
