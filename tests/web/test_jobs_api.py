"""The jobs API: job JSON, filters, keyset pagination, replay/cancel rules and audit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from core.db.models import AuditEntry, Job, JobStatus, Role
from core.queue import NewJob, enqueue
from core.services import Services
from tests.web.conftest import WakeCounter
from tests.web.support import TenantKeys, assert_problem, body_of, deliver, enable_flow, ticket

JOB_FIELDS = {
    "id",
    "kind",
    "status",
    "flow",
    "connection_id",
    "event_id",
    "attempts",
    "max_attempts",
    "priority",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "last_error",
    "result",
    "trace_id",
}


async def _enqueue(services: Services, *jobs: NewJob) -> list[int]:
    async with services.sessions.begin() as session:
        return await enqueue(session, list(jobs))


async def _set_status(services: Services, job_id: int, status: JobStatus) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=status.value, attempts=3, last_error="boom")
        )


async def _audit(services: Services, tenant_id: str) -> list[AuditEntry]:
    async with services.sessions.begin() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.tenant_id == tenant_id).order_by(AuditEntry.id)
        )
        return list(rows.all())


async def _ids(client: httpx.AsyncClient, tenant: TenantKeys, **params: Any) -> list[int]:
    response = await client.get("/v1/jobs", params=params, headers=tenant.headers(Role.REVIEWER))
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


async def test_job_json_from_a_delivered_event(
    client: httpx.AsyncClient, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, "webhook/ticket_updates")
    delivered = await deliver(client, connection_a, body_of(ticket("e-1")))
    [job_id] = delivered.json()["jobs"]

    response = await client.get(f"/v1/jobs/{job_id}", headers=tenant_a.headers(Role.SERVICE))

    assert response.status_code == 200
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert job["id"] == job_id
    assert (job["kind"], job["status"], job["flow"]) == (
        "flow.run",
        "queued",
        "webhook/ticket_updates",
    )
    assert job["connection_id"] == connection_a
    assert job["trace_id"] == delivered.headers["x-trace-id"]
    assert (job["attempts"], job["started_at"], job["finished_at"]) == (0, None, None)


async def test_unknown_job_is_not_found(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    response = await client.get("/v1/jobs/987654", headers=tenant_a.headers())
    assert_problem(response, 404, "not-found")


async def test_filters(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    a = tenant_a.id
    flow_x = NewJob(kind="flow.run", tenant_id=a, flow="x/one")
    [x1, x2, y1, other_kind, b_job] = await _enqueue(
        services,
        flow_x,
        flow_x,
        NewJob(kind="flow.run", tenant_id=a, flow="y/two"),
        NewJob(kind="connector.poll", tenant_id=a),
        NewJob(kind="flow.run", tenant_id=tenant_b.id, flow="x/one"),
    )
    await _set_status(services, x2, JobStatus.DEAD)

    assert await _ids(client, tenant_a) == [other_kind, y1, x2, x1]
    assert await _ids(client, tenant_a, flow="x/one") == [x2, x1]
    assert await _ids(client, tenant_a, status="dead") == [x2]
    assert await _ids(client, tenant_a, status="queued", flow="x/one") == [x1]
    assert await _ids(client, tenant_a, kind="connector.poll") == [other_kind]
    assert await _ids(client, tenant_a, kind="flow.run") == [y1, x2, x1]
    assert b_job not in await _ids(client, tenant_a)
    bad = await client.get("/v1/jobs", params={"status": "sleeping"}, headers=tenant_a.headers())
    assert_problem(bad, 422, "invalid-request")


async def test_filter_by_connection(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, "webhook/ticket_updates")
    delivered = await deliver(client, connection_a, body_of(ticket("c-1"), ticket("c-2")))
    await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))

    by_connection = await _ids(client, tenant_a, connection_id=connection_a)

    assert sorted(by_connection) == sorted(delivered.json()["jobs"])
    assert len(await _ids(client, tenant_a)) == 3


async def test_keyset_pagination_has_no_repeats_or_gaps(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    created = await _enqueue(
        services, *(NewJob(kind="flow.run", tenant_id=tenant_a.id) for _ in range(7))
    )
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/jobs", params=params, headers=tenant_a.headers())
        page = response.json()
        seen.extend(job["id"] for job in page["data"])
        pages += 1
        if pages == 1:
            # A job arriving mid-walk is newer than the cursor: it shifts nothing.
            await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10

    assert pages == 3
    assert seen == sorted(created, reverse=True)


async def test_exact_multiple_of_the_page_size_ends_without_an_empty_page(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _enqueue(services, *(NewJob(kind="k", tenant_id=tenant_a.id) for _ in range(4)))
    first = (await client.get("/v1/jobs?limit=2", headers=tenant_a.headers())).json()
    second = (
        await client.get(
            "/v1/jobs",
            params={"limit": 2, "cursor": first["next_cursor"]},
            headers=tenant_a.headers(),
        )
    ).json()
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"cursor": "definitely-not-a-cursor"}, id="foreign-cursor"),
        pytest.param({"cursor": "am9iOng"}, id="tampered-cursor"),  # "job:x"
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": 501}, id="limit-over-max"),
    ],
)
async def test_bad_page_parameters(
    client: httpx.AsyncClient, tenant_a: TenantKeys, params: dict[str, Any]
) -> None:
    response = await client.get("/v1/jobs", params=params, headers=tenant_a.headers())
    assert_problem(response, 422, "invalid-request")


async def test_default_and_maximum_page_sizes(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _enqueue(services, *(NewJob(kind="k", tenant_id=tenant_a.id) for _ in range(51)))
    default = (await client.get("/v1/jobs", headers=tenant_a.headers())).json()
    maximum = (await client.get("/v1/jobs?limit=500", headers=tenant_a.headers())).json()
    assert len(default["data"]) == 50
    assert default["next_cursor"] is not None
    assert len(maximum["data"]) == 51
    assert maximum["next_cursor"] is None


async def test_replay_only_from_dead_or_cancelled(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, wakes: WakeCounter
) -> None:
    [job_id] = await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))
    service = tenant_a.headers(Role.SERVICE)

    queued = await client.post(f"/v1/jobs/{job_id}/replay", headers=service)
    assert_problem(queued, 409, "conflict")
    assert wakes.calls == 0

    await _set_status(services, job_id, JobStatus.DEAD)
    replayed = await client.post(f"/v1/jobs/{job_id}/replay", headers=service)

    assert replayed.status_code == 200, replayed.text
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("queued", 0)
    assert wakes.calls == 1
    [entry] = await _audit(services, tenant_a.id)
    assert (entry.action, entry.object_type, entry.object_id) == ("job.replay", "job", str(job_id))
    assert entry.actor == f"key:{tenant_a.key_ids[Role.SERVICE]}"
    assert entry.details == {"previous_status": "dead"}


async def test_cancel_then_cancel_again_conflicts_and_cancelled_can_be_replayed(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, wakes: WakeCounter
) -> None:
    [job_id] = await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))
    admin = tenant_a.headers()

    cancelled = await client.post(f"/v1/jobs/{job_id}/cancel", headers=admin)
    again = await client.post(f"/v1/jobs/{job_id}/cancel", headers=admin)
    replayed = await client.post(f"/v1/jobs/{job_id}/replay", headers=admin)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert_problem(again, 409, "conflict")
    assert replayed.json()["status"] == "queued"
    assert [
        (e.action, e.details["previous_status"]) for e in await _audit(services, tenant_a.id)
    ] == [
        ("job.cancel", "queued"),
        ("job.replay", "cancelled"),
    ]
    assert wakes.calls == 2


async def test_finished_jobs_cannot_be_cancelled(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    [job_id] = await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))
    await _set_status(services, job_id, JobStatus.DONE)
    response = await client.post(f"/v1/jobs/{job_id}/cancel", headers=tenant_a.headers())
    assert_problem(response, 409, "conflict")
    assert await _audit(services, tenant_a.id) == []


async def test_job_routes_work_without_an_in_process_worker(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    """``app.state.wake_worker`` is None in a pure API process (workers run elsewhere)."""
    [job_id] = await _enqueue(services, NewJob(kind="flow.run", tenant_id=tenant_a.id))
    await _set_status(services, job_id, JobStatus.DEAD)
    response = await client.post(f"/v1/jobs/{job_id}/replay", headers=tenant_a.headers())
    assert response.status_code == 200
