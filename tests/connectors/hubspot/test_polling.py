"""Polling through the CRM search API against the SANDBOX: pages of records that share a
modified date, the 10,000-result cap (including more than 10,000 records at ONE instant),
the look-back, and our own write-backs skipped."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from connectors.base import ChangeType, Patch
from connectors.hubspot import HubSpotConnector
from connectors.hubspot.sandbox import HubSpotSandbox
from core.errors import ConnectorTerminalError
from tests.connectors.hubspot.conftest import MakeConnector


def _ms() -> int:
    return int(time.time() * 1000)


async def drain(connector: HubSpotConnector, cursor: Any = None) -> tuple[list[Any], Any, int]:
    events, calls = [], 0
    while True:
        page = await connector.poll(cursor)
        events.extend(page.events)
        cursor, calls = page.cursor, calls + 1
        if not page.more:
            return events, cursor, calls


async def test_pages_of_records_sharing_a_timestamp_arrive_once(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    now = _ms()
    same = [
        portal.store.create("contacts", {"email": f"a{n}@x.io"}, now - 5000).id for n in range(250)
    ]
    connector = make_connector(poll_objects=["contacts"], poll_page_size=100)
    events, cursor, calls = await drain(connector)
    assert calls == 3
    ids = Counter(e.record_id for e in events)
    assert set(same) <= set(ids)
    assert max(ids.values()) == 1
    assert all(e.change_type is ChangeType.CREATED for e in events if e.record_id in same)
    # A record changed later is found by the next poll; the look-back re-reads recent
    # ones, which keep their event ids (stored once).
    portal.change("contacts", same[7], {"jobtitle": "CTO"})
    later, _, _ = await drain(connector, cursor)
    changed = [e for e in later if e.record_id == same[7] and e.change_type is ChangeType.UPDATED]
    assert len(changed) == 1
    assert changed[0].changed_fields == ("message", "jobtitle", "company")
    old_ids = {e.platform_event_id for e in events}
    assert {e.platform_event_id for e in later} - old_ids == {changed[0].platform_event_id}


async def test_the_search_cap_is_crossed_without_gaps_or_repeats(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    # HubSpot's cap is 10,000 (the sandbox's default, below); 1,000 here keeps the test
    # fast and exercises the same path: restart at the last date, then a full capped
    # window at ONE instant, walked by id.
    portal.store.search_cap = 1000
    now = _ms()
    at_one_instant = [portal.store.create("contacts", {}, now - 9000).id for _ in range(1050)]
    spread = [portal.store.create("contacts", {}, now - 8000 + n // 3).id for n in range(300)]
    connector = make_connector(
        poll_objects=["contacts"], poll_page_size=100, search_max_results=1000
    )
    events, _, _ = await drain(connector)
    ids = Counter(e.record_id for e in events)
    assert set(at_one_instant) | set(spread) <= set(ids)
    unique = {e.platform_event_id for e in events}
    assert len(unique) == len(set(ids))  # each record's change has one event id


async def test_paging_past_the_cap_is_a_400_as_in_hubspot(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()
    with pytest.raises(ConnectorTerminalError, match=r"400 VALIDATION_ERROR.*limited to 10000"):
        await connector._api.search("contacts", {"limit": 10, "after": "10000"})


async def test_own_write_backs_are_not_polled_as_changes(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector(poll_objects=["deals"])
    _, cursor, _ = await drain(connector)
    deal_id = sorted(portal.store.records["deals"], key=int)[0]
    portal.gate.clock = lambda: time.time() + 1  # after the seed's instants
    await connector.write(Patch("deals", deal_id, {"switchyard_risk_level": "low"}), "job-1")
    events, _, _ = await drain(connector, cursor)
    assert [e for e in events if e.record_id == deal_id] == []
