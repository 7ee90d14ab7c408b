"""End to end: a record changes in the SANDBOX portal → a signed v3 webhook batch →
Switchyard's ``POST /hooks/{id}`` → the sample flows (mappings/hubspot/contact_intent.yaml,
deal_risk.yaml) on a real worker → the Anthropic SANDBOX → the write-back in the portal.
The write-back's own webhook starts nothing; under a 429 storm no job fails and no write
is lost or doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from connectors.hubspot.sandbox import HubSpotSandbox, SandboxServer
from core.db.models import Job, JobStatus
from core.sandbox.anthropic import AnthropicSandbox
from core.settings import Settings
from tests.connectors.hubspot.conftest import CLIENT_SECRET, TOKEN, config_for
from tests.connectors.support import Switchyard, settled, start_switchyard

FLOWS = ("hubspot/contact_intent", "hubspot/deal_risk")


@pytest.fixture
async def switchyard(
    settings: Settings, portal: HubSpotSandbox, server: SandboxServer
) -> AsyncIterator[Switchyard]:
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=5).app) as claude:
        async with start_switchyard(
            settings,
            claude.url,
            "hubspot",
            config=config_for(server.url),
            secrets={"client_secret": CLIENT_SECRET, "access_token": TOKEN},
            flows=FLOWS,
        ) as started:
            portal.subscribe(started.hook_url)
            yield started


async def settle(
    switchyard: Switchyard, portal: HubSpotSandbox, expected: int, timeout: float = 30
) -> list[Job]:
    """Deliver webhooks until ``expected`` flow jobs exist and all have finished (or wait
    for a reviewer), and the portal has nothing left to send."""
    return await switchyard.settle(
        portal.deliver, lambda jobs: settled(jobs, expected) and not portal.outbox.pending, timeout
    )


def _ids(portal: HubSpotSandbox, object_type: str) -> list[str]:
    return sorted(portal.store.records[object_type], key=int)


async def test_a_change_in_hubspot_is_answered_and_written_back_once(
    switchyard: Switchyard, portal: HubSpotSandbox
) -> None:
    contact = _ids(portal, "contacts")[0]
    deal = _ids(portal, "deals")[1]
    portal.change("contacts", contact, {"message": "Please send a quote for 80 seats."})
    portal.change("deals", deal, {"dealstage": "decisionmakerboughtin"})
    jobs = await settle(switchyard, portal, expected=2)
    assert sorted(j.flow or "" for j in jobs) == list(FLOWS)  # the write-backs start nothing
    assert all(j.status in (JobStatus.DONE, JobStatus.AWAITING_REVIEW) for j in jobs)
    written = portal.record("contacts", contact) or {}
    assert written["switchyard_intent"] in ("buying", "researching", "support", "not_a_fit")
    assert written["switchyard_summary"]
    deal_job = next(j for j in jobs if j.flow == "hubspot/deal_risk")
    deal_now = portal.record("deals", deal) or {}
    if deal_job.status is JobStatus.DONE:  # a high risk waits for a reviewer instead
        assert deal_now["switchyard_risk_level"] in ("low", "medium")
    assert len([w for w in portal.writes if w[1] == contact]) == 1
    # The write-backs' own webhooks arrived and were dropped before storage.
    own = [e for e in portal.outbox.delivered if e["changeSource"] == "INTEGRATION"]
    assert own
    assert all(e["sourceId"] == str(portal.app_id) for e in own)


async def test_under_a_429_storm_no_job_fails_and_no_write_is_lost_or_doubled(
    switchyard: Switchyard, portal: HubSpotSandbox
) -> None:
    contacts = _ids(portal, "contacts")
    for n, contact in enumerate(contacts):
        portal.change("contacts", contact, {"message": f"Need pricing for {10 + n} seats"})
    portal.inject(429, times=12)  # a storm across every job's HubSpot calls
    jobs = await settle(switchyard, portal, expected=len(contacts), timeout=45)
    assert [j.status for j in jobs] == [JobStatus.DONE] * len(contacts)
    for contact in contacts:
        assert (portal.record("contacts", contact) or {})["switchyard_intent"]
        assert len([w for w in portal.writes if w[1] == contact]) == 1
