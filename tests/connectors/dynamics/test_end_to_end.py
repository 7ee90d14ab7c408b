"""End to end: a row changes in the SANDBOX Dataverse environment → its webhook (WebhookKey
auth) → Switchyard's ``POST /hooks/{id}`` → the sample flows (mappings/dynamics/*.yaml) on a
real worker → the Anthropic SANDBOX → a review item (ERP writes are always reviewed) →
a reviewer's decision → the worker writes → the value is in the row, exactly once. The
write-back's own webhook starts nothing; rejected and expired items write nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from connectors.dynamics import DynamicsConnectorFactory
from connectors.dynamics.sandbox import APP_USER, DataverseSandbox
from connectors.registry import ConnectorRegistry
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from core import review_decisions
from core.auth import Principal, create_api_key, create_tenant
from core.connections import create_connection, get_connection
from core.db.models import FlowEnablement, Job, JobStatus, ReviewItem, ReviewStatus, Role
from core.flows.catalog import FlowCatalog
from core.flows.enabling import check_flow_for_connection
from core.jobkinds import builtin_handlers
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker
from tests.connectors.dynamics.conftest import SECRETS, WEBHOOK_SECRET, dv_config

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
FLOWS = ("dynamics/account_health", "dynamics/case_triage")
PUBLIC = "http://switchyard.test"


def registry() -> ConnectorRegistry:
    # Once pyproject declares the entry point, the factory is loaded from it.
    installed = ConnectorRegistry.from_entry_points()
    return ConnectorRegistry.from_entry_points(
        extra=[] if "dynamics" in installed else [DynamicsConnectorFactory()]
    )


@dataclass
class Switchyard:
    services: Services
    environment: DataverseSandbox
    client: httpx.AsyncClient
    connection_id: str
    tenant_id: str

    async def jobs(self) -> list[Job]:
        async with self.services.sessions() as session:
            return list(await session.scalars(select(Job).where(Job.kind == "flow.run")))

    async def until(self, done: Callable[[list[Job]], bool], timeout: float = 30) -> list[Job]:
        """Deliver webhooks until ``done(jobs)`` holds and nothing is left to send."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.environment.deliver(self.client)
            jobs = await self.jobs()
            if done(jobs) and not self.environment.outbox.pending:
                return jobs
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"jobs did not settle: {[(j.id, j.status) for j in await self.jobs()]}"
        )

    async def review_item(self, job_id: int) -> ReviewItem:
        async with self.services.sessions() as session:
            item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job_id))
        assert item is not None
        return item

    async def reviewer(self) -> Principal:
        async with self.services.sessions.begin() as session:
            row, _ = await create_api_key(session, self.tenant_id, Role.REVIEWER, name="rev")
        return Principal(self.tenant_id, row.id, Role.REVIEWER)


def _parked(expected: int) -> Callable[[list[Job]], bool]:
    return lambda jobs: (
        len(jobs) >= expected and all(j.status == JobStatus.AWAITING_REVIEW for j in jobs)
    )


def _finished(jobs: list[Job]) -> bool:
    return bool(jobs) and all(j.status == JobStatus.DONE for j in jobs)


@pytest.fixture
async def switchyard(settings: Settings, tls: TlsFiles) -> AsyncIterator[Switchyard]:
    environment = DataverseSandbox()
    claude = AnthropicSandbox(latency_scale=0, seed=7)
    with SandboxServer(claude.app) as upstream, TlsSandboxServer(environment.app, tls) as api:
        environment.base_url = api.url
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
            config = dv_config(api.url, tls.ca_file, webhook_auth={"kind": "webhookkey"})
            async with services.sessions.begin() as session:
                tenant = await create_tenant(session, "acme")
                connection = await create_connection(
                    session,
                    tenant_id=tenant.id,
                    factory=services.connectors.registry.require("dynamics"),
                    name="dynamics",
                    config=config,
                    secrets=SECRETS,
                    keyring=services.keyring,
                )
            async with services.sessions() as session:
                row = await get_connection(session, connection.id, tenant.id)
            for flow in FLOWS:
                entry = services.flows.get(flow)
                assert entry is not None
                # The flows validate against the sandbox's EntityDefinitions.
                await check_flow_for_connection(services, entry, row)
            async with services.sessions.begin() as session:
                for flow in FLOWS:
                    session.add(
                        FlowEnablement(
                            connection_id=connection.id,
                            flow=flow,
                            tenant_id=tenant.id,
                            enabled=True,
                        )
                    )
            environment.register_webhook(
                f"{PUBLIC}/hooks/{connection.id}", kind="webhookkey", key=WEBHOOK_SECRET
            )
            transport = httpx.ASGITransport(app=create_app(services))
            worker = Worker(services, builtin_handlers(), run_scheduler=False, concurrency=4)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
                yield Switchyard(services, environment, client, connection.id, tenant.id)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            await services.aclose()


