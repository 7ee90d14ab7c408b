"""Relay deliveries: CDC change events and platform events, forwarded from CometD / the
Pub/Sub API with a ``Switchyard-Signature``, parsed into ChangeEvents; own write-backs
dropped, malformed bodies refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import ChangeType, ConnectorContext, InboundRequest, IngestResult
from connectors.salesforce import SalesforceConnector, SalesforceConnectorFactory
from connectors.salesforce.sandbox import HUMAN_USER, INTEGRATION_USER, ORG_ID
from core import signing
from core.errors import PayloadMalformed, SignatureInvalid
from tests.connectors.salesforce.conftest import RELAY_SECRET, SECRETS

HOOK = "https://switchyard.example.com/hooks/con_sf"
LEADS = ["00Q5g00000AAAAAEAA", "00Q5g00000AAAABEAA", "00Q5g00000AAAACEAA"]
CASE = "5005g00000AAAAAAAQ"
TRANSACTION = "0002343d-9d90-e395-ed20-cf416ba652ad"
COMMITTED_MS = 1_767_225_600_123
COMMITTED = datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)
PLATFORM_EVENT_UUID = "f2c1b1d4-7c54-4a1e-9a2b-0c6c3a3b9e10"


def offline(secrets: dict[str, Any] | None = None, **config: Any) -> SalesforceConnector:
    """A connector for inbound calls only: verify and parse never call Salesforce."""
    return SalesforceConnectorFactory().create(
        {
            "organization_id": ORG_ID,
            "auth_flow": "client_credentials",
            "integration_user_id": INTEGRATION_USER,
            "writeback_fields": {"Lead": ["Rating", "Qualification_Reason__c"]},
            "platform_events": {"Lead_Scored__e": "Lead.Lead_Id__c"},
            **config,
        },
        secrets if secrets is not None else SECRETS,
        ConnectorContext("con_sf", webhook_tolerance_seconds=300),
    )


@pytest.fixture
def connector() -> Iterator[SalesforceConnector]:
    built = offline()
    yield built
    built._http.close()


def change(
    change_type: str,
    record_ids: list[str],
    *,
    entity: str = "Lead",
    changed: list[str] | None = None,
    user: str = HUMAN_USER,
    sequence: int = 1,
    replay: int = 7001,
    wrapped: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A CDC event as CometD delivers it (``wrapped``: with its channel)."""
    header = {
        "entityName": entity,
        "recordIds": record_ids,
        "changeType": change_type,
        "changedFields": changed or [],
        "changeOrigin": "com/salesforce/api/rest/59.0;client=Switchyard",
        "transactionKey": TRANSACTION,
        "sequenceNumber": sequence,
        "commitTimestamp": COMMITTED_MS,
        "commitNumber": 10_876_554_012,
        "commitUser": user,
    }
    message = {
        "schema": "IeRuaY6cbI_HsV8Rv1Mc5g",
        "payload": {"ChangeEventHeader": header, **fields},
        "event": {"replayId": replay},
    }
    return {"data": message, "channel": f"/data/{entity}ChangeEvent"} if wrapped else message


def scored(lead: str = LEADS[0], **event: Any) -> dict[str, Any]:
    return {
        "data": {
            "schema": "dffQ2QLzDNHqwB8_sHMxdA",
            "payload": {
                "CreatedDate": "2026-01-01T00:00:00.123Z",
                "CreatedById": HUMAN_USER,
                "Lead_Id__c": lead,
                "Score__c": 87,
            },
            "event": event or {"EventUuid": PLATFORM_EVENT_UUID, "replayId": 12},
        },
        "channel": "/event/Lead_Scored__e",
    }


def relay(
    *events: dict[str, Any],
    secret: str = RELAY_SECRET,
    timestamp: int | None = None,
    body: bytes | None = None,
) -> InboundRequest:
    raw = body if body is not None else json.dumps({"events": list(events)}).encode()
    headers = {
        "content-type": "application/json",
        signing.HEADER.lower(): signing.sign(secret, raw, timestamp),
    }
    return InboundRequest("POST", HOOK, headers, raw)


# ---------------------------------------------------------------- signatures


def test_a_signed_delivery_verifies_and_is_answered_with_the_usual_202(
    connector: SalesforceConnector,
) -> None:
    request = relay(change("CREATE", LEADS[:1], LastName="Ng"))
    connector.verify(request)
    assert len(connector.parse(request)) == 1
    assert connector.ack(IngestResult(1, 0, [])) is None  # JSON, not the SOAP Ack


