"""Fetch, update, batch update, create, describe and every error mapping — through the
official hubspot-api-client against the SANDBOX portal on 127.0.0.1."""

from __future__ import annotations

import hubspot
import pytest
from hubspot.crm.contacts import ApiException

from connectors.base import Patch, RecordRef, WriteStatus
from connectors.hubspot.sandbox import HubSpotSandbox, SandboxServer
from core.errors import ConnectorTerminalError, ConnectorTransientError
from tests.connectors.hubspot.conftest import TOKEN, MakeConnector


def _first(portal: HubSpotSandbox, object_type: str) -> str:
    return sorted(portal.store.records[object_type], key=int)[0]


def test_the_official_client_works_against_the_sandbox_unchanged(server: SandboxServer) -> None:
    client = hubspot.Client.create(access_token=TOKEN, host=server.url)
    page = client.crm.contacts.basic_api.get_page(limit=2, properties=["email"])
    assert next(r.properties["email"] for r in page.results) == "h.vogel@nordwind-logistik.de"
    found = client.crm.contacts.search_api.do_search(
        {
            "filterGroups": [
                {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}
            ],
            "properties": ["email"],
        }
    )
    assert found.total == 1
    assert found.results[0].properties["email"] == "h.vogel@nordwind-logistik.de"
    with pytest.raises(ApiException) as caught:
        hubspot.Client.create(
            access_token="wrong", host=server.url
        ).crm.contacts.basic_api.get_by_id("1")
    assert caught.value.status == 401


