"""Tenant isolation across every route.

Tenants A and B each own a connection, an enabled flow, events and jobs, a subscription
and a delivery. Tenant B's admin key then walks EVERY /v1 route of the app against A's
objects: object routes answer 404 (never 403, which would confirm the id exists), list
routes never show A's objects, creates land in B's namespace, and A's rows are unchanged
afterwards. The walk is checked against ``app.routes``, so a new route fails this test
until it is added to ``WALK``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from core.db.models import (
    AuditEntry,
    CallAudit,
    Connection,
    Delivery,
    Event,
    FlowEnablement,
    Job,
    JobStatus,
    PromptRollout,
    ReviewItem,
    Subscription,
)
from core.services import Services
from tests.web.support import (
    TenantKeys,
    assert_problem,
    body_of,
    create_webhook_connection,
    deliver,
    enable_flow,
    propose_review,
    ticket,
)
from tests.web.test_call_audit_api import audited_call

FLOW = "webhook/ticket_updates"
B_SECRET = "tenant-b-signing-secret-0123456789"
CALLBACK_URL = "http://127.0.0.1:9/callbacks"


@dataclass(frozen=True)
class World:
    a: TenantKeys
    b: TenantKeys
    a_connection: str
    a_connection_name: str
    a_jobs: list[int]
    a_queued_job: int
    a_dead_job: int
    a_subscription: str
    a_delivery: int
    a_call: str  # an audited gateway call
    a_review: str  # a pending review item
    b_connection: str
    b_jobs: list[int]
    b_subscription: str


async def _jobs_of(services: Services, connection_id: str) -> list[int]:
    async with services.sessions.begin() as session:
        rows = await session.scalars(
            select(Job.id).where(Job.connection_id == connection_id).order_by(Job.id)
        )
        return list(rows.all())


async def _subscribe(client: httpx.AsyncClient, tenant: TenantKeys) -> str:
    response = await client.post(
        "/v1/subscriptions",
        json={"url": CALLBACK_URL, "events": ["job.done", "job.dead"]},
        headers=tenant.headers(),
    )
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["id"]
    return subscription_id


async def _build_world(
    client: httpx.AsyncClient, services: Services, a: TenantKeys, b: TenantKeys
) -> World:
    a_conn = await create_webhook_connection(client, a, name="helpdesk")
    await enable_flow(client, a, a_conn["id"], FLOW)
    accepted = await deliver(client, a_conn["id"], body_of(ticket("a-1"), ticket("a-2")))
    assert accepted.json()["accepted"] == 2
    a_jobs = await _jobs_of(services, a_conn["id"])
    a_subscription = await _subscribe(client, a)
    async with services.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == a_jobs[0]).values(status=JobStatus.DEAD.value)
        )
        delivery = Delivery(
            tenant_id=a.id,
            subscription_id=a_subscription,
            job_id=a_jobs[0],
            event_type="job.dead",
            payload={"job": {"id": a_jobs[0]}},
            status="dead",
        )
        session.add(delivery)
        await session.flush()
        a_delivery = delivery.id

    b_conn = await create_webhook_connection(client, b, name="b-desk", secret=B_SECRET)
    await enable_flow(client, b, b_conn["id"], FLOW)
    await deliver(client, b_conn["id"], body_of(ticket("b-1")), secret=B_SECRET)
    return World(
        a=a,
        b=b,
        a_connection=a_conn["id"],
        a_connection_name=a_conn["name"],
        a_jobs=a_jobs,
        a_queued_job=a_jobs[1],
        a_dead_job=a_jobs[0],
        a_subscription=a_subscription,
        a_delivery=a_delivery,
        a_call=await audited_call(services, a.id),
        a_review=await propose_review(services, a.id, a_jobs[1], a_conn["id"]),
        b_connection=b_conn["id"],
        b_jobs=await _jobs_of(services, b_conn["id"]),
        b_subscription=await _subscribe(client, b),
    )


async def _tenant_state(services: Services, tenant_id: str) -> dict[str, Any]:
    """Everything of one tenant a request could change."""

    async def rows(*columns: Any) -> list[Any]:
        model = columns[0].class_
        result = await session.execute(
            select(*columns).where(model.tenant_id == tenant_id).order_by(*columns)
        )
        return [tuple(row) for row in result.all()]

    async with services.sessions.begin() as session:
        return {
            "connections": await rows(
                Connection.id, Connection.name, Connection.secrets_encrypted, Connection.updated_at
            ),
            "flows": await rows(
                FlowEnablement.connection_id, FlowEnablement.flow, FlowEnablement.enabled
            ),
            "events": await rows(Event.id, Event.platform_event_id),
            "jobs": await rows(Job.id, Job.status, Job.attempts, Job.run_at),
            "subscriptions": await rows(Subscription.id, Subscription.active, Subscription.url),
            "deliveries": await rows(Delivery.id, Delivery.status, Delivery.attempts),
            "call_audit": await rows(CallAudit.id, CallAudit.key_id, CallAudit.sealed),
            "reviews": await rows(ReviewItem.id, ReviewItem.status, ReviewItem.decided_by),
            "rollouts": await rows(
                PromptRollout.id, PromptRollout.share_basis_points, PromptRollout.updated_at
            ),
            "audit": await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.tenant_id == tenant_id)
            ),
        }


# ------------------------------------------------------------------ the walk

Probe = Callable[[httpx.AsyncClient, World], Awaitable[None]]


def _not_found(method: str, path: Callable[[World], str], json: Any = None) -> Probe:
    async def probe(client: httpx.AsyncClient, world: World) -> None:
        response = await client.request(method, path(world), json=json, headers=world.b.headers())
        assert_problem(response, 404, "not-found")

    return probe


async def _list_jobs(client: httpx.AsyncClient, world: World) -> None:
    everything = await client.get("/v1/jobs", params={"limit": 500}, headers=world.b.headers())
    assert everything.status_code == 200
    assert [job["id"] for job in everything.json()["data"]] == sorted(world.b_jobs, reverse=True)
    filtered = await client.get(
        "/v1/jobs", params={"connection_id": world.a_connection}, headers=world.b.headers()
    )
    assert filtered.json()["data"] == []


async def _list_connections(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/connections", headers=world.b.headers())
    assert response.status_code == 200
    assert [c["id"] for c in response.json()["data"]] == [world.b_connection]


async def _create_connection(client: httpx.AsyncClient, world: World) -> None:
    # Names are per tenant: A's name is free in B's namespace and creates B's own object.
    created = await create_webhook_connection(client, world.b, name=world.a_connection_name)
    assert created["id"] != world.a_connection


async def _list_subscriptions(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/subscriptions", headers=world.b.headers())
    assert response.status_code == 200
    listed = [s["id"] for s in response.json()["data"]]
    assert world.a_subscription not in listed
    assert world.b_subscription in listed


async def _create_subscription(client: httpx.AsyncClient, world: World) -> None:
    assert await _subscribe(client, world.b) != world.a_subscription


async def _usage(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/usage", headers=world.b.headers())
    assert response.status_code == 200
    assert response.json()["totals"]["requests"] == 0  # A's calls (if any) never count


def _messages(path: str) -> Probe:
    # No tenant objects behind the Messages API; what matters is that B's key is its own
    # caller. An invalid body is refused before anything goes upstream.
    async def probe(client: httpx.AsyncClient, world: World) -> None:
        response = await client.post(path, json={"model": 1}, headers=world.b.headers())
        assert response.status_code == 400
        assert response.json()["type"] == "error"

    return probe


async def _list_flows(client: httpx.AsyncClient, world: World) -> None:
    # Flows are installed files, the same for every tenant; enablement is per connection.
    response = await client.get("/v1/flows", headers=world.b.headers())
    assert response.status_code == 200
    assert FLOW in [flow["name"] for flow in response.json()["data"]]


async def _get_flow(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(f"/v1/flows/{FLOW}", headers=world.b.headers())
    assert response.status_code == 200
    assert set(response.json()) >= {"name", "valid", "problems"}


async def _dry_run(client: httpx.AsyncClient, world: World) -> None:
    # A dry run touches no tenant's records; an invalid body is refused before any call.
    response = await client.post(
        f"/v1/flows/{FLOW}/test", json={"record": "not an object"}, headers=world.b.headers()
    )
    assert_problem(response, 422, "invalid-request")


A_BUDGET = {"scope": "tenant", "period": "month", "limit_usd": "25"}


async def _create_a_budget(client: httpx.AsyncClient, world: World) -> None:
    response = await client.put("/v1/budgets", json=A_BUDGET, headers=world.a.headers())
    assert response.status_code == 200, response.text


async def _a_budget(client: httpx.AsyncClient, world: World) -> str:
    """Tenant A's budget id, read with A's key (created before the walk)."""
    response = await client.get("/v1/budgets", headers=world.a.headers())
    (budget,) = response.json()["data"]
    return str(budget["id"])


async def _list_budgets(client: httpx.AsyncClient, world: World) -> None:
    a_budget = await _a_budget(client, world)
    response = await client.get("/v1/budgets", headers=world.b.headers())
    assert response.status_code == 200
    assert a_budget not in [budget["id"] for budget in response.json()["data"]]


async def _put_budget(client: httpx.AsyncClient, world: World) -> None:
    a_budget = await _a_budget(client, world)
    body = {**A_BUDGET, "limit_usd": "1"}
    response = await client.put("/v1/budgets", json=body, headers=world.b.headers())
    assert response.status_code == 200
    assert response.json()["id"] != a_budget  # B's own budget, A's untouched
    listed = await client.get("/v1/budgets", headers=world.a.headers())
    assert [b["limit_usd"] for b in listed.json()["data"]] == [25.0]


async def _delete_budget(client: httpx.AsyncClient, world: World) -> None:
    a_budget = await _a_budget(client, world)
    response = await client.delete(f"/v1/budgets/{a_budget}", headers=world.b.headers())
    assert_problem(response, 404, "not-found")


PROMPT = "ticket_test"
A_ROLLOUT = {"candidate_version": 2, "share_percent": "5"}


async def _start_a_rollout(client: httpx.AsyncClient, world: World) -> None:
    response = await client.put(
        f"/v1/prompts/{PROMPT}/rollout", json=A_ROLLOUT, headers=world.a.headers()
    )
    assert response.status_code == 200, response.text


async def _list_prompts(client: httpx.AsyncClient, world: World) -> None:
    # Prompt files are installed for every tenant; rollouts are the tenant's own.
    response = await client.get("/v1/prompts", headers=world.b.headers())
    assert response.status_code == 200
    (prompt,) = [p for p in response.json()["data"] if p["name"] == PROMPT]
    assert prompt["rollout"] is None


async def _get_prompt(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(f"/v1/prompts/{PROMPT}", headers=world.b.headers())
    assert response.status_code == 200
    assert response.json()["rollout"] is None
    assert response.json()["history"] == []


async def _put_rollout(client: httpx.AsyncClient, world: World) -> None:
    body = {"candidate_version": 2, "share_percent": "50"}
    response = await client.put(
        f"/v1/prompts/{PROMPT}/rollout", json=body, headers=world.b.headers()
    )
    assert response.status_code == 200  # B's own rollout; A's stays at 5%
    mine = await client.get(f"/v1/prompts/{PROMPT}", headers=world.a.headers())
    assert mine.json()["rollout"]["share_percent"] == 5.0


def _no_rollout(method: str, path: str) -> Probe:
    async def probe(client: httpx.AsyncClient, world: World) -> None:
        response = await client.request(method, path, headers=world.b.headers())
        assert_problem(response, 404, "rollout-not-found")

    return probe


async def _compare_prompt(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(f"/v1/usage/prompts/{PROMPT}", headers=world.b.headers())
    assert response.status_code == 200
    assert response.json()["versions"] == []  # A's calls (if any) never count


async def _list_reviews(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/reviews", headers=world.b.headers())
    assert response.status_code == 200
    assert response.json()["data"] == []  # A's pending item is A's alone


WALK: dict[tuple[str, str], Probe] = {
    ("GET", "/v1/reviews"): _list_reviews,
    ("GET", "/v1/reviews/{review_id}"): _not_found("GET", lambda w: f"/v1/reviews/{w.a_review}"),
    ("POST", "/v1/reviews/{review_id}/approve"): _not_found(
        "POST", lambda w: f"/v1/reviews/{w.a_review}/approve", {}
    ),
    ("POST", "/v1/reviews/{review_id}/reject"): _not_found(
        "POST", lambda w: f"/v1/reviews/{w.a_review}/reject", {"reason": "not mine"}
    ),
    ("GET", "/v1/prompts"): _list_prompts,
    ("GET", "/v1/prompts/{name}"): _get_prompt,
    ("PUT", "/v1/prompts/{name}/rollout"): _put_rollout,
    ("POST", "/v1/prompts/{name}/rollout/rollback"): _no_rollout(
        "POST", f"/v1/prompts/{PROMPT}/rollout/rollback"
    ),
    ("DELETE", "/v1/prompts/{name}/rollout"): _no_rollout(
        "DELETE", f"/v1/prompts/{PROMPT}/rollout"
    ),
    ("GET", "/v1/usage/prompts/{name}"): _compare_prompt,
    ("GET", "/v1/budgets"): _list_budgets,
    ("PUT", "/v1/budgets"): _put_budget,
    ("DELETE", "/v1/budgets/{budget_id}"): _delete_budget,
    ("GET", "/v1/usage"): _usage,
    ("GET", "/v1/flows"): _list_flows,
    ("GET", "/v1/flows/{flow:path}"): _get_flow,
    ("POST", "/v1/flows/{flow:path}/test"): _dry_run,
    ("POST", "/v1/messages"): _messages("/v1/messages"),
    ("POST", "/v1/messages/count_tokens"): _messages("/v1/messages/count_tokens"),
    ("GET", "/v1/jobs"): _list_jobs,
    ("GET", "/v1/jobs/{job_id}"): _not_found("GET", lambda w: f"/v1/jobs/{w.a_queued_job}"),
    ("POST", "/v1/jobs/{job_id}/replay"): _not_found(
        "POST", lambda w: f"/v1/jobs/{w.a_dead_job}/replay"
    ),
    ("POST", "/v1/jobs/{job_id}/cancel"): _not_found(
        "POST", lambda w: f"/v1/jobs/{w.a_queued_job}/cancel"
    ),
    ("GET", "/v1/connections"): _list_connections,
    ("POST", "/v1/connections"): _create_connection,
    ("GET", "/v1/connections/{connection_id}"): _not_found(
        "GET", lambda w: f"/v1/connections/{w.a_connection}"
    ),
    ("PUT", "/v1/connections/{connection_id}/flows/{flow:path}"): _not_found(
        "PUT", lambda w: f"/v1/connections/{w.a_connection}/flows/{FLOW}", {"enabled": False}
    ),
    ("GET", "/v1/subscriptions"): _list_subscriptions,
    ("POST", "/v1/subscriptions"): _create_subscription,
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries"): _not_found(
        "GET", lambda w: f"/v1/subscriptions/{w.a_subscription}/deliveries"
    ),
    ("DELETE", "/v1/subscriptions/{subscription_id}"): _not_found(
        "DELETE", lambda w: f"/v1/subscriptions/{w.a_subscription}"
    ),
    ("POST", "/v1/deliveries/{delivery_id}/replay"): _not_found(
        "POST", lambda w: f"/v1/deliveries/{w.a_delivery}/replay"
    ),
    ("POST", "/v1/calls/{request_id}/audit"): _not_found(
        "POST", lambda w: f"/v1/calls/{w.a_call}/audit", {"reason": "probing tenant isolation"}
    ),
}


def _v1_routes(app: FastAPI) -> set[tuple[str, str]]:
    # FastAPI >= 0.16x includes routers lazily: app.routes holds one entry per included
    # router, and iter_route_contexts expands them. Older versions list routes directly.
    expand: Callable[[Any], Iterable[Any]] | None = getattr(
        fastapi.routing, "iter_route_contexts", None
    )
    routes = expand(app.routes) if expand is not None else app.routes
    found = {
        (method, route.path)
        for route in routes
        if (route.path or "").startswith("/v1")
        for method in route.methods or ()
    }
    assert found, "no /v1 routes found: the route enumeration is broken"
    return found


def test_the_walk_covers_every_v1_route(app: FastAPI) -> None:
    routes = _v1_routes(app)
    missing = sorted(routes - WALK.keys())
    assert not missing, f"add these routes to WALK in {__file__}: {missing}"
    assert not sorted(WALK.keys() - routes), "WALK names routes the app no longer has"


async def test_tenant_b_cannot_see_or_touch_tenant_a_on_any_route(
    app: FastAPI,
    client: httpx.AsyncClient,
    services: Services,
    tenant_a: TenantKeys,
    tenant_b: TenantKeys,
) -> None:
    world = await _build_world(client, services, tenant_a, tenant_b)
    await _create_a_budget(client, world)
    await _start_a_rollout(client, world)
    before = await _tenant_state(services, tenant_a.id)
    assert before["jobs"]
    assert before["subscriptions"]
    assert before["deliveries"]

    walked = set()
    for route in sorted(_v1_routes(app)):
        await WALK[route](client, world)
        walked.add(route)

    assert walked == set(WALK)
    assert await _tenant_state(services, tenant_a.id) == before


async def test_tenant_a_lists_only_its_own_objects_after_b_created_some(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    world = await _build_world(client, services, tenant_a, tenant_b)
    await _create_connection(client, world)

    jobs = await client.get("/v1/jobs", headers=tenant_a.headers())
    connections = await client.get("/v1/connections", headers=tenant_a.headers())

    assert sorted(job["id"] for job in jobs.json()["data"]) == world.a_jobs
    assert [c["id"] for c in connections.json()["data"]] == [world.a_connection]


async def test_another_tenants_signature_cannot_feed_a_connection(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    """Hooks carry no API key: B's connection secret must not authenticate A's hook URL."""
    world = await _build_world(client, services, tenant_a, tenant_b)
    await _create_a_budget(client, world)
    before = await _tenant_state(services, tenant_a.id)

    response = await deliver(client, world.a_connection, body_of(ticket("forged")), secret=B_SECRET)

    assert_problem(response, 401, "signature-invalid")
    assert await _tenant_state(services, tenant_a.id) == before
