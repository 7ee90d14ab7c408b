"""End to end: a customer's order email arrives in the SANDBOX SAP system → an Event Mesh
style CloudEvent → Switchyard's ``POST /hooks/{id}`` → the sample flow
mappings/sap/sales_order_draft.yaml on a real worker → the Anthropic SANDBOX → a review
item (ERP writes always wait) → a reviewer approves (correcting the draft) → the worker
creates the sales order in SAP, exactly once. Rejected and expired proposals write
nothing; a delivery without the shared secret is refused and stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from connectors.sap.demo import demo_config
from connectors.sap.sandbox import SandboxServer, SapSandbox
from connectors.sap.webhooks import SECRET_HEADER
from core import review_decisions
from core.db.models import Event, Job, JobStatus, ReviewItem
from core.housekeeping import housekeep
from core.sandbox.anthropic import AnthropicSandbox
from core.settings import Settings
from tests.connectors.sap.conftest import PASSWORD, USER, WEBHOOK_SECRET
from tests.connectors.support import Switchyard, settled, start_switchyard

FLOW = "sap/sales_order_draft"
EDITS = {  # the reviewer corrects the draft before approving it
    "PurchaseOrderByCustomer": "4711-A",
    "RequestedDeliveryDate": "2026-04-03",
    "to_Item.MaterialByCustomer": ["RB-100", "HT-1000"],
    "to_Item.RequestedQuantity": [20, 5],
    "to_Item.RequestedQuantityUnit": ["PC", "EA"],
}


@pytest.fixture
def system() -> SapSandbox:
    """On the real clock, not the conftest's SANDBOX time."""
    return SapSandbox(users={USER: PASSWORD})


@pytest.fixture
async def switchyard(
    settings: Settings, system: SapSandbox, server: SandboxServer
) -> AsyncIterator[Switchyard]:
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=11).app) as claude:
        async with start_switchyard(
            settings,
            claude.url,
            "sap",
            config=demo_config(server.url),
            secrets={"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET},
            flows=[FLOW],  # checked against the SANDBOX's $metadata first
            concurrency=2,
        ) as started:
            system.subscribe(started.hook_url, WEBHOOK_SECRET)
            yield started


async def settle(switchyard: Switchyard, system: SapSandbox, expected: int) -> list[Job]:
    """Deliver events until ``expected`` flow jobs exist and all have finished or wait."""
    return await switchyard.settle(
        system.deliver, lambda jobs: settled(jobs, expected) and not system.outbox.pending
    )


def email(system: SapSandbox, body: str) -> str:
    return system.create(
        "YY1_CustomerEmail",
        {
            "subject": "Order",
            "body": body,
            "received_at": datetime(2026, 3, 27, 8, 30, tzinfo=UTC),
            "sold_to_party": "0010100001",
            "sender": "einkauf@fahrradwerk-rhein.example",
        },
    )


def orders(system: SapSandbox) -> list[dict[str, object]]:
    return [w[3] for w in system.services.writes if w[:2] == ("POST", "A_SalesOrder")]


async def _proposal(
    switchyard: Switchyard, system: SapSandbox, body: str, expected: int = 1
) -> tuple[Job, ReviewItem]:
    email(system, body)
    jobs = await settle(switchyard, system, expected)
    job = sorted(jobs, key=lambda j: j.id)[-1]
    assert job.flow == FLOW
    assert job.status == JobStatus.AWAITING_REVIEW
    return job, await switchyard.review_item(job.id)


async def test_an_order_email_becomes_a_sales_order_once_approved(
    switchyard: Switchyard, system: SapSandbox
) -> None:
    job, item = await _proposal(
        switchyard, system, "Please deliver 20 pcs RB-100 and 5 EA HT-1000. PO 4711-A"
    )
    assert item.object == "A_SalesOrder"
    assert item.record_id is None  # a create
    assert item.patch["SoldToParty"] == "0010100001"  # from the email record, not Claude
    assert item.reasons  # the flow reviews every write; an ERP target would anyway
    assert orders(system) == []  # nothing reaches SAP before the approval

    reviewer = await switchyard.reviewer()
    edits = {k: v for k, v in EDITS.items() if k in item.patch}  # optional fields may be absent
    assert "to_Item.MaterialByCustomer" in edits
    await review_decisions.approve(switchyard.services, item.id, reviewer, edits=edits)
    await settle(switchyard, system, expected=1)
    async with switchyard.services.sessions() as session:
        done = await session.get(Job, job.id)
        decided = await session.get(ReviewItem, item.id)
    assert done is not None
    assert done.status == JobStatus.DONE
    assert decided is not None
    assert decided.status == "written"
    (created,) = orders(system)
    assert created["SoldToParty"] == "0010100001"
    for name, wired in (
        ("PurchaseOrderByCustomer", "4711-A"),
        ("RequestedDeliveryDate", "/Date(1775174400000)/"),
    ):
        assert created.get(name) == (wired if name in edits else None)
    order = next(
        o
        for o in system.rows("A_SalesOrder")
        if o.get("YY1_SwitchyardRef_SDH") == created["YY1_SwitchyardRef_SDH"]
    )
    assert order["LastChangedByUser"] == USER
    items = [i for i in system.rows("A_SalesOrderItem") if i["SalesOrder"] == order["SalesOrder"]]
    assert [(i["MaterialByCustomer"], i["RequestedQuantity"]) for i in items] == [
        ("RB-100", "20"),
        ("HT-1000", "5"),
    ]
    # The sales order's own Created event arrived and started nothing.
    assert any(e["type"].endswith("SalesOrder.Created.v1") for e in system.outbox.delivered)
    assert len(await switchyard.jobs()) == 1

    # The worker died after the write, before recording it: the rerun creates nothing new.
    async with switchyard.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem).where(ReviewItem.id == item.id).values(status="approved")
        )
        await session.execute(update(Job).where(Job.id == job.id).values(status="queued"))
    await settle(switchyard, system, expected=1)
    assert len(orders(system)) == 1


async def test_rejected_and_expired_proposals_write_nothing(
    switchyard: Switchyard, system: SapSandbox
) -> None:
    rejected_job, rejected = await _proposal(switchyard, system, "20 pcs RB-100 please", expected=1)
    reviewer = await switchyard.reviewer()
    await review_decisions.reject(switchyard.services, rejected.id, reviewer, "not an order")
    await settle(switchyard, system, expected=1)

    expiring_job, expiring = await _proposal(switchyard, system, "5 EA HT-1000, PO 88", expected=2)
    async with switchyard.services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == expiring.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert (await housekeep(switchyard.services))["review_items_expired"] == 1
    jobs = await settle(switchyard, system, expected=2)
    assert {j.id: j.status for j in jobs} == {
        rejected_job.id: JobStatus.DONE,
        expiring_job.id: JobStatus.DONE,
    }
    assert orders(system) == []


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
