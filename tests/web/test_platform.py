"""The platform routes: probes, metrics, the problem catalogue, OpenAPI, and the 500 path."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from core import errors
from core.db.engine import async_url, make_engine, make_sessionmaker
from core.db.migrate import head_revision
from core.gateway.admission import AdmissionTimeout
from core.gateway.catalog import UnknownModel
from core.gateway.routing import UnknownTask
from core.gateway.upstream import UpstreamError
from core.services import Services
from core.web.app import create_app, trace_id_from_traceparent
from tests.web.support import (
    PROBLEM,
    TenantKeys,
    assert_problem,
    body_of,
    deliver,
    enable_flow,
    ticket,
)


async def _client_for(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(services))
    return httpx.AsyncClient(transport=transport, base_url="http://switchyard.test")


@pytest.fixture
async def unmigrated_engine(services: Services, tmp_path: object) -> AsyncIterator[AsyncEngine]:
    """An empty database on the same backend: a fresh SQLite file, or on PostgreSQL a fresh
    schema first on the search path (so no alembic_version table is visible)."""
    url = services.settings.database_url
    if url.startswith("sqlite"):
        engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
        yield engine
        await engine.dispose()
        return
    schema = f"empty_{secrets.token_hex(4)}"
    admin = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_async_engine(
        async_url(url), connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": head_revision()}


async def test_readyz_503_on_an_unmigrated_database(
    services: Services, unmigrated_engine: AsyncEngine
) -> None:
    empty = dataclasses.replace(
        services, engine=unmigrated_engine, sessions=make_sessionmaker(unmigrated_engine)
    )
    async with await _client_for(empty) as client:
        response = await client.get("/readyz")
    problem = assert_problem(response, 503, "database-not-migrated")
    assert "switchyard db upgrade" in problem["detail"]


async def test_readyz_503_when_the_database_is_unreachable(services: Services) -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:9/none")  # discard port: refused
    unreachable = dataclasses.replace(services, engine=engine, sessions=make_sessionmaker(engine))
    try:
        async with await _client_for(unreachable) as client:
            response = await client.get("/readyz")
    finally:
        await engine.dispose()
    assert_problem(response, 503, "database-unavailable")


async def test_metrics_expose_ingress_counters_and_queue_depth(
    client: httpx.AsyncClient, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, "webhook/ticket_updates")
    body = body_of(ticket("m-1"))
    await deliver(client, connection_a, body)
    await deliver(client, connection_a, body)
    await deliver(client, connection_a, body, secret="wrong-secret-wrong-secret")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    for expected in (
        'switchyard_ingress_requests_total{connector="webhook",outcome="accepted"} 1.0',
        'switchyard_ingress_requests_total{connector="webhook",outcome="duplicate"} 1.0',
        'switchyard_ingress_requests_total{connector="webhook",outcome="rejected"} 1.0',
        'switchyard_ingress_events_total{connector="webhook",result="new"} 1.0',
        'switchyard_ingress_events_total{connector="webhook",result="duplicate"} 1.0',
        'switchyard_ingress_ack_seconds_count{connector="webhook"} 2.0',
        'switchyard_queue_jobs{status="queued"} 1.0',
        'switchyard_queue_jobs{status="running"} 0.0',
        'switchyard_gateway_log_pending{writer="gateway call records"} 0.0',
        'switchyard_gateway_log_dropped_total{writer="gateway call records"} 0.0',
        'switchyard_gateway_log_dropped_total{writer="call audit records"} 0.0',
    ):
        assert expected in lines, expected


async def test_problems_lists_every_type_from_core_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/problems")
    assert response.status_code == 200
    listed = {entry["problem_type"]: entry for entry in response.json()}
    declared = {
        cls.problem_type: cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.SwitchyardError)
    }
    # Modules that declare their own errors (the gateway's) are listed too.
    declared |= {
        cls.problem_type: cls
        for cls in (UnknownModel, UnknownTask, AdmissionTimeout, UpstreamError)
    }
    assert set(declared) <= set(listed)
    assert all(listed[name]["title"] for name in set(listed) - set(declared))
    for name, entry in listed.items():
        assert entry["type"] == f"/problems/{name}"
    for name, cls in declared.items():
        assert listed[name]["status"] == cls.status
        assert listed[name]["title"] == cls.title


async def test_problem_type_uris_resolve(client: httpx.AsyncClient) -> None:
    not_found = await client.get("/v1/jobs/1")  # unauthenticated: any problem will do
    resolved = await client.get(not_found.json()["type"])
    assert resolved.status_code == 200
    assert resolved.json()["problem_type"] == "unauthenticated"
    missing = await client.get("/problems/no-such-type")
    assert_problem(missing, 404, "not-found")


async def test_unexpected_errors_are_500_problems_with_the_trace_id(
    services: Services,
) -> None:
    app = create_app(services)

    async def explode() -> None:
        raise RuntimeError("the database exploded with password=hunter2")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with capture_logs() as logs:
            response = await client.get("/explode")

    problem = assert_problem(response, 500, "internal-error")
    assert response.headers["content-type"].startswith(PROBLEM)
    assert problem["trace_id"] in problem["detail"]
    assert "hunter2" not in response.text  # internals stay in the log
    [logged] = [entry for entry in logs if entry["event"] == "unhandled error"]
    assert logged["log_level"] == "error"
    assert logged["exc_info"] is True
    assert logged["path"] == "/explode"


async def test_every_response_carries_a_trace_id(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/healthz"),
        await client.get("/nowhere"),
        await client.post("/hooks/con_x", content=b"x" * (64 * 1024 + 1)),
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-trace-id"]), response


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["title"] == "Switchyard"
    assert schema["info"]["description"]
    for path in ("/hooks/{connection_id}", "/v1/jobs", "/v1/connections", "/healthz"):
        assert path in schema["paths"], path
    schemes = schema["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"http", "apiKey"}
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_transient_errors_say_when_to_retry(services: Services) -> None:
    app = create_app(services)

    async def busy() -> None:
        raise errors.ConnectorTransientError("the platform is throttling us", retry_after=2.5)

    app.add_api_route("/busy", busy)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/busy")
    assert_problem(response, 503, "connector-unavailable")
    assert response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6-00f067aa0ba902b7-01", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_parsing(header: str | None, expected: str | None) -> None:
    assert trace_id_from_traceparent(header) == expected