def _tampered() -> InboundRequest:
    good = relay(change("UPDATE", LEADS[:1], changed=["Rating"], Rating="Hot"))
    return InboundRequest("POST", HOOK, dict(good.headers), good.body.replace(b"Hot", b"Cold"))


def _unsigned() -> InboundRequest:
    good = relay(change("CREATE", LEADS[:1]))
    headers = {k: v for k, v in good.headers.items() if k != signing.HEADER.lower()}
    return InboundRequest("POST", HOOK, headers, good.body)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (_tampered(), "does not match the body"),
        (relay(change("CREATE", LEADS[:1]), secret="another-relay-secret"), "does not match"),
        (relay(change("CREATE", LEADS[:1]), timestamp=int(time.time()) - 3600), "from now"),
        (_unsigned(), "missing Switchyard-Signature"),
    ],
    ids=["tampered-body", "wrong-secret", "stale", "unsigned"],
)
def test_bad_relay_deliveries_are_rejected(
    connector: SalesforceConnector, request_: InboundRequest, reason: str
) -> None:
    with pytest.raises(SignatureInvalid, match=reason):
        connector.verify(request_)


def test_without_a_relay_secret_no_relay_delivery_is_accepted() -> None:
    secrets = {k: v for k, v in SECRETS.items() if k != "relay_secret"}
    connector = offline(secrets)
    with pytest.raises(SignatureInvalid, match=r"set secrets\.relay_secret"):
        connector.verify(relay(change("CREATE", LEADS[:1])))
    connector._http.close()


# --------------------------------------------------------------- change events


def test_change_types_map_onto_created_updated_deleted(connector: SalesforceConnector) -> None:
    request = relay(
        change("CREATE", LEADS[:1], sequence=1, LastName="Ng", Company="Ng Robotics"),
        change("UPDATE", LEADS[1:2], changed=["Rating", "LastModifiedDate"], sequence=2),
        change("DELETE", LEADS[2:], sequence=3),
        change("UNDELETE", LEADS[2:], sequence=4),
    )

    events = connector.parse(request)

    assert [(e.record_id, e.change_type) for e in events] == [
        (LEADS[0], ChangeType.CREATED),
        (LEADS[1], ChangeType.UPDATED),
        (LEADS[2], ChangeType.DELETED),
        (LEADS[2], ChangeType.CREATED),  # restored from the recycle bin
    ]
    assert events[0].data == {
        "LastName": "Ng",
        "Company": "Ng Robotics",
        "changed_by": HUMAN_USER,  # commitUser, for review four eyes
    }
    assert events[1].changed_fields == ("Rating", "LastModifiedDate")
    assert all(e.object == "Lead" and e.occurred_at == COMMITTED for e in events)


def test_one_change_to_several_records_fans_out_with_stable_ids(
    connector: SalesforceConnector,
) -> None:
    update = change("UPDATE", LEADS, changed=["Status"], sequence=2, Status="Qualified")

    events = connector.parse(relay(update))

    assert [e.record_id for e in events] == LEADS
    assert [e.platform_event_id for e in events] == [f"cdc:{TRANSACTION}:2:{i}" for i in LEADS]
    assert {e.changed_fields for e in events} == {("Status",)}
    assert {e.data["Status"] for e in events} == {"Qualified"}
    # Redelivered after a relay restart (new replayId, the unwrapped CometD shape): same ids.
    again = connector.parse(
        relay(
            change(
                "UPDATE",
                LEADS,
                changed=["Status"],
                sequence=2,
                replay=9999,
                wrapped=False,
                Status="Qualified",
            )
        )
    )
    assert [e.platform_event_id for e in again] == [e.platform_event_id for e in events]
    # The next change in the same transaction is another event.
    later = connector.parse(relay(change("UPDATE", LEADS[:1], changed=["Rating"], sequence=3)))
    assert later[0].platform_event_id not in {e.platform_event_id for e in events}


def test_gap_events_keep_their_base_change_overflow_and_wildcards_name_no_record(
    connector: SalesforceConnector,
) -> None:
    events = connector.parse(
        relay(
            change("GAP_UPDATE", LEADS[:1], sequence=1),
            change("GAP_OVERFLOW", [], sequence=2),
            change("UPDATE", ["00Q*"], changed=["OwnerId"], sequence=3),
        )
    )
    [gap] = events
    assert (gap.record_id, gap.change_type, gap.data) == (
        LEADS[0],
        ChangeType.UPDATED,
        {"gap": True, "changed_by": HUMAN_USER},
    )


