"""End to end: a record changes in the SANDBOX portal → a signed v3 webhook batch →
Switchyard's ``POST /hooks/{id}`` → the sample flows (mappings/hubspot/contact_intent.yaml,
deal_risk.yaml) on a real worker → the Anthropic SANDBOX → the write-back in the portal.
The write-back's own webhook starts nothing; under a 429 storm no job fails and no write
is lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from connectors.hubspot import HubSpotConnectorFactory
from connectors.hubspot.sandbox import HubSpotSandbox, SandboxServer
from connectors.registry import ConnectorRegistry
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import FINISHED, FlowEnablement, Job, JobStatus
from core.flows.catalog import FlowCatalog
from core.jobkinds import builtin_handlers
from core.sandbox.anthropic import AnthropicSandbox
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker
from tests.connectors.hubspot.conftest import CLIENT_SECRET, TOKEN, config_for

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
FLOWS = ("hubspot/contact_intent", "hubspot/deal_risk")
PUBLIC = "http://switchyard.test"
PARKED = (JobStatus.AWAITING_REVIEW,)


def registry() -> ConnectorRegistry:
    # Once pyproject declares the entry point, the factory is loaded from it.
    installed = ConnectorRegistry.from_entry_points()
    return ConnectorRegistry.from_entry_points(
        extra=[] if "hubspot" in installed else [HubSpotConnectorFactory()]
    )


@dataclass
class Switchyard:
    services: Services
    portal: HubSpotSandbox
    client: httpx.AsyncClient
    connection_id: str

    async def jobs(self) -> list[Job]:
        async with self.services.sessions() as session:
            return list(await session.scalars(select(Job).where(Job.kind == "flow.run")))

    async def settle(self, expected: int, timeout: float = 30) -> list[Job]:
        """Deliver webhooks until ``expected`` flow jobs exist and all have finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.portal.deliver(self.client)
            jobs = await self.jobs()
            settled = all(j.status in (*FINISHED, *PARKED) for j in jobs)
            if len(jobs) >= expected and settled and not self.portal.outbox.pending:
                return jobs
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"jobs did not settle: {[(j.id, j.status) for j in await self.jobs()]}"
        )


@pytest.fixture
async def switchyard(settings: Settings) -> AsyncIterator[Switchyard]:
    portal = HubSpotSandbox(private_tokens=(TOKEN,), client_secret=CLIENT_SECRET, window_ms=200)
    claude = AnthropicSandbox(latency_scale=0, seed=5)
    with SandboxServer(claude.app) as upstream, SandboxServer(portal.app) as api:
        services = build_services(
            settings.model_copy(
                update={
                    "anthropic_base_url": upstream.url,
                    "anthropic_api_key": SecretStr("sk-ant-sandbox"),
                    "mappings_dir": MAPPINGS,
                    "public_url": PUBLIC,
                }
            ),
            registry=registry(),
            flows=FlowCatalog.load(MAPPINGS),
        )
        try:
            async with services.sessions.begin() as session:
                tenant = await create_tenant(session, "acme")
                connection = await create_connection(
                    session,
                    tenant_id=tenant.id,
                    factory=services.connectors.registry.require("hubspot"),
                    name="hubspot",
                    config=config_for(api.url, app_id=portal.app_id, portal_id=portal.portal_id),
                    secrets={"client_secret": CLIENT_SECRET, "access_token": TOKEN},
                    keyring=services.keyring,
                )
                for flow in FLOWS:
                    session.add(
                        FlowEnablement(
                            connection_id=connection.id,
                            flow=flow,
                            tenant_id=tenant.id,
                            enabled=True,
                        )
                    )
            portal.subscribe(f"{PUBLIC}/hooks/{connection.id}")
            transport = httpx.ASGITransport(app=create_app(services))
            worker = Worker(services, builtin_handlers(), run_scheduler=False, concurrency=4)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
                yield Switchyard(services, portal, client, connection.id)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            await services.aclose()


def _ids(portal: HubSpotSandbox, object_type: str) -> list[str]:
    return sorted(portal.store.records[object_type], key=int)


async def test_a_change_in_hubspot_is_answered_and_written_back_once(
    switchyard: Switchyard,
) -> None:
    portal = switchyard.portal
    contact = _ids(portal, "contacts")[0]
    deal = _ids(portal, "deals")[1]
    portal.change("contacts", contact, {"message": "Please send a quote for 80 seats."})
    portal.change("deals", deal, {"dealstage": "decisionmakerboughtin"})
    jobs = await switchyard.settle(expected=2)
    assert sorted(j.flow or "" for j in jobs) == list(FLOWS)  # the write-backs start nothing
    assert all(j.status in (JobStatus.DONE, JobStatus.AWAITING_REVIEW) for j in jobs)
    written = portal.record("contacts", contact) or {}
    assert written["switchyard_intent"] in ("buying", "researching", "support", "not_a_fit")
    assert written["switchyard_summary"]
    deal_job = next(j for j in jobs if j.flow == "hubspot/deal_risk")
    deal_now = portal.record("deals", deal) or {}
    if deal_job.status is JobStatus.DONE:  # a high risk waits for a reviewer instead
        assert deal_now["switchyard_risk_level"] in ("low", "medium")
    assert len([w for w in portal.writes if w[1] == contact]) == 1
    # The write-backs' own webhooks arrived and were dropped before storage.
    own = [e for e in portal.outbox.delivered if e["changeSource"] == "INTEGRATION"]
    assert own
    assert all(e["sourceId"] == str(portal.app_id) for e in own)


async def test_under_a_429_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard,
) -> None:
    portal = switchyard.portal
    contacts = _ids(portal, "contacts")
    for n, contact in enumerate(contacts):
        portal.change("contacts", contact, {"message": f"Need pricing for {10 + n} seats"})
    portal.inject(429, times=12)  # a storm across every job's HubSpot calls
    jobs = await switchyard.settle(expected=len(contacts), timeout=45)
    assert [j.status for j in jobs] == [JobStatus.DONE] * len(contacts)
    for contact in contacts:
        assert (portal.record("contacts", contact) or {})["switchyard_intent"]
        assert len([w for w in portal.writes if w[1] == contact]) == 1
