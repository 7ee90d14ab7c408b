"""End to end: a row changes in the SANDBOX Dataverse environment → its webhook (WebhookKey
auth) → Switchyard's ``POST /hooks/{id}`` → the sample flows (mappings/dynamics/*.yaml) on a
real worker → the Anthropic SANDBOX → a review item (ERP writes are always reviewed) →
a reviewer's decision → the worker writes → the value is in the row, exactly once. The
write-back's own webhook starts nothing; rejected and expired items write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from connectors.dynamics.sandbox import APP_USER, DataverseSandbox
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from core import review_decisions
from core.db.models import Job, JobStatus, ReviewItem, ReviewStatus
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.settings import Settings
from tests.connectors.dynamics.conftest import SECRETS, WEBHOOK_SECRET, dv_config
from tests.connectors.support import Switchyard, start_switchyard

FLOWS = ("dynamics/account_health", "dynamics/case_triage")


@pytest.fixture
async def switchyard(
    settings: Settings, environment: DataverseSandbox, server: TlsSandboxServer, tls: TlsFiles
) -> AsyncIterator[Switchyard]:
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=7).app) as claude:
        async with start_switchyard(
            settings,
            claude.url,
            "dynamics",
            config=dv_config(server.url, tls.ca_file, webhook_auth={"kind": "webhookkey"}),
            secrets=SECRETS,
            flows=FLOWS,  # checked against the sandbox's EntityDefinitions first
        ) as started:
            environment.register_webhook(started.hook_url, kind="webhookkey", key=WEBHOOK_SECRET)
            yield started


async def until(
    switchyard: Switchyard, environment: DataverseSandbox, done: Callable[[list[Job]], bool]
) -> list[Job]:
    """Deliver webhooks until ``done(jobs)`` holds and nothing is left to send."""
    return await switchyard.settle(
        environment.deliver, lambda jobs: done(jobs) and not environment.outbox.pending
    )


def _parked(expected: int) -> Callable[[list[Job]], bool]:
    return lambda jobs: (
        len(jobs) >= expected and all(j.status == JobStatus.AWAITING_REVIEW for j in jobs)
    )


def _finished(jobs: list[Job]) -> bool:
    return bool(jobs) and all(j.status == JobStatus.DONE for j in jobs)


async def test_an_approved_proposal_is_written_exactly_once(
    switchyard: Switchyard, environment: DataverseSandbox
) -> None:
    account = environment.ids("account")[1]
    case = environment.ids("incident")[1]
    environment.change("account", account, {"description": "Two invoices disputed again."})
    environment.change("incident", case, {"description": "All scanners down, 60 people idle."})
    jobs = await until(switchyard, environment, _parked(2))
    assert sorted(j.flow or "" for j in jobs) == list(FLOWS)
    assert environment.writes == []  # nothing is written before a person approves
    reviewer = await switchyard.reviewer()
    items = [await switchyard.review_item(j.id) for j in jobs]
    assert all(item.triggered_by and item.triggered_by.startswith("dynamics:") for item in items)
    for item in items:
        await review_decisions.approve(switchyard.services, item.id, reviewer, note="ok")
    jobs = await until(switchyard, environment, _finished)
    assert len(jobs) == 2  # the write-backs' own webhooks started nothing
    health = environment.record("account", account) or {}
    assert isinstance(health["new_healthscore"], int)
    assert health["new_healthsummary"]
    triage = environment.record("incident", case) or {}
    assert triage["new_aisuggestedpriority"] in (1, 2, 3)
    assert triage["prioritycode"] == 2  # never overwritten
    assert sorted(w[1] for w in environment.writes) == sorted([account, case])
    own = [b for b in environment.outbox.delivered if b["InitiatingUserId"] == APP_USER]
    assert own  # the write-backs were delivered too, and dropped before storage
    for item in items:
        assert (await switchyard.review_item(item.job_id)).status == ReviewStatus.WRITTEN.value


async def test_a_rejected_proposal_writes_nothing(
    switchyard: Switchyard, environment: DataverseSandbox
) -> None:
    account = environment.ids("account")[0]
    environment.change("account", account, {"revenue": 52_000_000.0})
    [job] = await until(switchyard, environment, _parked(1))
    item = await switchyard.review_item(job.id)
    await review_decisions.reject(switchyard.services, item.id, await switchyard.reviewer(), "no")
    await until(switchyard, environment, _finished)
    assert environment.writes == []
    assert (environment.record("account", account) or {})["new_healthscore"] is None


async def test_an_expired_proposal_writes_nothing(
    switchyard: Switchyard, environment: DataverseSandbox
) -> None:
    case = environment.ids("incident")[0]
    environment.change("incident", case, {"title": "Invoice 2024-1187 charged three times"})
    [job] = await until(switchyard, environment, _parked(1))
    async with switchyard.services.sessions.begin() as session:  # nobody decided in time
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.job_id == job.id)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert await review_decisions.expire_due(switchyard.services) == 1
    await until(switchyard, environment, _finished)
    assert environment.writes == []
    item = await switchyard.review_item(job.id)
    assert item.status == ReviewStatus.EXPIRED.value


async def test_under_a_429_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard, environment: DataverseSandbox
) -> None:
    accounts = environment.ids("account")
    for n, account in enumerate(accounts):
        environment.change("account", account, {"numberofemployees": 100 + n})
    environment.inject(429, times=6, retry_after=0)  # across every job's Dataverse calls
    jobs = await until(switchyard, environment, _parked(len(accounts)))
    reviewer = await switchyard.reviewer()
    items = [await switchyard.review_item(job.id) for job in jobs]
    for item in items[:-1]:
        await review_decisions.approve(switchyard.services, item.id, reviewer)
    environment.inject(429, times=3, retry_after=0, code="0x80072321")  # while writes run
    await review_decisions.approve(switchyard.services, items[-1].id, reviewer)
    jobs = await until(switchyard, environment, _finished)
    assert len(jobs) == len(accounts)
    assert sorted(w[1] for w in environment.writes) == sorted(accounts)
    for account in accounts:
        assert isinstance((environment.record("account", account) or {})["new_healthscore"], int)