# --------------------------------------------------------------- platform events


def test_a_mapped_platform_event_becomes_a_change_of_its_record(
    connector: SalesforceConnector,
) -> None:
    [event] = connector.parse(relay(scored()))
    assert event.platform_event_id == f"pe:Lead_Scored__e:{PLATFORM_EVENT_UUID}"
    assert (event.object, event.record_id, event.change_type) == (
        "Lead",
        LEADS[0],
        ChangeType.UPDATED,
    )
    assert event.changed_fields == ("Lead_Id__c", "Score__c")
    assert event.data["Score__c"] == 87
    assert event.occurred_at == COMMITTED
    # Without an EventUuid the replayId identifies it.
    [older] = connector.parse(relay(scored(replayId=12)))
    assert older.platform_event_id == "pe:Lead_Scored__e:12"


def test_an_unmapped_platform_event_is_refused(connector: SalesforceConnector) -> None:
    other = scored() | {"channel": "/event/Invoice_Paid__e"}
    with pytest.raises(PayloadMalformed, match=r"not mapped in config\.platform_events"):
        connector.parse(relay(other))


# --------------------------------------------------------------- write-backs


def test_write_backs_of_only_write_back_fields_are_dropped(connector: SalesforceConnector) -> None:
    system = ["LastModifiedDate", "LastModifiedById", "SystemModstamp"]
    events = connector.parse(
        relay(
            # Ours: the write-back fields only (plus what every save touches).
            change("UPDATE", LEADS[:1], changed=["Rating", *system], user=INTEGRATION_USER),
            change(
                "UPDATE",
                LEADS[1:2],
                changed=["Qualification_Reason__c", "Rating"],
                user=INTEGRATION_USER[:15],
                sequence=2,
            ),
            # The integration user touched a field flows never write: someone else's use.
            change(
                "UPDATE",
                LEADS[2:],
                changed=["Rating", "Description"],
                user=INTEGRATION_USER,
                sequence=3,
            ),
            # A person setting a write-back field is a change like any other.
            change("UPDATE", LEADS[:1], changed=["Rating"], user=HUMAN_USER, sequence=4),
            # No write-back fields listed for Case: all of the integration user's are ours.
            change(
                "UPDATE",
                [CASE],
                entity="Case",
                changed=["Subject"],
                user=INTEGRATION_USER,
                sequence=5,
            ),
        )
    )
    assert [(e.record_id, e.changed_fields) for e in events] == [
        (LEADS[2], ("Rating", "Description")),
        (LEADS[0], ("Rating",)),
    ]


# --------------------------------------------------------------- malformed


def _header_without(name: str) -> dict[str, Any]:
    event = change("UPDATE", LEADS[:1], changed=["Rating"])
    del event["data"]["payload"]["ChangeEventHeader"][name]
    return event


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "at least one event"),
        (b'{"events": []}', "at least one event"),
        (b'{"events": {"a": 1}}', "at least one event"),
        (json.dumps({"events": [change("CREATE", LEADS)] * 501}).encode(), "more than 500"),
        (b'{"events": [7]}', r"events\[0\]: not an object"),
        (b'{"events": [{"data": "x"}]}', r"events\[0\]: no payload"),
        (json.dumps({"events": [_header_without("recordIds")]}).encode(), "recordIds"),
        (json.dumps({"events": [_header_without("entityName")]}).encode(), "entityName"),
        (json.dumps({"events": [_header_without("transactionKey")]}).encode(), "transactionKey"),
        (json.dumps({"events": [_header_without("sequenceNumber")]}).encode(), "sequenceNumber"),
        (json.dumps({"events": [change("MERGE", LEADS)]}).encode(), "unknown changeType"),
        (json.dumps({"events": [scored(lead="")]}).encode(), "names no record"),
        (json.dumps({"events": [scored(lead="x" * 300)]}).encode(), r"events\[0\]"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "bare-list",
        "no-events",
        "events-not-a-list",
        "too-many",
        "event-not-object",
        "no-payload",
        "no-record-ids",
        "no-entity",
        "no-transaction-key",
        "no-sequence-number",
        "unknown-change-type",
        "platform-event-without-record",
        "record-id-too-long",
    ],
)
def test_malformed_bodies_are_refused(
    connector: SalesforceConnector, body: bytes, reason: str
) -> None:
    request = relay(body=body)
    connector.verify(request)  # signed correctly: what is wrong is the content
    with pytest.raises(PayloadMalformed, match=reason):
        connector.parse(request)
