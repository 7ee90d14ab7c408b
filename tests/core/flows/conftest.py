"""A world for flow tests: the test connector's records API and the Anthropic sandbox on
real sockets, a tenant with a webhook connection, and the fixture flow enabled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.base import ChangeEvent, ChangeType
from connectors.registry import ConnectorRegistry
from connectors.webhook.sandbox import RecordsSandbox
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import Connection, FlowEnablement
from core.flows.catalog import FlowCatalog
from core.flows.engine import run_flow
from core.handlers import JobContext, Outcome
from core.ingest import FLOW_JOB, store_events
from core.queue import ClaimedJob, JobQueue
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.services import Services, build_services
from core.settings import Settings

FLOW = "webhook/ticket_updates"
SECRET_NOTE = "internal: customer owes 12,000 EUR, do not share"
TICKET = {
    "subject": "Printer on fire",
    "body": "The office printer caught fire after the last firmware update.",
    "customer_email": "ada@example.com",
    "status": "open",
    "internal_note": SECRET_NOTE,  # not in the flow's inputs: must never leave
}


class Recording:
    """Wraps the Anthropic sandbox's ASGI app and keeps every Messages request body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/messages":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture
def claude() -> AnthropicSandbox:
    return AnthropicSandbox(latency_scale=0, seed=11)


@pytest.fixture
def recording(claude: AnthropicSandbox) -> Recording:
    return Recording(claude.app)


@pytest.fixture
def tool() -> RecordsSandbox:
    return RecordsSandbox({"ticket": {"T-1": TICKET}}, token="tool-token")


@dataclass
class World:
    services: Services
    tenant_id: str
    connection_id: str
    tool: RecordsSandbox
    claude: AnthropicSandbox
    upstream: Recording
    serial: int = 0

    async def change(self, fields: dict[str, Any] | None = None, **event: Any) -> int:
        """The tool changes ticket T-1 and reports it; returns the flow job's id."""
        if fields is not None:
            self.tool.put("ticket", "T-1", fields)
        self.serial += 1
        change = ChangeEvent(
            platform_event_id=f"evt-{self.serial}",
            object="ticket",
            record_id="T-1",
            change_type=event.get("change_type", ChangeType.UPDATED),
            changed_fields=tuple(event.get("changed_fields", ("body",))),
            data=event.get("data", {}),
        )
        async with self.services.sessions.begin() as session:
            connection = await session.get(Connection, self.connection_id)
            assert connection is not None
            result = await store_events(
                session, connection, [change], self.services.flows, trace_id="a" * 32
            )
        (job_id,) = result.jobs
        return job_id

    async def claim(self, job_id: int) -> ClaimedJob:
        queue = JobQueue(self.services.sessions, worker_id="test", lease_seconds=60)
        (job,) = [j for j in await queue.claim([FLOW_JOB], 100) if j.id == job_id]
        return job

    async def run(self, job: ClaimedJob) -> Outcome:
        return await run_flow(JobContext(job, self.services))

    async def set_enabled(self, enabled: bool) -> None:
        async with self.services.sessions.begin() as session:
            row = await session.get(FlowEnablement, (self.connection_id, FLOW))
            if row is None:
                session.add(
                    FlowEnablement(
                        connection_id=self.connection_id,
                        flow=FLOW,
                        tenant_id=self.tenant_id,
                        enabled=enabled,
                    )
                )
            else:
                row.enabled = enabled


@pytest.fixture
async def world(
    settings: Settings, claude: AnthropicSandbox, recording: Recording, tool: RecordsSandbox
) -> AsyncIterator[World]:
    with SandboxServer(recording) as upstream, SandboxServer(tool.app) as records:
        services = build_services(
            settings.model_copy(
                update={
                    "anthropic_base_url": upstream.url,
                    "anthropic_api_key": SecretStr("sk-ant-sandbox"),
                }
            ),
            registry=ConnectorRegistry.from_entry_points(),
            flows=FlowCatalog.load(settings.mappings_dir),
        )
        try:
            async with services.sessions.begin() as session:
                tenant = await create_tenant(session, "acme")
                connection = await create_connection(
                    session,
                    tenant_id=tenant.id,
                    factory=services.connectors.registry.require("webhook"),
                    name="tickets",
                    config={"base_url": records.url, "timeout_seconds": 5},
                    secrets={"signing_secret": "s" * 24, "api_token": "tool-token"},
                    keyring=services.keyring,
                )
            built = World(services, tenant.id, connection.id, tool, claude, recording)
            await built.set_enabled(True)
            yield built
        finally:
            await services.aclose()
