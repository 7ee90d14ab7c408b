"""Polling on LastChangeDateTime: records sharing a timestamp are neither lost nor read
twice, SAP's own paging (``__next``) is followed, our own writes start nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from connectors.base import Patch
from connectors.sap import SapConnector
from connectors.sap.sandbox import SapSandbox
from tests.connectors.sap.conftest import Clock, MakeConnector

ORDER = {"SalesOrderType": "OR", "SalesOrganization": "1010", "SoldToParty": "0010100002"}


async def _drain(connector: SapConnector, cursor: Any) -> tuple[list[str], Any, int]:
    seen: list[str] = []
    polls = 0
    while True:
        page = await connector.poll(cursor)
        polls += 1
        seen += [e.record_id for e in page.events]
        cursor = page.cursor
        if not page.more:
            return seen, cursor, polls


async def test_equal_timestamps_are_read_once_across_pages(
    make_connector: MakeConnector, system: SapSandbox, clock: Clock
) -> None:
    connector = make_connector(poll_page_size=2)
    start = await connector.poll(None)  # a first poll starts now
    assert start.events == []
    clock.resume()
    clock.freeze()  # five orders changed in the same millisecond
    created = [system.create("A_SalesOrder", ORDER) for _ in range(5)]
    clock.resume()
    seen, cursor, polls = await _drain(connector, start.cursor)
    assert seen == created
    assert polls >= 3
    again, cursor, _ = await _drain(connector, cursor)
    assert again == []  # nothing read twice
    system.change("A_SalesOrder", created[1], {"DeliveryBlockReason": "01"})
    later, _, _ = await _drain(connector, cursor)
    assert later == [created[1]]


async def test_sap_paging_with_next_links_is_followed(
    make_connector: MakeConnector, system: SapSandbox, clock: Clock
) -> None:
    system.services.page_limit = 2  # the server pages on its own, whatever $top says
    connector = make_connector(poll_page_size=50)
    start = await connector.poll(None)
    clock.resume()
    created = [system.create("A_SalesOrder", ORDER) for _ in range(5)]
    first = await connector.poll(start.cursor)
    assert [e.record_id for e in first.events] == created[:2]
    assert first.more
    assert first.cursor is not None
    assert "$skiptoken=" in first.cursor["objects"]["A_SalesOrder"]["next"]
    rest, _, _ = await _drain(connector, first.cursor)
    assert rest == created[2:]


async def test_our_own_writes_start_nothing(
    make_connector: MakeConnector, system: SapSandbox, clock: Clock
) -> None:
    connector = make_connector()
    start = await connector.poll(None)
    clock.resume()
    await connector.write(Patch("A_SalesOrder", "0000000001", {"DeliveryBlockReason": "01"}), "j")
    system.change("A_SalesOrder", "0000000002", {"DeliveryBlockReason": "01"})
    seen, _, _ = await _drain(connector, start.cursor)
    assert seen == ["0000000002"]


async def test_event_ids_are_stable_per_change(
    make_connector: MakeConnector, system: SapSandbox, clock: Clock
) -> None:
    connector = make_connector()
    start = await connector.poll(None)
    clock.resume(timedelta(seconds=5))
    system.change("A_SalesOrder", "0000000003", {"DeliveryBlockReason": "01"})
    page = await connector.poll(start.cursor)
    replay = await connector.poll(start.cursor)  # a poll whose page was not stored
    assert [e.platform_event_id for e in page.events] == [
        e.platform_event_id for e in replay.events
    ]
    assert page.events[0].data["changed_by"] == "CB9980000001"