async def test_an_approved_proposal_is_written_exactly_once(switchyard: Switchyard) -> None:
    environment = switchyard.environment
    account = environment.ids("account")[1]
    case = environment.ids("incident")[1]
    environment.change("account", account, {"description": "Two invoices disputed again."})
    environment.change("incident", case, {"description": "All scanners down, 60 people idle."})
    jobs = await switchyard.until(_parked(2))
    assert sorted(j.flow or "" for j in jobs) == list(FLOWS)
    assert environment.writes == []  # nothing is written before a person approves
    reviewer = await switchyard.reviewer()
    items = [await switchyard.review_item(j.id) for j in jobs]
    assert all(item.triggered_by and item.triggered_by.startswith("platform:") for item in items)
    for item in items:
        await review_decisions.approve(switchyard.services, item.id, reviewer, note="ok")
    jobs = await switchyard.until(_finished)
    assert len(jobs) == 2  # the write-backs' own webhooks started nothing
    health = environment.record("account", account) or {}
    assert isinstance(health["new_healthscore"], int)
    assert health["new_healthsummary"]
    triage = environment.record("incident", case) or {}
    assert triage["new_aisuggestedpriority"] in (1, 2, 3)
    assert triage["prioritycode"] == 2  # never overwritten
    assert sorted(w[1] for w in environment.writes) == sorted([account, case])
    own = [b for b in environment.outbox.delivered if b["InitiatingUserId"] == APP_USER]
    assert own  # the write-backs were delivered too, and dropped before storage
    for item in items:
        assert (await switchyard.review_item(item.job_id)).status == ReviewStatus.WRITTEN.value


async def test_a_rejected_proposal_writes_nothing(switchyard: Switchyard) -> None:
    environment = switchyard.environment
    account = environment.ids("account")[0]
    environment.change("account", account, {"revenue": 52_000_000.0})
    [job] = await switchyard.until(_parked(1))
    item = await switchyard.review_item(job.id)
    await review_decisions.reject(switchyard.services, item.id, await switchyard.reviewer(), "no")
    await switchyard.until(_finished)
    assert environment.writes == []
    assert (environment.record("account", account) or {})["new_healthscore"] is None


async def test_an_expired_proposal_writes_nothing(switchyard: Switchyard) -> None:
    environment = switchyard.environment
    case = environment.ids("incident")[0]
    environment.change("incident", case, {"title": "Invoice 2024-1187 charged three times"})
    [job] = await switchyard.until(_parked(1))
    async with switchyard.services.sessions.begin() as session:  # nobody decided in time
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.job_id == job.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert await review_decisions.expire_due(switchyard.services) == 1
    await switchyard.until(_finished)
    assert environment.writes == []
    item = await switchyard.review_item(job.id)
    assert item.status == ReviewStatus.EXPIRED.value


async def test_under_a_429_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard,
) -> None:
    environment = switchyard.environment
    accounts = environment.ids("account")
    for n, account in enumerate(accounts):
        environment.change("account", account, {"numberofemployees": 100 + n})
    environment.inject(429, times=6, retry_after=0)  # across every job's Dataverse calls
    jobs = await switchyard.until(_parked(len(accounts)))
    reviewer = await switchyard.reviewer()
    items = [await switchyard.review_item(job.id) for job in jobs]
    for item in items[:-1]:
        await review_decisions.approve(switchyard.services, item.id, reviewer)
    environment.inject(429, times=3, retry_after=0, code="0x80072321")  # while writes run
    await review_decisions.approve(switchyard.services, items[-1].id, reviewer)
    jobs = await switchyard.until(_finished)
    assert len(jobs) == len(accounts)
    assert sorted(w[1] for w in environment.writes) == sorted(accounts)
    for account in accounts:
        assert isinstance((environment.record("account", account) or {})["new_healthscore"], int)
