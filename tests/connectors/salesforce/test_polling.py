"""Polling over SOQL against the sandbox: many records at ONE SystemModstamp across pages
(``nextRecordsUrl``) and across polls, the (SystemModstamp, Id) keyset, the look-back that
finds late commits, and our own write-backs skipped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import ChangeEvent, ChangeType, Patch
from connectors.salesforce import SalesforceConnector
from connectors.salesforce.polling import MAX_PAGES
from connectors.salesforce.sandbox import SalesforceSandbox
from tests.connectors.salesforce.conftest import lead_id

FIELDS = ["Company", "Description", "Rating"]
# After the seed (stamped at the real time of the test): the org's clock is set per step.
MAX_POLLS = 10
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def at(org: SalesforceSandbox, seconds: int) -> datetime:
    """From now on the org stamps saves at T0 + ``seconds``."""
    moment = T0 + timedelta(seconds=seconds)
    org.store.clock = lambda: moment
    return moment


def add_leads(org: SalesforceSandbox, count: int, prefix: str = "lead") -> list[str]:
    return [
        org.create("Lead", LastName=f"{prefix}-{n}", Company="Acme", Status="Qualified")
        for n in range(count)
    ]


def poller(make: Callable[..., SalesforceConnector], lookback: int = 5) -> SalesforceConnector:
    return make(poll_objects={"Lead": FIELDS}, poll_lookback_seconds=lookback)


async def drain(
    connector: SalesforceConnector, cursor: Any = None
) -> tuple[list[ChangeEvent], Any, int]:
    """Poll until no page is waiting, as the scheduler does; (events, cursor, polls).
    A cursor that stops making progress fails the test instead of polling forever."""
    events: list[ChangeEvent] = []
    for polls in range(1, MAX_POLLS + 1):
        result = await connector.poll(cursor)
        events += result.events
        cursor = result.cursor
        if not result.more:
            return events, cursor, polls
    raise AssertionError(f"still more to read after {MAX_POLLS} polls: {cursor}")


def follow_ups(org: SalesforceSandbox) -> int:
    """How many ``nextRecordsUrl`` pages were fetched."""
    return sum(1 for _, path in org.requests if "/query/01g" in path)


async def test_records_sharing_a_stamp_across_pages_and_polls_arrive_once_in_order(
    make: Any, org: SalesforceSandbox
) -> None:
    org.page_size = 40
    stamp = at(org, 0)
    same = add_leads(org, 7 * 40 + 3)  # 8 pages at one instant: more than one poll's budget
    seeded = [i for i in org.ids("Lead") if i not in same]
    connector = poller(make)

    events, cursor, polls = await drain(connector)

    assert polls == 2  # the first stopped after MAX_PAGES, mid-instant, and resumed there
    assert follow_ups(org) >= MAX_PAGES
    counts = Counter(e.record_id for e in events)
    assert set(counts) == set(same) | set(seeded)
    assert max(counts.values()) == 1
    keys = [(e.occurred_at, e.record_id) for e in events]
    assert keys == sorted(keys)
    assert {e.occurred_at for e in events if e.record_id in same} == {stamp}
    assert {e.change_type for e in events} == {ChangeType.CREATED}
    assert {e.changed_fields for e in events} == {tuple(FIELDS)}
    assert set(events[-1].data) == {
        *FIELDS,
        "Id",
        "SystemModstamp",
        "CreatedDate",
        "LastModifiedDate",
        "LastModifiedById",
        "changed_by",  # LastModifiedById, for review four eyes
    }
    assert events[-1].data["changed_by"] == events[-1].data["LastModifiedById"]
    assert cursor["objects"]["Lead"]["id"] == max(same)

    # Polling again from the cursor finds nothing new: the look-back re-reads the last
    # instant, and those rows keep their event ids (so they are stored once).
    again, _, _ = await drain(connector, cursor)
    assert {e.platform_event_id for e in again} <= {e.platform_event_id for e in events}
    assert {e.record_id for e in again} <= set(same)  # not the seed, an hour before


async def test_a_late_commit_in_the_look_back_window_is_found_once(
    make: Any, org: SalesforceSandbox
) -> None:
    at(org, 0)
    early = add_leads(org, 3, "early")
    at(org, 3)
    recent = add_leads(org, 3, "recent")
    connector = poller(make, lookback=5)
    first, cursor, _ = await drain(connector)
    seen = {e.platform_event_id for e in first}
    assert set(early) | set(recent) <= {e.record_id for e in first}

    # A transaction that began at T0+1 commits now: its rows carry the older stamp,
    # below the high-water mark (T0+3) but inside the look-back. A fresh change too.
    at(org, 1)
    [late] = add_leads(org, 1, "late")
    edited = at(org, 4)
    org.change("Lead", early[0], Description="Now with a budget.")
    at(org, -60)
    [too_late] = add_leads(org, 1, "too-late")  # beyond the look-back: polling's limit

    second, cursor, _ = await drain(connector, cursor)

    fresh = [e for e in second if e.platform_event_id not in seen]
    assert sorted((e.record_id, e.change_type) for e in fresh) == sorted(
        [(late, ChangeType.CREATED), (early[0], ChangeType.UPDATED)]
    )
    assert Counter(e.record_id for e in second)[late] == 1
    assert next(e for e in fresh if e.record_id == early[0]).occurred_at == edited
    assert too_late not in {e.record_id for e in second}
    # Once read, the late row is not new again.
    third, _, _ = await drain(connector, cursor)
    assert {e.platform_event_id for e in third} <= seen | {e.platform_event_id for e in fresh}


async def test_our_own_write_backs_are_not_polled_as_changes(
    make: Any, org: SalesforceSandbox
) -> None:
    connector = poller(make)
    _, cursor, _ = await drain(connector)
    ours, theirs = lead_id(org), lead_id(org, "Berg & Sons Bakery")
    at(org, 0)

    await connector.write(Patch("Lead", ours, {"Rating": "Hot"}), "job-1")
    org.change("Lead", theirs, Rating="Cold")
    events, cursor, _ = await drain(connector, cursor)

    assert org.record("Lead", ours)["Rating"] == "Hot"  # the write did happen
    assert [(e.record_id, e.change_type) for e in events] == [(theirs, ChangeType.UPDATED)]
    assert events[0].data["Rating"] == "Cold"
    # The cursor moved past the write-back: it is not found later either.
    later, _, _ = await drain(connector, cursor)
    assert ours not in {e.record_id for e in later}
