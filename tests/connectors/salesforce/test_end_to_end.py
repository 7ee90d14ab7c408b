"""End to end: a Lead and a Case change in the SANDBOX org → an Outbound Message (SOAP) to
Switchyard's ``POST /hooks/{id}`` → the SOAP Ack → the sample flows
(mappings/salesforce/lead_qualification.yaml, case_summary.yaml) on a real worker → the
Anthropic SANDBOX → the write-back in the org. The flows are checked against the org's
describe before they are enabled. The write-back's own outbound message starts nothing;
under a storm of the org's faults no job fails and no write is lost or doubled."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update

from connectors.registry import ConnectorRegistry
from connectors.salesforce import SalesforceConnectorFactory
from connectors.salesforce.demo import CASE_FIELDS, LEAD_FIELDS
from connectors.salesforce.sandbox import INTEGRATION_USER, SalesforceSandbox
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from core.auth import create_api_key, create_tenant
from core.connections import create_connection
from core.db.models import FINISHED, Event, Job, JobStatus, Role
from core.db.types import utcnow
from core.flows.catalog import FlowCatalog
from core.jobkinds import builtin_handlers
from core.sandbox.anthropic import AnthropicSandbox
from core.sandbox.server import SandboxServer
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker
from tests.connectors.salesforce.conftest import SECRETS, lead_id, sf_config

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
LEAD_FLOW, CASE_FLOW = "salesforce/lead_qualification", "salesforce/case_summary"
FLOWS = (CASE_FLOW, LEAD_FLOW)
PUBLIC = "http://switchyard.test"
PARKED = (JobStatus.AWAITING_REVIEW,)
LEAD_WRITES = {"Rating", "Qualification_Reason__c"}
CASE_WRITES = {"AI_Summary__c", "AI_Next_Step__c", "AI_Sentiment__c"}


def registry() -> ConnectorRegistry:
    # Once pyproject declares the entry point, the factory is loaded from it.
    installed = ConnectorRegistry.from_entry_points()
    return ConnectorRegistry.from_entry_points(
        extra=[] if "salesforce" in installed else [SalesforceConnectorFactory()]
    )


@dataclass
class Switchyard:
    services: Services
    org: SalesforceSandbox
    client: httpx.AsyncClient
    worker: Worker
    connection_id: str
    instance_url: str

    async def jobs(self) -> list[Job]:
        async with self.services.sessions() as session:
            jobs = await session.scalars(select(Job).where(Job.kind == "flow.run"))
            return sorted(jobs, key=lambda j: j.id)

    async def pass_retry_waits(self) -> None:
        """While no job runs, bring the queued retries forward: the back-off the org's
        faults ask for (300 s after REQUEST_LIMIT_EXCEEDED) passes at once, as it would on
        a simulated clock. The order of attempts is the real one."""
        async with self.services.sessions.begin() as session:
            running = await session.scalar(
                select(func.count()).select_from(Job).where(Job.status == JobStatus.RUNNING.value)
            )
            if running:
                return
            moved = await session.execute(
                update(Job)
                .where(Job.status == JobStatus.QUEUED.value, Job.run_at > utcnow())
                .values(run_at=utcnow())
            )
        if moved.rowcount:  # type: ignore[attr-defined]
            self.worker.wake()

    async def settle(self, expected: int, timeout: float = 30) -> list[Job]:
        """Deliver outbound messages until ``expected`` flow jobs exist and all have
        finished, and the org has nothing left to send."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.org.deliver_outbound(self.client, self.instance_url)
            jobs = await self.jobs()
            settled = all(j.status in (*FINISHED, *PARKED) for j in jobs)
            if len(jobs) >= expected and settled and not self.org.pending_notifications():
                return jobs
            await self.pass_retry_waits()
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"jobs did not settle: {[(j.id, j.status, j.last_error) for j in await self.jobs()]}"
        )


@pytest.fixture
def claude() -> Iterator[str]:
    # The sandbox "model" answers each request the same way for a seed; with this one the
    # leads' ratings are confident enough to be written without review.
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=2).app) as upstream:
        yield upstream.url


