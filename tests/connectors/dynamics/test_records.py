"""Rows through the Web API against the SANDBOX: fetch with ETags, describe from
EntityDefinitions, conditional updates (412 → CONFLICT, never overwritten), idempotent
creates, $batch per-row results, paging, and the error mapping."""

from __future__ import annotations

import pytest

from connectors.base import Patch, RecordRef, WriteStatus
from connectors.dynamics.sandbox import DataverseSandbox
from core.errors import ConnectorTerminalError, ConnectorTransientError
from tests.connectors.dynamics.conftest import MakeConnector


def _account(environment: DataverseSandbox, n: int = 0) -> str:
    return environment.ids("account")[n]


async def test_fetch_reads_the_row_with_its_etag_and_without_annotations(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    account = _account(environment)
    record = await connector.fetch(RecordRef("account", account))
    assert record.fields["name"] == "Kestrel Precision Parts AG"
    assert record.fields["numberofemployees"] == 310
    assert record.fields["creditonhold"] is False
    assert not any("@" in name for name in record.fields)
    assert record.version == f'W/"{environment.record("account", account)["versionnumber"]}"'
    picked = await connector.fetch(RecordRef("account", account), ["name"])
    assert set(picked.fields) == {"accountid", "name"}


async def test_describe_has_types_choices_and_what_is_updateable(make: MakeConnector) -> None:
    connector = make()
    fields = {meta.name: meta for meta in await connector.describe("incident")}
    assert fields["new_aisuggestedpriority"].picklist_values == ("1", "2", "3")
    assert fields["new_aisuggestedpriority"].type == "picklist"
    assert fields["ticketnumber"].updateable is False
    assert fields["title"].required is True
    accounts = {meta.name for meta in await connector.describe("account")}
    assert {"opendeals", "openrevenue", "new_healthscore", "creditlimit"} <= accounts


async def test_a_stale_etag_is_a_conflict_and_the_row_is_not_overwritten(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    account = _account(environment)
    read = await connector.fetch(RecordRef("account", account))
    environment.change("account", account, {"description": "edited by a person"})
    result = await connector.write(
        Patch("account", account, {"new_healthscore": 70}, read.version), "job-1"
    )
    assert result.status is WriteStatus.CONFLICT
    assert "RowVersion" in result.detail
    assert environment.record("account", account)["new_healthscore"] is None  # type: ignore[index]
    assert environment.writes == []


async def test_a_write_with_the_current_etag_lands_and_a_replay_is_already_applied(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    account = _account(environment)
    read = await connector.fetch(RecordRef("account", account))
    patch = Patch("account", account, {"new_healthscore": 81}, read.version)
    first = await connector.write(patch, "job-2")
    assert first.status is WriteStatus.WRITTEN
    assert first.version != read.version
    again = await connector.write(patch, "job-2")  # the worker crashed before recording it
    assert again.status is WriteStatus.WRITTEN
    assert again.detail == "already applied"
    assert len(environment.writes) == 1


async def test_creates_are_idempotent_per_idempotency_key(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    patch = Patch("incident", None, {"title": "Printer on fire", "prioritycode": 1})
    first = await connector.write(patch, "job-create-7")
    second = await connector.write(patch, "job-create-7")
    assert first.record_id == second.record_id
    assert second.detail == "already created"
    assert len(environment.ids("incident")) == 4
    other = await connector.write(patch, "job-create-8")
    assert other.record_id != first.record_id


async def test_a_patch_that_does_not_fit_the_columns_is_refused_before_sending(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    case = environment.ids("incident")[0]
    with pytest.raises(ConnectorTerminalError, match="not an option value"):
        await connector.write(Patch("incident", case, {"new_aisuggestedpriority": 9}), "k")
    with pytest.raises(ConnectorTerminalError, match="not valid for update"):
        await connector.write(Patch("incident", case, {"ticketnumber": "X"}), "k")
    assert environment.writes == []


async def test_batch_answers_per_row_and_a_conflict_spares_the_others(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(batch_size=2)
    ids = environment.ids("account")
    versions = [(await connector.fetch(RecordRef("account", i))).version for i in ids]
    environment.change("account", ids[1], {"description": "moved meanwhile"})
    patches = [
        Patch("account", rid, {"new_healthscore": 40 + n}, versions[n]) for n, rid in enumerate(ids)
    ]
    results, failed = await connector.write_many("account", patches)
    by_id = {r.record_id: r for r in results}
    assert failed == {}
    assert by_id[ids[1]].status is WriteStatus.CONFLICT
    assert by_id[ids[0]].status is by_id[ids[2]].status is WriteStatus.WRITTEN
    assert environment.record("account", ids[0])["new_healthscore"] == 40  # type: ignore[index]
    assert environment.record("account", ids[1])["new_healthscore"] is None  # type: ignore[index]
    assert environment.record("account", ids[2])["new_healthscore"] == 42  # type: ignore[index]


async def test_a_429_storm_is_waited_out_with_retry_after(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    account = _account(environment)
    environment.inject(429, times=2, retry_after=0)
    record = await connector.fetch(RecordRef("account", account), ["name"])
    assert record.fields["name"]
    assert connector.api.governor.throttles == 2


async def test_a_long_retry_after_fails_transient_for_the_queue(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(max_retry_wait_seconds=1)
    environment.inject(429, times=1, retry_after=120, code="0x80072326")
    with pytest.raises(ConnectorTransientError, match="0x80072326") as raised:
        await connector.fetch(RecordRef("account", _account(environment)), ["name"])
    assert raised.value.retry_after == 120


async def test_4xx_is_terminal_with_the_platform_message_and_5xx_transient(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    with pytest.raises(ConnectorTerminalError, match="Could not find a property named 'nope'"):
        await connector.fetch(RecordRef("account", _account(environment)), ["nope"])
    with pytest.raises(ConnectorTerminalError, match="Does Not Exist"):
        await connector.fetch(
            RecordRef("account", "00000000-0000-0000-0000-00000000abcd"), ["name"]
        )
    environment.inject(503, code="0x80040216", message="Service unavailable")
    with pytest.raises(ConnectorTransientError, match="503"):
        await connector.fetch(RecordRef("account", _account(environment)), ["name"])


async def test_paging_follows_next_links_with_the_same_page_size(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    names: list[str] = []
    url: str | None = "accounts?$select=name"
    pages = 0
    while url:
        page = await connector.api.pages(url, what="list", page_size=2)
        names += [row["name"] for row in page["value"]]
        url = page.get("@odata.nextLink")
        pages += 1
    assert pages == 2
    assert sorted(names) == sorted(
        environment.record("account", i)["name"] for i in environment.ids("account")
    )  # type: ignore[index]


async def test_a_slow_answer_times_out_as_transient(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(timeout_seconds=0.2)
    await connector.describe("account")  # token and metadata before the slowdown
    environment.delay_seconds = 1.0
    with pytest.raises(ConnectorTransientError, match="timed out"):
        await connector.fetch(RecordRef("account", _account(environment)), ["name"])
    environment.delay_seconds = 0.0
