"""Webhook ingress: signed deliveries are stored durably, fan out to enabled flows once."""

from __future__ import annotations

import asyncio
import re

import httpx
from sqlalchemy import select

from core.db.models import Event, Job, JobStatus
from core.ingest import FLOW_JOB
from core.services import Services
from tests.web.conftest import WakeCounter
from tests.web.support import TenantKeys, body_of, deliver, enable_flow, row_counts, ticket

UPDATES = "webhook/ticket_updates"
TRIAGE = "webhook/ticket_triage"
DELETIONS = "webhook/ticket_deletions"


async def _jobs(services: Services) -> list[Job]:
    async with services.sessions.begin() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def _events(services: Services) -> list[Event]:
    async with services.sessions.begin() as session:
        return list((await session.scalars(select(Event).order_by(Event.id))).all())


async def test_signed_delivery_stores_event_and_one_job_per_enabled_flow(
    client: httpx.AsyncClient,
    services: Services,
    tenant_a: TenantKeys,
    connection_a: str,
    wakes: WakeCounter,
) -> None:
    await enable_flow(client, tenant_a, connection_a, UPDATES)
    await enable_flow(client, tenant_a, connection_a, TRIAGE)
    await enable_flow(client, tenant_a, connection_a, DELETIONS)

    response = await deliver(client, connection_a, body_of(ticket("evt-1")))

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert answer["duplicates"] == 0
    [event] = await _events(services)
    assert (event.tenant_id, event.connection_id) == (tenant_a.id, connection_a)
    assert (event.platform_event_id, event.object, event.record_id) == ("evt-1", "ticket", "T-1")
    assert event.change_type == "created"
    assert event.data == {"subject": "Printer on fire"}
    jobs = await _jobs(services)
    # created tickets match the updates and triage flows; the deletions flow does not.
    assert sorted(answer["jobs"]) == [job.id for job in jobs]
    assert sorted(job.flow or "" for job in jobs) == [TRIAGE, UPDATES]
    for job in jobs:
        assert job.kind == FLOW_JOB
        assert job.status == JobStatus.QUEUED
        assert (job.tenant_id, job.connection_id, job.event_id) == (
            tenant_a.id,
            connection_a,
            event.id,
        )
        assert job.trace_id == event.trace_id == response.headers["x-trace-id"]
    assert wakes.calls == 1


async def test_same_delivery_twenty_times_concurrently_is_one_event_and_one_job_per_flow(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, UPDATES)
    await enable_flow(client, tenant_a, connection_a, TRIAGE)
    body = body_of(ticket("evt-storm"))

    responses = await asyncio.gather(*(deliver(client, connection_a, body) for _ in range(20)))

    assert [r.status_code for r in responses] == [202] * 20
    answers = [r.json() for r in responses]
    assert sum(a["accepted"] for a in answers) == 1
    assert sum(a["duplicates"] for a in answers) == 19
    job_ids = [job_id for a in answers for job_id in a["jobs"]]
    counts = await row_counts(services)
    assert counts["events"] == 1
    assert counts["jobs"] == 2
    assert sorted(job_ids) == [job.id for job in await _jobs(services)]


async def test_redelivery_is_counted_as_duplicate(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, UPDATES)
    first = await deliver(client, connection_a, body_of(ticket("a"), ticket("b"), ticket("a")))
    again = await deliver(client, connection_a, body_of(ticket("a"), ticket("b")))

    assert first.json()["accepted"] == 2
    assert first.json()["duplicates"] == 1  # the same event twice in one body
    assert len(first.json()["jobs"]) == 2
    assert again.json() == {"accepted": 0, "duplicates": 2, "jobs": []}
    counts = await row_counts(services)
    assert (counts["events"], counts["jobs"]) == (2, 2)


async def test_flow_not_enabled_stores_the_event_without_a_job(
    client: httpx.AsyncClient,
    services: Services,
    tenant_a: TenantKeys,
    connection_a: str,
    wakes: WakeCounter,
) -> None:
    never = await deliver(client, connection_a, body_of(ticket("evt-1")))
    await enable_flow(client, tenant_a, connection_a, UPDATES)
    await enable_flow(client, tenant_a, connection_a, UPDATES, on=False)
    switched_off = await deliver(client, connection_a, body_of(ticket("evt-2")))

    assert never.json() == {"accepted": 1, "duplicates": 0, "jobs": []}
    assert switched_off.json() == {"accepted": 1, "duplicates": 0, "jobs": []}
    counts = await row_counts(services)
    assert (counts["events"], counts["jobs"]) == (2, 0)
    assert wakes.calls == 0  # no new job, nothing to wake for


async def test_when_changed_filter_is_respected(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, UPDATES)  # when_changed: status, body

    other_field = await deliver(
        client, connection_a, body_of(ticket("u-1", "updated", changed_fields=["priority"]))
    )
    watched_field = await deliver(
        client,
        connection_a,
        body_of(ticket("u-2", "updated", changed_fields=["priority", "status"])),
    )

    assert other_field.json()["accepted"] == 1
    assert other_field.json()["jobs"] == []
    assert len(watched_field.json()["jobs"]) == 1
    [job] = await _jobs(services)
    [_, watched] = await _events(services)
    assert (job.flow, job.event_id) == (UPDATES, watched.id)


async def test_deleted_events_reach_only_the_deletions_flow(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    for flow in (UPDATES, TRIAGE, DELETIONS):
        await enable_flow(client, tenant_a, connection_a, flow)

    response = await deliver(client, connection_a, body_of(ticket("d-1", "deleted")))

    assert len(response.json()["jobs"]) == 1
    [job] = await _jobs(services)
    assert job.flow == DELETIONS


async def test_traceparent_sets_the_trace_id_of_event_and_jobs(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, connection_a: str
) -> None:
    await enable_flow(client, tenant_a, connection_a, UPDATES)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = await deliver(
        client,
        connection_a,
        body_of(ticket("t-1")),
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    untraced = await deliver(
        client, connection_a, body_of(ticket("t-2")), headers={"traceparent": "garbage"}
    )

    assert traced.headers["x-trace-id"] == trace
    assert re.fullmatch(r"[0-9a-f]{32}", untraced.headers["x-trace-id"])
    assert untraced.headers["x-trace-id"] != trace
    first, second = await _events(services)
    assert first.trace_id == trace
    assert second.trace_id == untraced.headers["x-trace-id"]
    jobs = await _jobs(services)
    assert [job.trace_id for job in jobs] == [first.trace_id, second.trace_id]


async def test_previous_signing_secret_is_not_needed_and_a_foreign_secret_fails(
    client: httpx.AsyncClient, services: Services, connection_a: str
) -> None:
    """The signature is the only authentication: no API key needed, and no other secret."""
    ok = await deliver(client, connection_a, body_of(ticket("s-1")))
    forged = await deliver(
        client, connection_a, body_of(ticket("s-2")), secret="someone-elses-secret-value"
    )

    assert ok.status_code == 202
    assert forged.status_code == 401
    assert [e.platform_event_id for e in await _events(services)] == ["s-1"]
