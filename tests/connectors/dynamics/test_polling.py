"""Change tracking against the SANDBOX: a quiet baseline, deltas with updates, creates and
deletes, the delta link stored only after a round's last page, our own writes skipped, and
an expired token recovered by a resync that repeats nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import ChangeEvent, ChangeType, Patch, RecordRef
from connectors.dynamics import DynamicsConnector
from connectors.dynamics.sandbox import APP_USER, DataverseSandbox
from tests.connectors.dynamics.conftest import MakeConnector

ACCOUNTS_ONLY = {"account": ["name", "description", "revenue", "creditonhold"]}


async def _drain(
    connector: DynamicsConnector, cursor: Mapping[str, Any] | None
) -> tuple[list[ChangeEvent], Mapping[str, Any] | None, int]:
    events: list[ChangeEvent] = []
    calls = 0
    while True:
        result = await connector.poll(cursor)
        events += result.events
        cursor = result.cursor
        calls += 1
        if not result.more:
            return events, cursor, calls


async def test_the_first_round_is_a_quiet_baseline(make: MakeConnector) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY)
    events, cursor, _ = await _drain(connector, None)
    assert events == []
    assert cursor is not None
    assert "deltatoken=" in cursor["tables"]["account"]["delta"]
    again, _, _ = await _drain(connector, cursor)
    assert again == []  # nothing changed since


async def test_deltas_report_updates_creates_and_deletes_with_changed_columns(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY)
    _, cursor, _ = await _drain(connector, None)
    first, second, third = environment.ids("account")
    environment.change("account", first, {"description": "Opening a plant in Brno."})
    new = environment.change("account", None, {"name": "Nordlicht Foods"})
    environment.delete("account", second)
    events, cursor, _ = await _drain(connector, cursor)
    kinds = {(e.record_id, e.change_type) for e in events}
    assert kinds == {
        (first, ChangeType.UPDATED),
        (new, ChangeType.CREATED),
        (second, ChangeType.DELETED),
    }
    update = next(e for e in events if e.record_id == first)
    assert update.changed_fields == ("description",)
    assert all(e.object == "account" for e in events)
    assert third not in {e.record_id for e in events}


async def test_the_delta_link_is_stored_only_after_the_last_page(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY, poll_page_size=2)
    _, cursor, calls = await _drain(connector, None)
    assert calls == 2  # three accounts, two a page
    assert cursor is not None
    before = cursor["tables"]["account"]["delta"]
    for n, account in enumerate(environment.ids("account")):
        environment.change("account", account, {"revenue": 1_000_000.0 + n})
    page = await connector.poll(cursor)
    assert page.more
    assert len(page.events) == 2
    assert page.cursor is not None
    middle = page.cursor["tables"]["account"]
    assert middle["delta"] == before  # the old token still stands mid-round
    assert middle["next"]
    last = await connector.poll(page.cursor)
    assert not last.more
    assert len(last.events) == 1
    assert last.cursor is not None
    assert last.cursor["tables"]["account"]["delta"] != before
    assert last.cursor["tables"]["account"]["next"] is None
    ids = [e.platform_event_id for e in [*page.events, *last.events]]
    assert len(set(ids)) == 3


async def test_our_own_write_backs_start_nothing(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY)
    _, cursor, _ = await _drain(connector, None)
    account = environment.ids("account")[0]
    read = await connector.fetch(RecordRef("account", account))
    await connector.write(Patch("account", account, {"description": "AI note"}, read.version), "j")
    events, cursor, _ = await _drain(connector, cursor)
    assert events == []
    environment.change("account", account, {"description": "A person again"})
    events, _, _ = await _drain(connector, cursor)
    assert [(e.record_id, e.changed_fields) for e in events] == [(account, ("description",))]


async def test_an_expired_token_resyncs_without_repeating_unchanged_rows(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY, poll_page_size=2)
    _, cursor, _ = await _drain(connector, None)
    first, second, third = environment.ids("account")
    environment.change("account", first, {"creditonhold": True})
    environment.delete("account", third)
    environment.expire_delta_tokens()
    events, cursor, _ = await _drain(connector, cursor)
    assert {(e.record_id, e.change_type) for e in events} == {
        (first, ChangeType.UPDATED),
        (third, ChangeType.DELETED),
    }
    assert next(e for e in events if e.record_id == first).changed_fields == ("creditonhold",)
    environment.expire_delta_tokens()
    quiet, cursor, _ = await _drain(connector, cursor)
    assert quiet == []  # a second resync of unchanged rows is silent
    assert cursor is not None
    assert set(cursor["tables"]["account"]["seen"]) == {first, second}


async def test_without_a_configured_user_whoami_names_our_application_user(
    make: MakeConnector, state: Any
) -> None:
    connector = make(application_user_id=None)
    assert await connector.own_user() == APP_USER
    assert state.values["identity"] == {"user_id": APP_USER}


async def test_a_token_expiring_mid_round_resyncs_without_repeating_the_first_page(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(poll_objects=ACCOUNTS_ONLY, poll_page_size=2)
    _, cursor, _ = await _drain(connector, None)
    for n, account in enumerate(environment.ids("account")):
        environment.change("account", account, {"description": f"note {n}"})
    page = await connector.poll(cursor)
    assert page.more
    environment.expire_delta_tokens()
    rest, _, _ = await _drain(connector, page.cursor)
    ids = [e.record_id for e in [*page.events, *rest]]
    assert sorted(ids) == sorted(environment.ids("account"))  # each once, none lost
