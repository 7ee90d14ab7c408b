"""End to end: a customer's order email arrives in the SANDBOX SAP system → an Event Mesh
style CloudEvent → Switchyard's ``POST /hooks/{id}`` → the sample flow
mappings/sap/sales_order_draft.yaml on a real worker → the Anthropic SANDBOX → a review
item (ERP writes always wait) → a reviewer approves (correcting the draft) → the worker
creates the sales order in SAP, exactly once. Rejected and expired proposals write
nothing; a delivery without the shared secret is refused and stores nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update

from connectors.registry import ConnectorRegistry
from connectors.sap import SapConnectorFactory
from connectors.sap.demo import demo_config
from connectors.sap.sandbox import SandboxServer, SapSandbox
from connectors.sap.webhooks import SECRET_HEADER
from core import review_decisions
from core.auth import Principal, create_api_key, create_tenant
from core.connections import create_connection
from core.db.models import FINISHED, Event, FlowEnablement, Job, JobStatus, ReviewItem, Role
from core.flows.catalog import FlowCatalog
from core.flows.enabling import check_flow_for_connection
from core.housekeeping import housekeep
from core.jobkinds import builtin_handlers
from core.sandbox.anthropic import AnthropicSandbox
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker
from tests.connectors.sap.conftest import PASSWORD, USER, WEBHOOK_SECRET

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
FLOW = "sap/sales_order_draft"
PUBLIC = "http://switchyard.test"
PARKED = (JobStatus.AWAITING_REVIEW,)
EDITS = {  # the reviewer corrects the draft before approving it
    "PurchaseOrderByCustomer": "4711-A",
    "RequestedDeliveryDate": "2026-04-03",
    "to_Item.MaterialByCustomer": ["RB-100", "HT-1000"],
    "to_Item.RequestedQuantity": [20, 5],
    "to_Item.RequestedQuantityUnit": ["PC", "EA"],
}


def registry() -> ConnectorRegistry:
    # Once pyproject declares the entry point, the factory is loaded from it.
    installed = ConnectorRegistry.from_entry_points()
    return ConnectorRegistry.from_entry_points(
        extra=[] if "sap" in installed else [SapConnectorFactory()]
    )


@dataclass
class Switchyard:
    services: Services
    system: SapSandbox
    client: httpx.AsyncClient
    connection_id: str
    tenant_id: str

    async def jobs(self) -> list[Job]:
        async with self.services.sessions() as session:
            return list(await session.scalars(select(Job).where(Job.kind == "flow.run")))

    async def settle(self, expected: int, timeout: float = 30) -> list[Job]:
        """Deliver events until ``expected`` flow jobs exist and all have finished or wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.system.deliver(self.client)
            jobs = await self.jobs()
            settled = all(j.status in (*FINISHED, *PARKED) for j in jobs)
            if len(jobs) >= expected and settled and not self.system.outbox.pending:
                return jobs
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"jobs did not settle: {[(j.id, j.status) for j in await self.jobs()]}"
        )

    async def item(self, job_id: int) -> ReviewItem:
        async with self.services.sessions() as session:
            item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job_id))
        assert item is not None
        return item

    async def reviewer(self) -> Principal:
        async with self.services.sessions.begin() as session:
            row, _ = await create_api_key(session, self.tenant_id, Role.REVIEWER, name="ana")
        return Principal(self.tenant_id, row.id, Role.REVIEWER)

    def email(self, body: str) -> str:
        return self.system.create(
            "YY1_CustomerEmail",
            {
                "subject": "Order",
                "body": body,
                "received_at": datetime(2026, 3, 27, 8, 30, tzinfo=UTC),
                "sold_to_party": "0010100001",
                "sender": "einkauf@fahrradwerk-rhein.example",
            },
        )

    def orders(self) -> list[dict[str, object]]:
        return [w[3] for w in self.system.services.writes if w[:2] == ("POST", "A_SalesOrder")]


@pytest.fixture
async def switchyard(settings: Settings) -> AsyncIterator[Switchyard]:
    system = SapSandbox(users={USER: PASSWORD})
    claude = AnthropicSandbox(latency_scale=0, seed=11)
    with SandboxServer(claude.app) as upstream, SandboxServer(system.app) as api:
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
                    factory=services.connectors.registry.require("sap"),
                    name="sap",
                    config=demo_config(api.url),
                    secrets={"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET},
                    keyring=services.keyring,
                )
            entry = services.flows.get(FLOW)
            assert entry is not None
            # The flow validates against the SANDBOX's $metadata before it is enabled.
            await check_flow_for_connection(services, entry, connection)
            async with services.sessions.begin() as session:
                session.add(
                    FlowEnablement(
                        connection_id=connection.id, flow=FLOW, tenant_id=tenant.id, enabled=True
                    )
                )
            system.subscribe(f"{PUBLIC}/hooks/{connection.id}", WEBHOOK_SECRET)
            transport = httpx.ASGITransport(app=create_app(services))
            worker = Worker(services, builtin_handlers(), run_scheduler=False, concurrency=2)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
                yield Switchyard(services, system, client, connection.id, tenant.id)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            await services.aclose()


