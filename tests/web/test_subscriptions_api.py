"""The subscriptions API through the real app: roles, tenant isolation, write-only secrets,
problem responses, audit entries, delivery listing and replay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, update

from connectors.registry import ConnectorRegistry
from core.callbacks import DELIVER_KIND, on_job_finished
from core.db.models import AuditEntry, Delivery, Job, JobStatus, Role, Subscription
from core.flows.catalog import FlowCatalog
from core.queue import JobQueue, NewJob, enqueue
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from tests.conftest import make_settings
from tests.web.conftest import WakeCounter
from tests.web.support import TenantKeys

HOOK = "http://127.0.0.1:9/hooks/in"


@pytest.fixture
def tenant(tenant_a: TenantKeys) -> TenantKeys:
    return tenant_a


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> str:
    payload = {"url": HOOK, "events": ["job.done"]} | body
    response = await client.post("/v1/subscriptions", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["id"]
    return subscription_id


async def test_create_shows_the_secret_once_and_never_again(
    client: httpx.AsyncClient, tenant: TenantKeys, services: Services
) -> None:
    response = await client.post(
        "/v1/subscriptions",
        json={"url": HOOK, "events": ["job.done", "job.dead", "job.done"]},
        headers=tenant.headers(),
    )
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "url", "events", "active", "created_at", "secret"}
    assert (created["url"], created["events"], created["active"]) == (
        HOOK,
        ["job.done", "job.dead"],
        True,
    )
    secret = created["secret"]

    listed = await client.get("/v1/subscriptions", headers=tenant.headers())
    assert listed.status_code == 200
    [item] = listed.json()["data"]
    assert item["id"] == created["id"]
    assert "secret" not in item
    assert secret not in listed.text
    async with services.sessions() as session:
        [entry] = (await session.scalars(select(AuditEntry))).all()
    assert (entry.action, entry.object_id, entry.tenant_id) == (
        "subscription.create",
        created["id"],
        tenant.id,
    )
    assert entry.actor.startswith("key:")
    assert secret not in str(entry.details)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": HOOK, "events": ["job.exploded"]}, "events"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK}, "events"),
        ({"url": HOOK, "events": ["job.done"], "secret": "mine"}, "secret"),
        ({"url": "x" * 2001, "events": ["job.done"]}, "url"),
    ],
)
async def test_invalid_bodies_are_422_problems(
    client: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, object], fragment: str
) -> None:
    response = await client.post("/v1/subscriptions", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "/problems/invalid-request"
    assert fragment in problem["detail"]


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The production default: no private network allowed for callbacks."""
    built = build_services(
        make_settings(settings.database_url, callback_allow_networks=[]),
        registry=ConnectorRegistry([]),
        flows=FlowCatalog(),
    )
    transport = httpx.ASGITransport(app=create_app(built))
    async with httpx.AsyncClient(transport=transport, base_url="http://switchyard.test") as c:
        yield c, built
    await built.aclose()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/", "http://169.254.169.254/", "http://10.0.0.1/", "ftp://x/"]
)
async def test_forbidden_destinations_are_refused_and_nothing_is_stored(
    strict_client: tuple[httpx.AsyncClient, Services], tenant: TenantKeys, url: str
) -> None:
    client, services = strict_client
    response = await client.post(
        "/v1/subscriptions", json={"url": url, "events": ["job.done"]}, headers=tenant.headers()
    )
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/destination-refused"
    async with services.sessions() as session:
        assert (await session.scalars(select(Subscription))).all() == []
        assert (await session.scalars(select(AuditEntry))).all() == []


async def test_only_admins_may_use_subscriptions(
    client: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    subscription_id = await _create(client, tenant.headers())
    calls = [
        ("POST", "/v1/subscriptions", {"url": HOOK, "events": ["job.done"]}),
        ("GET", "/v1/subscriptions", None),
        ("GET", f"/v1/subscriptions/{subscription_id}/deliveries", None),
        ("POST", "/v1/deliveries/1/replay", None),
        ("DELETE", f"/v1/subscriptions/{subscription_id}", None),
    ]
    for method, path, body in calls:
        for headers in (tenant.headers(Role.REVIEWER), tenant.headers(Role.SERVICE)):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path)
            assert response.json()["type"] == "/problems/forbidden"
        response = await client.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.json()["type"] == "/problems/unauthenticated"


async def _finish_jobs(services: Services, tenant_id: str, count: int) -> None:
    queue = JobQueue(
        services.sessions, worker_id="t", lease_seconds=30, listeners=[on_job_finished]
    )
    async with services.sessions.begin() as session:
        await enqueue(session, [NewJob(kind="flow.run", tenant_id=tenant_id)] * count)
    for job in await queue.claim(["flow.run"], count):
        assert await queue.complete(job, {"ok": True})