@pytest.fixture
async def switchyard(
    settings: Settings,
    org: SalesforceSandbox,
    server: TlsSandboxServer,
    tls: TlsFiles,
    claude: str,
) -> AsyncIterator[Switchyard]:
    services = build_services(
        settings.model_copy(
            update={
                "anthropic_base_url": claude,
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
            _, admin_key = await create_api_key(session, tenant.id, Role.ADMIN, name="admin")
            connection = await create_connection(
                session,
                tenant_id=tenant.id,
                factory=services.connectors.registry.require("salesforce"),
                name="salesforce",
                config=sf_config(
                    server,
                    tls,
                    external_id_fields={"Lead": "Switchyard_Key__c", "Case": "Switchyard_Key__c"},
                    writeback_fields={"Lead": sorted(LEAD_WRITES), "Case": sorted(CASE_WRITES)},
                ),
                secrets=SECRETS,
                keyring=services.keyring,
            )
        hook = f"{PUBLIC}/hooks/{connection.id}"
        # The rules an admin sets up: "created, and every time it's edited" → this hook.
        org.add_outbound_rule("Lead", hook, LEAD_FIELDS)
        org.add_outbound_rule("Case", hook, CASE_FIELDS)
        transport = httpx.ASGITransport(app=create_app(services))
        worker = Worker(services, builtin_handlers(), run_scheduler=False, concurrency=4)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            # As an admin enables them: refused unless the org's describe has every field the
            # flow reads and writes, updateable, with the picklist values its answers use.
            for flow in FLOWS:
                enabled = await client.put(
                    f"/v1/connections/{connection.id}/flows/{flow}",
                    json={"enabled": True},
                    headers={"authorization": f"Bearer {admin_key}"},
                )
                assert enabled.status_code == 200, enabled.text
            yield Switchyard(services, org, client, worker, connection.id, server.url)
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await services.aclose()
        # Closing a requests session only drops its pools (urllib3 2): their sockets close
        # when collected, and the org's TLS server waits for them when it stops.
        gc.collect()


def _written(org: SalesforceSandbox, record_id: str) -> list[dict[str, Any]]:
    """The saves the org applied to the record through its API (only Switchyard calls it)."""
    return [fields for _, written, fields in org.writes if written == record_id]


def _assert_written_back(org: SalesforceSandbox, job: Job) -> None:
    """The job wrote its answer to its record exactly once (or waits for a reviewer)."""
    object_name = "Lead" if job.flow == LEAD_FLOW else "Case"
    record_id = str(job.payload["record_id"])
    saves = _written(org, record_id)
    if job.status == JobStatus.AWAITING_REVIEW:  # a low-confidence rating waits for a person
        assert job.flow == LEAD_FLOW
        assert saves == []
        return
    assert job.status == JobStatus.DONE, (job.id, job.status, job.last_error)
    assert len(saves) == 1, saves
    result = job.result or {}
    [patch] = [step for step in result["steps"] if step["step"] == "patch"]
    assert saves[0] == patch["fields"]  # what the flow decided is what the org holds
    record, output = org.record(object_name, record_id), result["output"]
    assert record["LastModifiedById"] == INTEGRATION_USER
    assert {name: record[name] for name in saves[0]} == saves[0]
    if object_name == "Lead":
        assert set(saves[0]) == LEAD_WRITES
        assert record["Rating"] == output["rating"]
        assert record["Rating"] in ("Hot", "Warm", "Cold")
        assert record["Qualification_Reason__c"] == output["reason"][:255]
    else:
        assert set(saves[0]) == CASE_WRITES
        assert record["AI_Summary__c"] == output["summary"]
        assert record["AI_Next_Step__c"] == output["next_step"][:255]
        assert record["AI_Sentiment__c"] == output["sentiment"]
        assert record["AI_Sentiment__c"] in ("positive", "neutral", "negative")


async def _stored_events(switchyard: Switchyard) -> set[str]:
    async with switchyard.services.sessions() as session:
        return set(await session.scalars(select(Event.platform_event_id)))


async def test_a_change_in_salesforce_is_answered_and_written_back_once(
    switchyard: Switchyard,
) -> None:
    org = switchyard.org
    lead = lead_id(org)
    case = org.ids("Case")[0]
    org.change(
        "Lead",
        lead,
        Description="We run 300 trucks and need route optimisation live before our Q3 "
        "budget sign-off. Please send pricing and book a demo for our COO next week.",
    )
    org.change("Case", case, Status="Working")
    jobs = await switchyard.settle(expected=2)

    assert sorted(j.flow or "" for j in jobs) == sorted(FLOWS)  # the write-backs start nothing
    assert [j.status for j in jobs] == [JobStatus.DONE, JobStatus.DONE]
    assert org.deliveries
    assert all(acked for _, acked in org.deliveries)  # each message got the SOAP Ack
    for job in jobs:
        _assert_written_back(org, job)
    # The write-backs' own outbound messages were delivered and acknowledged, and dropped
    # before storage: the integration user made those changes.
    own = [n for n in org.delivered if n.fields["LastModifiedById"] == INTEGRATION_USER]
    assert sorted(n.fields["Id"] for n in own) == sorted([lead, case])
    stored = await _stored_events(switchyard)
    assert len(stored) == 2
    assert not {f"om:{n.notification_id}" for n in own} & stored
    # Nothing is left to send, and another delivery round starts nothing.
    assert await org.deliver_outbound(switchyard.client, switchyard.instance_url) == 0
    assert len(await switchyard.jobs()) == 2


async def test_under_a_fault_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard,
) -> None:
    org = switchyard.org
    for n, (company, employees) in enumerate([("Quayside Cold Chain", 1200), ("Ostra", 35)]):
        org.create(
            "Lead",
            LastName=f"Buyer {n}",
            Company=company,
            Title="COO",
            Industry="Logistics",
            NumberOfEmployees=employees,
            LeadSource="Partner Referral",
            Status="Open - Not Contacted",
            Description=f"Replacing our routing tool this quarter for {employees} staff; "
            "budget approved. Need a proposal by Friday.",
        )
    for subject in ("Dashboard blank after update", "Cannot add a second admin"):
        org.create(
            "Case",
            Subject=subject,
            Status="New",
            Priority="Medium",
            Origin="Phone",
            Description=f"{subject}. It affects all of our users and we need it fixed today.",
        )
    for n, lead in enumerate(org.ids("Lead")[:2]):
        org.change("Lead", lead, Description=f"Asked for a quote for {40 + n * 60} seats.")
    for case in org.ids("Case")[:2]:
        org.change("Case", case, Status="Working")
    leads, cases = org.ids("Lead"), org.ids("Case")
    # The storm, across every job's calls to the org: expired sessions, locked rows, the
    # daily API limit, outages and internal errors; then a 503 on a save and every case
    # row locked when it is saved (each of these fails one attempt of one job).
    org.expire_sessions()
    for code in ("UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
        org.fail_next(code, times=2)
    org.fail_next("UNKNOWN_EXCEPTION", times=2)
    org.fail_next("SERVER_UNAVAILABLE", methods=("PATCH",))
    for case in cases:
        org.lock_record(case)
    storm = 9 + len(cases)
    jobs = await switchyard.settle(expected=len(leads) + len(cases), timeout=45)

    # One job per change: neither the retries nor the write-backs start another.
    assert sorted(str(j.payload["record_id"]) for j in jobs) == sorted([*leads, *cases])
    assert all(j.status in (JobStatus.DONE, *PARKED) for j in jobs), [
        (j.id, j.status, j.last_error) for j in jobs
    ]
    assert [j.status for j in jobs if j.flow == CASE_FLOW] == [JobStatus.DONE] * len(cases)
    # Every fault failed one attempt, and the queue retried it instead of giving up.
    assert sum(j.attempts - 1 for j in jobs) >= storm
    assert org.token_requests == 2  # the first login, and one refresh shared by every job
    for job in jobs:
        _assert_written_back(org, job)
    assert {record_id for _, record_id, _ in org.writes} <= {*leads, *cases}
    for case in cases:  # its locked save was refused, and the retry's save applied once
        patches = [path for method, path in org.requests if method == "PATCH"]
        assert len([path for path in patches if path.endswith(f"/Case/{case}")]) >= 2
        assert len(_written(org, case)) == 1