async def _proposal(switchyard: Switchyard, body: str, expected: int = 1) -> tuple[Job, ReviewItem]:
    switchyard.email(body)
    jobs = await switchyard.settle(expected=expected)
    job = sorted(jobs, key=lambda j: j.id)[-1]
    assert job.flow == FLOW
    assert job.status == JobStatus.AWAITING_REVIEW
    return job, await switchyard.item(job.id)


async def test_an_order_email_becomes_a_sales_order_once_approved(switchyard: Switchyard) -> None:
    job, item = await _proposal(
        switchyard, "Please deliver 20 pcs RB-100 and 5 EA HT-1000. PO 4711-A"
    )
    assert item.object == "A_SalesOrder"
    assert item.record_id is None  # a create
    assert item.patch["SoldToParty"] == "0010100001"  # from the email record, not Claude
    assert item.reasons  # the flow reviews every write; an ERP target would anyway
    assert switchyard.orders() == []  # nothing reaches SAP before the approval

    reviewer = await switchyard.reviewer()
    edits = {k: v for k, v in EDITS.items() if k in item.patch}  # optional fields may be absent
    assert "to_Item.MaterialByCustomer" in edits
    await review_decisions.approve(switchyard.services, item.id, reviewer, edits=edits)
    await switchyard.settle(expected=1)
    async with switchyard.services.sessions() as session:
        done = await session.get(Job, job.id)
        decided = await session.get(ReviewItem, item.id)
    assert done is not None
    assert done.status == JobStatus.DONE
    assert decided is not None
    assert decided.status == "written"
    (created,) = switchyard.orders()
    assert created["SoldToParty"] == "0010100001"
    for name, wired in (
        ("PurchaseOrderByCustomer", "4711-A"),
        ("RequestedDeliveryDate", "/Date(1775174400000)/"),
    ):
        assert created.get(name) == (wired if name in edits else None)
    order = next(
        o
        for o in switchyard.system.rows("A_SalesOrder")
        if o.get("YY1_SwitchyardRef_SDH") == created["YY1_SwitchyardRef_SDH"]
    )
    assert order["LastChangedByUser"] == USER
    items = [
        i
        for i in switchyard.system.rows("A_SalesOrderItem")
        if i["SalesOrder"] == order["SalesOrder"]
    ]
    assert [(i["MaterialByCustomer"], i["RequestedQuantity"]) for i in items] == [
        ("RB-100", "20"),
        ("HT-1000", "5"),
    ]
    # The sales order's own Created event arrived and started nothing.
    assert any(
        e["type"].endswith("SalesOrder.Created.v1") for e in switchyard.system.outbox.delivered
    )
    assert len(await switchyard.jobs()) == 1

    # The worker died after the write, before recording it: the rerun creates nothing new.
    async with switchyard.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item.id).values(status="approved")
        )
        await session.execute(update(Job).where(Job.id == job.id).values(status="queued"))
    await switchyard.settle(expected=1)
    assert len(switchyard.orders()) == 1


async def test_rejected_and_expired_proposals_write_nothing(switchyard: Switchyard) -> None:
    rejected_job, rejected = await _proposal(switchyard, "20 pcs RB-100 please", expected=1)
    reviewer = await switchyard.reviewer()
    await review_decisions.reject(switchyard.services, rejected.id, reviewer, "not an order")
    await switchyard.settle(expected=1)

    expiring_job, expiring = await _proposal(switchyard, "5 EA HT-1000, PO 88", expected=2)
    async with switchyard.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == expiring.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert (await housekeep(switchyard.services))["review_items_expired"] == 1
    jobs = await switchyard.settle(expected=2)
    assert {j.id: j.status for j in jobs} == {
        rejected_job.id: JobStatus.DONE,
        expiring_job.id: JobStatus.DONE,
    }
    assert switchyard.orders() == []


async def test_a_delivery_without_the_secret_is_refused_and_stores_nothing(
    switchyard: Switchyard,
) -> None:
    event = {
        "specversion": "1.0",
        "type": "z.switchyard.customeremail.v1.CustomerEmail.Created.v1",
        "source": "/default/sap.s4/SBXCLNT100",
        "id": "forged-1",
        "data": {"EmailID": "0000000001"},
    }
    url = f"/hooks/{switchyard.connection_id}"
    for headers in ({}, {SECRET_HEADER: "wrong-secret-wrong-secret"}):
        answer = await switchyard.client.post(url, json=event, headers=headers)
        assert answer.status_code == 401
    async with switchyard.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Event)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    accepted = await switchyard.client.post(
        url, json=event, headers={SECRET_HEADER: WEBHOOK_SECRET}
    )
    assert accepted.status_code == 202
