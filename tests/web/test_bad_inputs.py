"""Bad inputs: each gets its status and problem type as application/problem+json, and
nothing is stored — every counted table and every row's state is compared before/after."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select, update

from core import signing
from core.db.models import Job, JobStatus, Role
from core.services import Services
from tests.web.conftest import API_LIMIT, HOOK_LIMIT
from tests.web.support import (
    SIGNING_SECRET,
    TenantKeys,
    assert_problem,
    body_of,
    deliver,
    enable_flow,
    snapshot,
    ticket,
)

Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@pytest.fixture
async def populated(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> str:
    """A connection with an enabled flow and one stored event + job, so 'unchanged' has
    something to compare; returns the connection id."""
    await enable_flow(client, tenant_a, connection_a, "webhook/ticket_updates")
    response = await deliver(client, connection_a, body_of(ticket("seed")))
    assert response.json()["accepted"] == 1
    return connection_a


async def _chunks(payload: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def _padded_body(size: int) -> bytes:
    event = ticket("big") | {"data": {"blob": "x" * size}}
    return body_of(event)


async def _assert_rejected(
    services: Services, request: Awaitable[httpx.Response], status: int, problem_type: str
) -> dict[str, object]:
    before = await snapshot(services)
    problem = assert_problem(await request, status, problem_type)
    assert await snapshot(services) == before
    return problem


# ------------------------------------------------------------------ webhook ingress


async def test_oversize_hook_body_with_content_length(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    body = _padded_body(HOOK_LIMIT)
    problem = await _assert_rejected(
        services, deliver(client, populated, body), 413, "payload-too-large"
    )
    assert problem["limit"] == HOOK_LIMIT


async def test_oversize_hook_body_chunked(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    body = _padded_body(HOOK_LIMIT)
    request = client.post(
        f"/hooks/{populated}",
        content=_chunks(body),
        headers={signing.HEADER: signing.sign(SIGNING_SECRET, body)},
    )
    await _assert_rejected(services, request, 413, "payload-too-large")


async def test_hook_body_just_under_the_limit_is_accepted(
    client: httpx.AsyncClient, populated: str
) -> None:
    body = _padded_body(HOOK_LIMIT - 1024)
    assert len(body) <= HOOK_LIMIT
    streamed = client.post(
        f"/hooks/{populated}",
        content=_chunks(body),
        headers={signing.HEADER: signing.sign(SIGNING_SECRET, body)},
    )
    assert (await streamed).status_code == 202


async def test_bad_signature(client: httpx.AsyncClient, services: Services, populated: str) -> None:
    request = deliver(client, populated, body_of(ticket("e")), secret="not-the-secret-at-all")
    await _assert_rejected(services, request, 401, "signature-invalid")


async def test_signature_over_another_body(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    signed = signing.sign(SIGNING_SECRET, body_of(ticket("original")))
    request = client.post(
        f"/hooks/{populated}", content=body_of(ticket("tampered")), headers={signing.HEADER: signed}
    )
    await _assert_rejected(services, request, 401, "signature-invalid")


async def test_missing_signature(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    request = client.post(f"/hooks/{populated}", content=body_of(ticket("e")))
    await _assert_rejected(services, request, 401, "signature-invalid")


async def test_stale_timestamp(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    stale = int(time.time()) - services.settings.webhook_tolerance_seconds - 60
    request = deliver(client, populated, body_of(ticket("e")), timestamp=stale)
    problem = await _assert_rejected(services, request, 401, "signature-invalid")
    assert "at most" in str(problem["detail"])


async def test_unknown_connection(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    request = deliver(client, "con_does_not_exist", body_of(ticket("e")))
    await _assert_rejected(services, request, 404, "not-found")


async def test_malformed_json(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    request = deliver(client, populated, b'{"events": [')
    problem = await _assert_rejected(services, request, 400, "payload-malformed")
    assert "not JSON" in str(problem["detail"])


async def test_schema_invalid_body_names_the_reason(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    event = ticket("e") | {"type": "exploded"}
    request = deliver(client, populated, body_of(event))
    problem = await _assert_rejected(services, request, 422, "invalid-request")
    assert "events.0.type" in str(problem["detail"])


async def test_one_bad_event_rejects_the_whole_delivery(
    client: httpx.AsyncClient, services: Services, populated: str
) -> None:
    good, bad = ticket("ok"), ticket("bad") | {"record_id": ""}
    request = deliver(client, populated, body_of(good, bad))
    await _assert_rejected(services, request, 422, "invalid-request")


# ------------------------------------------------------------------ API


async def test_oversize_api_body_with_content_length(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    payload = {"connector": "webhook", "name": "big", "config": {"pad": "x" * API_LIMIT}}
    request = client.post("/v1/connections", json=payload, headers=tenant_a.headers())
    await _assert_rejected(services, request, 413, "payload-too-large")


async def test_oversize_api_body_chunked(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    body = (
        b'{"connector": "webhook", "name": "big", "config": {"pad": "' + b"x" * API_LIMIT + b'"}}'
    )
    request = client.post(
        "/v1/connections",
        content=_chunks(body),
        headers={**tenant_a.headers(), "content-type": "application/json"},
    )
    await _assert_rejected(services, request, 413, "payload-too-large")


def _new_connection() -> dict[str, object]:
    return {
        "connector": "webhook",
        "name": "second",
        "secrets": {"signing_secret": "a-perfectly-good-signing-secret"},
    }


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"authorization": "Bearer sy_000000000000_unknownkey"}, id="unknown"),
        pytest.param({"x-api-key": "not-even-a-key"}, id="malformed"),
        pytest.param({"authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
    ],
)
async def test_bad_api_key(
    client: httpx.AsyncClient, services: Services, populated: str, headers: dict[str, str]
) -> None:
    request = client.post("/v1/connections", json=_new_connection(), headers=headers)
    response_problem = await _assert_rejected(services, request, 401, "unauthenticated")
    assert response_problem["detail"]


async def test_unauthenticated_answers_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/jobs")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_revoked_key_is_unauthenticated(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    from core.auth import revoke_api_key

    async with services.sessions.begin() as session:
        await revoke_api_key(session, tenant_a.key_ids[Role.ADMIN], tenant_a.id)
    request = client.post("/v1/connections", json=_new_connection(), headers=tenant_a.headers())
    await _assert_rejected(services, request, 401, "unauthenticated")


async def _job_id(services: Services) -> int:
    async with services.sessions.begin() as session:
        job = await session.scalar(select(Job.id).limit(1))
    assert job is not None
    return int(job)


async def test_wrong_role(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    job_id = await _job_id(services)
    async with services.sessions.begin() as session:
        await session.execute(update(Job).values(status=JobStatus.DEAD.value))
    reviewer, service = tenant_a.headers(Role.REVIEWER), tenant_a.headers(Role.SERVICE)
    attempts: list[Awaitable[httpx.Response]] = [
        client.post("/v1/connections", json=_new_connection(), headers=reviewer),
        client.post("/v1/connections", json=_new_connection(), headers=service),
        client.put(
            f"/v1/connections/{populated}/flows/webhook/ticket_updates",
            json={"enabled": False},
            headers=service,
        ),
        client.post(f"/v1/jobs/{job_id}/replay", headers=reviewer),
        client.post(f"/v1/jobs/{job_id}/cancel", headers=service),
    ]
    for attempt in attempts:
        problem = await _assert_rejected(services, attempt, 403, "forbidden")
        assert "role" in str(problem["detail"])


async def test_invalid_api_body_never_echoes_values(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    secret = "SuperSecretValue-do-not-echo"
    payload = {"connector": "webhook", "secrets": {"signing_secret": secret}, "extra": secret}
    request = client.post("/v1/connections", json=payload, headers=tenant_a.headers())
    before = await snapshot(services)
    response = await request
    problem = assert_problem(response, 422, "invalid-request")
    assert await snapshot(services) == before
    assert secret not in response.text
    locs = [tuple(error["loc"]) for error in problem["errors"]]
    assert ("body", "name") in locs
    assert ("body", "extra") in locs
    assert all(set(error) == {"loc", "msg"} for error in problem["errors"])


async def test_malformed_api_json(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    request = client.post(
        "/v1/connections",
        content=b'{"connector": ',
        headers={**tenant_a.headers(), "content-type": "application/json"},
    )
    await _assert_rejected(services, request, 422, "invalid-request")


async def test_unknown_route_and_method(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, populated: str
) -> None:
    await _assert_rejected(services, client.get("/v1/nowhere"), 404, "not-found")
    response = await client.delete(f"/hooks/{populated}")
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]
    await _assert_rejected(
        services, client.patch("/v1/jobs", headers=tenant_a.headers()), 405, "method-not-allowed"
    )


async def test_non_numeric_job_id_is_invalid(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.get("/v1/jobs/abc", headers=tenant_a.headers())
    assert_problem(response, 422, "invalid-request")