async def test_fetch_reads_every_property_and_the_deals_company(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector()
    deal_id = _first(portal, "deals")
    record = await connector.fetch(RecordRef("deals", deal_id))
    assert record.fields["dealname"] == "Nordwind — 60 seats"
    assert record.fields["switchyard_risk_level"] is None  # asked for, not yet set
    assert record.fields["company"]["name"] == "Nordwind Logistik GmbH"  # deal → company
    assert record.version is not None
    narrowed = await connector.fetch(RecordRef("contacts", _first(portal, "contacts")), ["email"])
    assert narrowed.fields["email"] == "h.vogel@nordwind-logistik.de"
    assert "message" not in narrowed.fields


async def test_describe_turns_properties_into_field_meta(make_connector: MakeConnector) -> None:
    fields = {f.name: f for f in await make_connector().describe("deals")}
    assert fields["switchyard_risk_level"].type == "enumeration"
    assert fields["switchyard_risk_level"].picklist_values == ("low", "medium", "high")
    assert fields["hs_lastmodifieddate"].updateable is False
    assert fields["dealname"].updateable is True


async def test_update_writes_once_and_a_retry_is_not_applied_again(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector()
    deal_id = _first(portal, "deals")
    record = await connector.fetch(RecordRef("deals", deal_id))
    patch = Patch("deals", deal_id, {"switchyard_risk_level": "medium"}, record.version)
    first = await connector.write(patch, "job-1")
    again = await connector.write(patch, "job-1")  # the job retried after a lost answer
    assert first.status is again.status is WriteStatus.WRITTEN
    assert again.detail == "already applied"
    assert portal.record("deals", deal_id)["switchyard_risk_level"] == "medium"
    assert [w for w in portal.writes if w[1] == deal_id] == [
        ("deals", deal_id, {"switchyard_risk_level": "medium"})
    ]


async def test_a_record_changed_since_it_was_read_is_a_conflict(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector()
    deal_id = _first(portal, "deals")
    record = await connector.fetch(RecordRef("deals", deal_id))
    portal.gate.clock = lambda: 4_102_444_800.0  # a later edit (2100-01-01)
    portal.change("deals", deal_id, {"amount": "60000"})
    result = await connector.write(
        Patch("deals", deal_id, {"switchyard_risk_level": "high"}, record.version), "job-2"
    )
    assert result.status is WriteStatus.CONFLICT
    assert portal.writes == []


async def test_enumeration_values_are_checked_before_the_write(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    deal_id = _first(portal, "deals")
    with pytest.raises(ConnectorTerminalError, match="critical is not an option"):
        await make_connector().write(
            Patch("deals", deal_id, {"switchyard_risk_level": "critical"}), "job-3"
        )
    with pytest.raises(ConnectorTerminalError, match="no such property"):
        await make_connector().write(Patch("deals", deal_id, {"nope": "x"}), "job-4")
    assert portal.writes == []


async def test_batch_update_sends_100_per_call(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    ids = [portal.create("contacts", {"email": f"c{n}@example.com"}) for n in range(150)]
    before = portal.requests
    written, errors = await make_connector().write_batch(
        "contacts", [(i, {"switchyard_intent": "researching"}) for i in ids] + [("999999", {})]
    )
    assert sorted(written, key=int) == ids
    assert errors
    assert "Could not get some CONTACT objects" in errors[0]
    assert portal.requests - before == 1 + 2  # properties (describe) + 2 batch calls
    assert all(portal.record("contacts", i)["switchyard_intent"] == "researching" for i in ids)


async def test_creates_upsert_on_the_idempotency_property(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector(idempotency_property="switchyard_request_key")
    patch = Patch("contacts", None, {"email": "new@example.com"})
    first = await connector.write(patch, "job-5")
    again = await connector.write(patch, "job-5")
    assert first.record_id == again.record_id
    assert (
        len(
            [
                s
                for s in portal.store.records["contacts"].values()
                if s.properties.get("email") == "new@example.com"
            ]
        )
        == 1
    )
    with pytest.raises(ConnectorTerminalError, match="idempotency_property"):
        await make_connector().write(patch, "job-6")


# ------------------------------------------------------------------ errors


async def test_a_validation_error_is_terminal_with_hubspots_message(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector()
    with pytest.raises(ConnectorTerminalError, match=r"VALIDATION_ERROR.*read only") as caught:
        await connector._api.update("deals", _first(portal, "deals"), {"hs_object_id": "1"})
    assert caught.value.extensions["category"] == "VALIDATION_ERROR"
    assert caught.value.extensions["correlation_id"]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_transient(
    make_connector: MakeConnector, portal: HubSpotSandbox, status: int
) -> None:
    portal.inject(status)
    with pytest.raises(ConnectorTransientError, match=str(status)):
        await make_connector().fetch(RecordRef("deals", _first(portal, "deals")), ["dealname"])


async def test_a_429_waits_for_the_window_and_a_storm_becomes_transient(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    connector = make_connector()
    portal.inject(429, times=2)  # absorbed: the window in the headers is 200 ms
    record = await connector.fetch(RecordRef("deals", _first(portal, "deals")), ["dealname"])
    assert record.fields["dealname"]
    portal.inject(429, times=10)
    with pytest.raises(ConnectorTransientError, match="429 RATE_LIMITS") as caught:
        await connector.fetch(RecordRef("deals", _first(portal, "deals")), ["dealname"])
    assert caught.value.retry_after == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("status", "category"), [(403, "MISSING_SCOPES"), (404, "OBJECT_NOT_FOUND"), (409, "CONFLICT")]
)
async def test_other_client_errors_are_terminal(
    make_connector: MakeConnector, portal: HubSpotSandbox, status: int, category: str
) -> None:
    portal.inject(status, category=category)
    with pytest.raises(ConnectorTerminalError, match=category):
        await make_connector().fetch(RecordRef("deals", _first(portal, "deals")), ["dealname"])


async def test_an_absent_record_and_a_wrong_token_are_terminal(
    make_connector: MakeConnector,
) -> None:
    with pytest.raises(ConnectorTerminalError, match="no deals 424242"):
        await make_connector().fetch(RecordRef("deals", "424242"), ["dealname"])
    wrong = make_connector(secrets={"client_secret": "x", "access_token": "pat-wrong"})
    with pytest.raises(ConnectorTerminalError, match="401 INVALID_AUTHENTICATION"):
        await wrong.fetch(RecordRef("deals", "1"), ["dealname"])


async def test_slow_answers_time_out_as_transient(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    portal.delay_seconds = 1.0
    with pytest.raises(ConnectorTransientError, match="Timeout"):
        await make_connector(timeout_seconds=0.2).fetch(RecordRef("deals", "1"), ["dealname"])