async def test_deliveries_are_listed_newest_first_in_pages(
    client: httpx.AsyncClient, tenant: TenantKeys, services: Services
) -> None:
    subscription_id = await _create(client, tenant.headers())
    await _finish_jobs(services, tenant.id, 5)
    path = f"/v1/subscriptions/{subscription_id}/deliveries"

    first = (await client.get(path, params={"limit": 3}, headers=tenant.headers())).json()
    second = (
        await client.get(
            path, params={"limit": 3, "cursor": first["next_cursor"]}, headers=tenant.headers()
        )
    ).json()
    ids = [item["id"] for item in first["data"] + second["data"]]
    assert len(ids) == 5
    assert ids == sorted(ids, reverse=True)
    assert second["next_cursor"] is None
    item = first["data"][0]
    assert (item["status"], item["event_type"], item["attempts"]) == ("pending", "job.done", 0)
    assert item["payload"]["id"] == item["id"]
    assert item["payload"]["job"]["id"] == item["job_id"]

    bad = await client.get(path, params={"cursor": "garbage"}, headers=tenant.headers())
    assert bad.status_code == 422


async def test_replay_needs_a_dead_delivery_and_enqueues_a_sender(
    client: httpx.AsyncClient, tenant: TenantKeys, services: Services, wakes: WakeCounter
) -> None:
    subscription_id = await _create(client, tenant.headers())
    await _finish_jobs(services, tenant.id, 1)
    async with services.sessions() as session:
        delivery_id = (await session.scalars(select(Delivery.id))).one()

    pending = await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=tenant.headers())
    assert pending.status_code == 409
    assert pending.json()["type"] == "/problems/conflict"

    async with services.sessions.begin() as session:  # as the sender leaves it when it gives up
        await session.execute(update(Delivery).values(status="dead"))
        await session.execute(
            update(Job).where(Job.kind == DELIVER_KIND).values(status=JobStatus.DEAD.value)
        )
    replayed = await client.post(f"/v1/deliveries/{delivery_id}/replay", headers=tenant.headers())
    assert replayed.status_code == 200
    assert (replayed.json()["id"], replayed.json()["status"]) == (delivery_id, "pending")
    async with services.sessions() as session:
        live = (
            await session.scalars(
                select(Job).where(Job.kind == DELIVER_KIND, Job.status == JobStatus.QUEUED.value)
            )
        ).all()
        actions = (await session.scalars(select(AuditEntry.action))).all()
    assert [job.payload for job in live] == [{"delivery_id": delivery_id}]
    assert wakes.calls == 1  # the in-process worker is nudged to send it at once
    assert "delivery.replay" in actions

    missing = await client.post("/v1/deliveries/999999/replay", headers=tenant.headers())
    assert missing.status_code == 404
    listed = await client.get(
        f"/v1/subscriptions/{subscription_id}/deliveries", headers=tenant.headers()
    )
    assert listed.json()["data"][0]["status"] == "pending"


async def test_delete_deactivates_and_stops_new_deliveries(
    client: httpx.AsyncClient, tenant: TenantKeys, services: Services
) -> None:
    subscription_id = await _create(client, tenant.headers())
    response = await client.delete(f"/v1/subscriptions/{subscription_id}", headers=tenant.headers())
    assert response.status_code == 204
    [item] = (await client.get("/v1/subscriptions", headers=tenant.headers())).json()["data"]
    assert (item["id"], item["active"]) == (subscription_id, False)
    await _finish_jobs(services, tenant.id, 1)
    deliveries = await client.get(
        f"/v1/subscriptions/{subscription_id}/deliveries", headers=tenant.headers()
    )
    assert deliveries.json()["data"] == []
    async with services.sessions() as session:
        actions = (await session.scalars(select(AuditEntry.action))).all()
    assert "subscription.deactivate" in actions


async def test_another_tenant_sees_nothing_and_gets_404(
    client: httpx.AsyncClient, tenant: TenantKeys, tenant_b: TenantKeys, services: Services
) -> None:
    subscription_id = await _create(client, tenant.headers())
    await _finish_jobs(services, tenant.id, 1)
    async with services.sessions.begin() as session:
        delivery_id = (await session.scalars(select(Delivery.id))).one()
        await session.execute(update(Delivery).values(status="dead"))

    listed = await client.get("/v1/subscriptions", headers=tenant_b.headers())
    assert listed.json()["data"] == []
    for method, path in [
        ("GET", f"/v1/subscriptions/{subscription_id}/deliveries"),
        ("POST", f"/v1/deliveries/{delivery_id}/replay"),
        ("DELETE", f"/v1/subscriptions/{subscription_id}"),
    ]:
        response = await client.request(method, path, headers=tenant_b.headers())
        assert response.status_code == 404, (method, path)
        assert response.json()["type"] == "/problems/not-found"
    async with services.sessions() as session:
        row = await session.get(Subscription, subscription_id)
        delivery = await session.get(Delivery, delivery_id)
    assert row is not None
    assert row.active
    assert delivery is not None
    assert delivery.status == "dead"
