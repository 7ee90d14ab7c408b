"""End to end: a Lead and a Case change in the SANDBOX org → an Outbound Message (SOAP) to
Switchyard's ``POST /hooks/{id}`` → the SOAP Ack → the sample flows
(mappings/salesforce/lead_qualification.yaml, case_summary.yaml) on a real worker → the
Anthropic SANDBOX → the write-back in the org. The flows are checked against the org's
describe before they are enabled. The write-back's own outbound message starts nothing;
under a storm of the org's faults no job fails and no write is lost or doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from connectors.salesforce.demo import CASE_FIELDS, LEAD_FIELDS
from connectors.salesforce.sandbox import INTEGRATION_USER, SalesforceSandbox
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from core.db.models import Event, Job, JobStatus
from core.db.types import utcnow
from core.sandbox.anthropic import AnthropicSandbox
from core.sandbox.server import SandboxServer
from core.settings import Settings
from tests.connectors.salesforce.conftest import SECRETS, lead_id, sf_config
from tests.connectors.support import Switchyard, settled, start_switchyard

LEAD_FLOW, CASE_FLOW = "salesforce/lead_qualification", "salesforce/case_summary"
FLOWS = (CASE_FLOW, LEAD_FLOW)
PARKED = (JobStatus.AWAITING_REVIEW,)
LEAD_WRITES = {"Rating", "Qualification_Reason__c"}
CASE_WRITES = {"AI_Summary__c", "AI_Next_Step__c", "AI_Sentiment__c"}


@pytest.fixture
async def switchyard(
    settings: Settings, org: SalesforceSandbox, server: TlsSandboxServer, tls: TlsFiles
) -> AsyncIterator[Switchyard]:
    # The sandbox "model" answers each request the same way for a seed; with this one the
    # leads' ratings are confident enough to be written without review.
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=2).app) as claude:
        async with start_switchyard(
            settings,
            claude.url,
            "salesforce",
            config=sf_config(
                server,
                tls,
                external_id_fields={"Lead": "Switchyard_Key__c", "Case": "Switchyard_Key__c"},
                writeback_fields={"Lead": sorted(LEAD_WRITES), "Case": sorted(CASE_WRITES)},
            ),
            secrets=SECRETS,
            flows=FLOWS,  # checked against the org's describe before they are enabled
        ) as started:
            # The rules an admin sets up: "created, and every time it's edited" → this hook.
            org.add_outbound_rule("Lead", started.hook_url, LEAD_FIELDS)
            org.add_outbound_rule("Case", started.hook_url, CASE_FIELDS)
            yield started


async def pass_retry_waits(switchyard: Switchyard) -> None:
    """While no job runs, bring the queued retries forward: the back-off the org's faults
    ask for (300 s after REQUEST_LIMIT_EXCEEDED) passes at once, as it would on a simulated
    clock. The order of attempts is the real one."""
    async with switchyard.services.sessions.begin() as session:
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
        switchyard.worker.wake()


async def settle(
    switchyard: Switchyard,
    org: SalesforceSandbox,
    server: TlsSandboxServer,
    expected: int,
    timeout: float = 30,
) -> list[Job]:
    """Deliver outbound messages until ``expected`` flow jobs exist and all have finished,
    and the org has nothing left to send; the retries' waits pass at once."""

    async def deliver(client: httpx.AsyncClient) -> None:
        await pass_retry_waits(switchyard)
        await org.deliver_outbound(client, server.url)

    return await switchyard.settle(
        deliver,
        lambda jobs: settled(jobs, expected) and not org.pending_notifications(),
        timeout,
    )


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
    switchyard: Switchyard, org: SalesforceSandbox, server: TlsSandboxServer
) -> None:
    lead = lead_id(org)
    case = org.ids("Case")[0]
    org.change(
        "Lead",
        lead,
        Description="We run 300 trucks and need route optimisation live before our Q3 "
        "budget sign-off. Please send pricing and book a demo for our COO next week.",
    )
    org.change("Case", case, Status="Working")
    jobs = await settle(switchyard, org, server, expected=2)

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
    assert await org.deliver_outbound(switchyard.client, server.url) == 0
    assert len(await switchyard.jobs()) == 2


async def test_under_a_fault_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard, org: SalesforceSandbox, server: TlsSandboxServer
) -> None:
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
    jobs = await settle(switchyard, org, server, expected=len(leads) + len(cases), timeout=45)

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
