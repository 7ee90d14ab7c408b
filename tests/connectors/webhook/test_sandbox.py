"""The webhook sandbox itself: the records API's HTTP contract (plain httpx, no connector),
the event sender's signature (checked independently with hmac), and a signed delivery
accepted by the real ingress on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from connectors.base import ChangeType, ConnectorContext, InboundRequest
from connectors.webhook import WebhookConnectorFactory
from connectors.webhook.sandbox import (
    DEMO_SEED,
    RecordsSandbox,
    SandboxServer,
    make_event,
    send_events,
    signed_delivery,
)
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import Event
from core.services import Services
from core.web.app import create_app

TOKEN = "sandbox-token"
SECRET = "tool-signing-secret-1234"


@pytest.fixture
def tool() -> RecordsSandbox:
    return RecordsSandbox({"ticket": {"T-1": {"status": "open"}, "a/b": {"n": 1}}}, token=TOKEN)


@pytest.fixture
def server(tool: RecordsSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(tool.app) as running:
        yield running


@pytest.fixture
async def http(server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        yield client


def _is_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_get_returns_the_record_with_an_etag(http: httpx.AsyncClient) -> None:
    response = await http.get("/ticket/T-1")
    assert response.status_code == 200
    assert response.json() == {"status": "open"}
    assert response.headers["etag"] == '"v1"'
    # Ids are path-encoded by clients; an encoded slash still names one record.
    assert (await http.get("/ticket/a%2Fb")).json() == {"n": 1}
    _is_problem(await http.get("/ticket/T-2"), 404)


async def test_patch_merges_bumps_the_etag_and_honours_if_match(
    http: httpx.AsyncClient, tool: RecordsSandbox
) -> None:
    ok = await http.patch("/ticket/T-1", json={"priority": "high"}, headers={"If-Match": '"v1"'})
    assert ok.status_code == 200
    assert ok.json() == {"status": "open", "priority": "high"}
    assert ok.headers["etag"] == '"v2"' == tool.etag("ticket", "T-1")
    stale = await http.patch("/ticket/T-1", json={"status": "x"}, headers={"If-Match": '"v1"'})
    _is_problem(stale, 412)
    anything = await http.patch("/ticket/T-1", json={"status": "x"}, headers={"If-Match": "*"})
    assert anything.status_code == 200
    assert tool.get("ticket", "T-1") == {"status": "x", "priority": "high"}
    _is_problem(await http.patch("/ticket/T-9", json={}), 404)
    _is_problem(await http.patch("/ticket/T-1", content=b"[1, 2]"), 400)
    _is_problem(await http.patch("/ticket/T-1", content=b"{oops"), 400)


async def test_an_idempotency_key_replays_the_first_answer_and_applies_once(
    http: httpx.AsyncClient, tool: RecordsSandbox
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = await http.patch("/ticket/T-1", json={"n": 1}, headers=headers)
    tool.put("ticket", "T-1", {"status": "changed inside the tool"})
    again = await http.patch("/ticket/T-1", json={"n": 1}, headers=headers)
    assert again.status_code == first.status_code == 200
    assert (again.content, again.headers["etag"]) == (first.content, first.headers["etag"])
    assert again.headers["idempotent-replayed"] == "true"
    assert tool.applied == [("ticket", "T-1", "k-1")]
    assert tool.get("ticket", "T-1") == {"status": "changed inside the tool"}
    reused = await http.patch("/ticket/T-1", json={"n": 2}, headers=headers)
    _is_problem(reused, 422)
    assert len(tool.applied) == 1


async def test_a_failed_write_does_not_burn_its_idempotency_key(
    http: httpx.AsyncClient, tool: RecordsSandbox
) -> None:
    headers = {"Idempotency-Key": "k-2", "If-Match": '"v0"'}
    _is_problem(await http.patch("/ticket/T-1", json={"n": 1}, headers=headers), 412)
    retried = await http.patch("/ticket/T-1", json={"n": 1}, headers={"Idempotency-Key": "k-2"})
    assert retried.status_code == 200
    assert tool.applied == [("ticket", "T-1", "k-2")]


async def test_the_bearer_token_is_required(server: SandboxServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        missing = await anonymous.get("/ticket/T-1")
        wrong = await anonymous.get("/ticket/T-1", headers={"Authorization": "Bearer nope"})
    _is_problem(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    _is_problem(wrong, 401)


async def test_injected_failures_answer_in_order_then_stop(
    http: httpx.AsyncClient, tool: RecordsSandbox
) -> None:
    tool.fail_next(503, times=2, retry_after=3)
    tool.fail_next(500)
    first, second, third, fourth = [await http.get("/ticket/T-1") for _ in range(4)]
    _is_problem(first, 503)
    assert first.headers["retry-after"] == "3"
    _is_problem(second, 503)
    _is_problem(third, 500)
    assert "retry-after" not in third.headers
    assert fourth.status_code == 200
    assert tool.requests == 4


async def test_the_demo_seed_is_served() -> None:
    demo = RecordsSandbox(DEMO_SEED)
    async with SandboxServer(demo.app) as server, httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/ticket/T-1001")
    assert response.json()["status"] == "open"


async def test_a_stopped_server_refuses_connections() -> None:
    server = SandboxServer(RecordsSandbox().app)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    server.start()
    port = server.port
    server.stop()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


# ----------------------------------------------------------------- sender


def test_signed_delivery_is_verifiable_with_hmac_alone() -> None:
    events = [make_event("ticket", "T-1", changed_fields=["status"], data={"status": "closed"})]
    before = int(time.time())
    body, headers = signed_delivery(SECRET, events)
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"events": events}
    parts = dict(part.split("=", 1) for part in headers["Switchyard-Signature"].split(","))
    assert set(parts) == {"t", "v1"}
    assert before <= int(parts["t"]) <= int(time.time())
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


def test_made_events_pass_the_connectors_own_verify_and_parse() -> None:
    events = [
        make_event("ticket", "T-1", "created", data={"subject": "hi"}),
        make_event("ticket", "T-2", "deleted", event_id="fixed-id"),
    ]
    body, headers = signed_delivery(SECRET, events)
    connector = WebhookConnectorFactory().create(
        {}, {"signing_secret": SECRET}, ConnectorContext("con_x")
    )
    request = InboundRequest(
        "POST", "/hooks/con_x", {k.lower(): v for k, v in headers.items()}, body
    )
    connector.verify(request)
    first, second = connector.parse(request)
    assert (first.change_type, first.data) == (ChangeType.CREATED, {"subject": "hi"})
    assert first.occurred_at is not None
    assert (second.platform_event_id, second.change_type) == ("fixed-id", ChangeType.DELETED)
    assert first.platform_event_id != second.platform_event_id


async def test_send_events_is_accepted_by_the_real_ingress(services: Services) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        connection = await create_connection(
            session,
            tenant_id=tenant.id,
            factory=WebhookConnectorFactory(),
            name="helpdesk",
            config={},
            secrets={"signing_secret": SECRET},
            keyring=services.keyring,
        )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://sy.test") as client:
        events = [make_event("ticket", "T-1"), make_event("ticket", "T-2")]
        response = await send_events(client, f"/hooks/{connection.id}", SECRET, events)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 2
        forged = await send_events(client, f"/hooks/{connection.id}", "wrong-secret-000", events)
        assert forged.status_code == 401
    async with services.sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(Event))
    assert stored == 2
