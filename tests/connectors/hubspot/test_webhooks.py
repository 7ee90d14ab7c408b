"""Inbound HubSpot webhooks: v3 signatures (and v1/v2 only when configured), batched
payloads into ChangeEvents, redeliveries with the same ids, own write-backs and ignored
sources dropped."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from connectors.base import ChangeType, ConnectorContext, InboundRequest
from connectors.hubspot import HubSpotConnector, HubSpotConnectorFactory
from connectors.hubspot.sandbox_hooks import signed_headers
from core.errors import PayloadMalformed, SignatureInvalid
from tests.connectors.hubspot.conftest import APP_ID, CLIENT_SECRET, PORTAL_ID, config_for

PUBLIC = "https://switchyard.example.com/hooks/con_hubspot"
EVENTS: list[dict[str, Any]] = [
    {
        "eventId": 100,
        "subscriptionId": 1,
        "portalId": PORTAL_ID,
        "appId": APP_ID,
        "occurredAt": 1_767_225_600_000,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 1004,
        "propertyName": "message",
        "propertyValue": "Pricing for 60 seats?",
        "changeSource": "CRM_UI",
        "sourceId": "userId:9001",
    },
    {
        "eventId": 100,
        "subscriptionId": 2,
        "portalId": PORTAL_ID,
        "appId": APP_ID,
        "occurredAt": 1_767_225_600_000,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 1004,
        "propertyName": "jobtitle",
        "propertyValue": "COO",
        "changeSource": "CRM_UI",
        "sourceId": "userId:9001",
    },
    {
        "eventId": 101,
        "subscriptionId": 3,
        "portalId": PORTAL_ID,
        "appId": APP_ID,
        "occurredAt": 1_767_225_500_000,
        "eventType": "deal.creation",
        "attemptNumber": 1,
        "objectId": 1010,
        "changeFlag": "CREATED",
        "changeSource": "CRM_UI",
    },
]


def connector(**config: Any) -> HubSpotConnector:
    return HubSpotConnectorFactory().create(
        config_for("https://api.hubapi.com", **config),
        {"client_secret": CLIENT_SECRET, "access_token": "pat-x"},
        ConnectorContext("con_hubspot", public_hook_url=PUBLIC),
    )


def delivery(
    events: list[dict[str, Any]] | None = None,
    *,
    secret: str = CLIENT_SECRET,
    versions: tuple[str, ...] = ("v3",),
    timestamp_ms: int | None = None,
    url: str = PUBLIC,
) -> InboundRequest:
    body = json.dumps(events if events is not None else EVENTS).encode()
    headers = signed_headers(secret, url, body, versions=versions, timestamp_ms=timestamp_ms)
    # Behind a proxy Switchyard sees an internal URL; v3 signs the public one.
    return InboundRequest(
        "POST",
        "http://10.0.0.7:8000/hooks/con_hubspot",
        {k.lower(): v for k, v in headers.items()},
        body,
    )


def test_a_valid_v3_delivery_verifies_against_the_public_url() -> None:
    connector().verify(delivery())


def test_without_a_public_url_the_received_url_is_signed() -> None:
    plain = HubSpotConnectorFactory().create(
        config_for("https://api.hubapi.com"),
        {"client_secret": CLIENT_SECRET, "access_token": "pat-x"},
        ConnectorContext("con_hubspot"),
    )
    plain.verify(delivery(url="http://10.0.0.7:8000/hooks/con_hubspot"))
    with pytest.raises(SignatureInvalid):
        plain.verify(delivery())


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (delivery(secret="somebody-else"), "does not match"),
        (delivery(timestamp_ms=int((time.time() - 301) * 1000)), "from now"),
        (delivery(url=PUBLIC + "?x=1"), "does not match"),
        (delivery(versions=("v1",)), "no HubSpot signature"),
        (delivery(versions=("v2",)), "no HubSpot signature"),
        (delivery(versions=()), "no HubSpot signature"),
    ],
    ids=["wrong-secret", "stale", "other-url", "v1-not-allowed", "v2-not-allowed", "unsigned"],
)
def test_bad_deliveries_are_rejected(request_: InboundRequest, reason: str) -> None:
    with pytest.raises(SignatureInvalid, match=reason):
        connector().verify(request_)


def test_a_tampered_body_is_rejected() -> None:
    good = delivery()
    tampered = InboundRequest(
        "POST", good.url, dict(good.headers), good.body.replace(b"60 seats", b"6 seats")
    )
    with pytest.raises(SignatureInvalid):
        connector().verify(tampered)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v1_and_v2_only_when_the_connection_allows_them(version: str) -> None:
    allowing = connector(signature_versions=["v3", version])
    allowing.verify(delivery(versions=(version,)))
    with pytest.raises(SignatureInvalid):
        allowing.verify(delivery(versions=(version,), secret="somebody-else"))


def test_a_batch_parses_into_change_events_in_time_order() -> None:
    events = connector().parse(delivery())
    created, message, jobtitle = events
    assert (created.object, created.record_id, created.change_type) == (
        "deals",
        "1010",
        ChangeType.CREATED,
    )
    assert (message.object, message.change_type, message.changed_fields) == (
        "contacts",
        ChangeType.UPDATED,
        ("message",),
    )
    assert jobtitle.changed_fields == ("jobtitle",)
    # eventId 100 twice: the ids still differ (property), and a redelivery repeats them.
    assert message.platform_event_id != jobtitle.platform_event_id
    retried = [e | {"attemptNumber": 3} for e in EVENTS]
    assert [e.platform_event_id for e in connector().parse(delivery(retried))] == [
        e.platform_event_id for e in events
    ]
    assert message.data["propertyValue"] == "Pricing for 60 seats?"
    assert message.data["changed_by"] == "9001"  # sourceId userId:9001, for four eyes


def test_own_write_backs_ignored_sources_and_other_portals_are_dropped() -> None:
    own = EVENTS[0] | {"changeSource": "INTEGRATION", "sourceId": str(APP_ID)}
    other_app = EVENTS[0] | {"changeSource": "INTEGRATION", "sourceId": "777", "eventId": 5}
    imported = EVENTS[0] | {"changeSource": "IMPORT", "eventId": 6}
    foreign = EVENTS[0] | {"portalId": 1, "eventId": 7}
    chat = EVENTS[0] | {"subscriptionType": "conversation.newMessage", "eventId": 8}
    batch = [own, other_app, imported, foreign, chat]
    kept = connector(ignored_change_sources=["IMPORT"]).parse(delivery(batch))
    assert [e.data["sourceId"] for e in kept] == ["777"]
    assert len(connector().parse(delivery(batch))) == 2  # IMPORT kept unless ignored


@pytest.mark.parametrize(
    "body", [b"{not json", b"{}", b"[]", b'[{"eventId": "x"}]', b'[{"eventId":1}]']
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(PayloadMalformed):
        connector().parse(InboundRequest("POST", PUBLIC, {}, body))
