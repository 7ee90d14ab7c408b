"""Outbound Messages: the SOAP ``notifications`` call as the sandbox builds it, checked by
org id and parsed into ChangeEvents (our own write-backs dropped), answered with the exact
SOAP Ack; then through ``POST /hooks/{id}``: stored once, the wrong org refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.base import ChangeType, ConnectorContext, InboundRequest, IngestResult
from connectors.salesforce import SalesforceConnector, SalesforceConnectorFactory
from connectors.salesforce.outbound import OUTBOUND
from connectors.salesforce.sandbox import INTEGRATION_USER, ORG_ID, SalesforceSandbox
from connectors.salesforce.sandbox_outbound import Notification, envelope, is_ack
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import Event
from core.errors import PayloadMalformed, SignatureInvalid
from core.services import Services
from core.web.app import create_app
from tests.connectors.salesforce.conftest import SECRETS, lead_id

OTHER_ORG = "00D5g000007ZzzzEAC"
ACTION = "04k5g000000AbCdAAK"
INSTANCE = "https://acme.my.salesforce.com"
HOOK = "https://switchyard.example.com/hooks/con_sf"
FIELDS = ["Description", "Rating", "CreatedDate", "LastModifiedDate", "LastModifiedById"]
SOAP_HEADERS = {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}
LATER = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
ACK = f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'


def offline(**config: Any) -> SalesforceConnector:
    """A connector for inbound calls only: verify and parse never call Salesforce."""
    return SalesforceConnectorFactory().create(
        {
            "organization_id": ORG_ID,
            "auth_flow": "client_credentials",
            "integration_user_id": INTEGRATION_USER,
            **config,
        },
        SECRETS,
        ConnectorContext("con_sf"),
    )


@pytest.fixture
def connector() -> Iterator[SalesforceConnector]:
    built = offline()
    yield built
    built._http.close()


@pytest.fixture
def edited(org: SalesforceSandbox) -> SalesforceSandbox:
    """The org an hour after its seed, so an edit is no longer its record's creation."""
    org.store.clock = lambda: LATER
    return org


def note(org: SalesforceSandbox, number: int, record_id: str, fields: list[str] = FIELDS) -> Any:
    record = org.record("Lead", record_id)
    values = {name: record[name] for name in ["Id", *fields]}
    return Notification(f"04l5g00000{number:05d}AAA", "Lead", values)


def message(*notes: Notification, org_id: str = ORG_ID) -> bytes:
    return envelope(org_id, ACTION, INSTANCE, "59.0", list(notes))


def soap(body: bytes) -> InboundRequest:
    return InboundRequest("POST", HOOK, dict(SOAP_HEADERS), body)


# ---------------------------------------------------------------------- parse


def test_a_notification_verifies_and_parses_into_a_change_event(
    connector: SalesforceConnector, edited: SalesforceSandbox
) -> None:
    lead = lead_id(edited)
    edited.change("Lead", lead, Description="Quote for 120 trucks & 4 depots, please.")
    request = soap(message(note(edited, 1, lead)))

    connector.verify(request)
    [event] = connector.parse(request)

    assert event.platform_event_id == "om:04l5g0000000001AAA"
    assert (event.object, event.record_id, event.change_type) == ("Lead", lead, ChangeType.UPDATED)
    assert event.changed_fields == tuple(FIELDS)  # what the message carries, Id aside
    assert event.data["Description"] == "Quote for 120 trucks & 4 depots, please."
    assert event.data["Rating"] is None  # xsi:nil, not ""
    assert event.data["LastModifiedById"] != INTEGRATION_USER
    assert event.data["changed_by"] == event.data["LastModifiedById"]  # for four eyes
    assert event.occurred_at == LATER


def test_a_new_record_is_a_creation(connector: SalesforceConnector, org: SalesforceSandbox) -> None:
    created = org.create("Lead", LastName="Ng", Company="Ng Robotics", Status="Qualified")
    [event] = connector.parse(soap(message(note(org, 2, created))))
    assert (event.record_id, event.change_type) == (created, ChangeType.CREATED)


def test_several_notifications_in_one_message_are_one_event_each(
    connector: SalesforceConnector, edited: SalesforceSandbox
) -> None:
    first, second = lead_id(edited), lead_id(edited, "Berg & Sons Bakery")
    edited.change("Lead", first, Rating="Warm")
    edited.change("Lead", second, Rating="Cold")
    body = message(note(edited, 3, first), note(edited, 4, second), note(edited, 5, first))

    events = connector.parse(soap(body))

    assert [(e.platform_event_id, e.record_id) for e in events] == [
        ("om:04l5g0000000003AAA", first),
        ("om:04l5g0000000004AAA", second),
        ("om:04l5g0000000005AAA", first),
    ]
    assert [e.data["Rating"] for e in events] == ["Warm", "Cold", "Warm"]
    # A redelivery reuses the Notification ids, so it maps onto the same events.
    assert connector.parse(soap(body)) == events


def test_our_own_write_backs_are_dropped(
    connector: SalesforceConnector, edited: SalesforceSandbox
) -> None:
    ours, theirs = lead_id(edited), lead_id(edited, "Berg & Sons Bakery")
    edited.store.update("Lead", ours, {"Rating": "Hot"}, INTEGRATION_USER)  # a flow's write
    edited.change("Lead", theirs, Description="Can we talk pricing?")
    body = message(note(edited, 6, ours), note(edited, 7, theirs))

    assert [e.record_id for e in connector.parse(soap(body))] == [theirs]
    # The integration user configured in its 15-character form is the same user.
    short = offline(integration_user_id=INTEGRATION_USER[:15])
    assert [e.record_id for e in short.parse(soap(body))] == [theirs]
    short._http.close()
    # Without LastModifiedById in the message nobody can tell: the change is kept.
    blind = message(note(edited, 8, ours, ["Rating"]))
    assert [e.record_id for e in connector.parse(soap(blind))] == [ours]
    # A message of nothing but write-backs is fine: no events, still acknowledged.
    assert connector.parse(soap(message(note(edited, 9, ours)))) == []
    assert is_ack(200, connector.ack(IngestResult(0, 0, [])).body)  # type: ignore[union-attr]


def test_the_ack_is_the_soap_ack_as_text_xml(
    connector: SalesforceConnector, org: SalesforceSandbox
) -> None:
    connector.parse(soap(message(note(org, 10, lead_id(org)))))

    ack = connector.ack(IngestResult(1, 0, [7]))

    assert ack is not None
    assert ack.status_code == 200
    assert ack.media_type.split(";")[0] == "text/xml"
    assert ACK in ack.body.decode()
    assert is_ack(ack.status_code, ack.body)


# ------------------------------------------------------------------- refusals


def test_another_orgs_message_is_refused(
    connector: SalesforceConnector, org: SalesforceSandbox
) -> None:
    foreign = soap(message(note(org, 11, lead_id(org)), org_id=OTHER_ORG))
    with pytest.raises(SignatureInvalid, match="OrganizationId does not match"):
        connector.verify(foreign)
    # The org's 15-character id is the same org.
    connector.verify(soap(message(note(org, 12, lead_id(org)), org_id=ORG_ID[:15])))


def _soap(body: str) -> bytes:
    return (
        f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


_HEAD = f'<notifications xmlns="{OUTBOUND}"><OrganizationId>{ORG_ID}</OrganizationId>'
_DTD = '<!DOCTYPE x [<!ENTITY big "boom">]>'
_VALID = message(Notification("04l5g0000000013AAA", "Lead", {"Id": "00Q5g0000000001EAA"}))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not xml", "not XML"),
        (_VALID[:-20], "not XML"),
        (b'{"events": []}', "not XML"),
        (f"{_HEAD}</notifications>".encode(), "not a SOAP 1.1 Envelope"),
        (_soap("<notificationsResponse/>"), "no notifications element"),
        (_soap(f'<notifications xmlns="urn:other">{ORG_ID}</notifications>'), "no notifications"),
        (_VALID.replace(b"?>", f"?>{_DTD}".encode(), 1), "DTDs and entities"),
        (
            _VALID.decode()
            .replace("UTF-8", "UTF-16")
            .replace("?>", f"?>{_DTD}", 1)
            .encode("utf-16"),
            "DTDs and entities",
        ),
    ],
    ids=["text", "truncated", "json", "no-envelope", "other-call", "other-ns", "dtd", "dtd-utf16"],
)
def test_what_is_no_outbound_message_is_refused_on_verify_and_parse(
    connector: SalesforceConnector, body: bytes, reason: str
) -> None:
    with pytest.raises(PayloadMalformed, match=reason):
        connector.verify(soap(body))
    with pytest.raises(PayloadMalformed, match=reason):
        connector.parse(soap(body))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_soap(f"{_HEAD}</notifications>"), "carries no Notification"),
        (
            _soap(
                f"{_HEAD}<Notification><Id>04l5g0000000014AAA</Id></Notification></notifications>"
            ),
            "needs an Id and an sObject",
        ),
        (
            message(Notification("04l5g0000000015AAA", "Lead", {"Description": "no id"})),
            "needs xsi:type and sf:Id",
        ),
        (
            message(
                *[
                    Notification(f"04l5g{n:013d}", "Lead", {"Id": "00Q5g0000000001EAA"})
                    for n in range(101)
                ]
            ),
            "more than 100",
        ),
    ],
    ids=["empty", "no-sobject", "no-record-id", "over-100"],
)
def test_a_broken_notifications_call_is_refused(
    connector: SalesforceConnector, body: bytes, reason: str
) -> None:
    connector.verify(soap(body))  # from our org: the shape is what is wrong
    with pytest.raises(PayloadMalformed, match=reason):
        connector.parse(soap(body))


# -------------------------------------------------------------------- ingress


@dataclass
class Ingress:
    services: Services
    client: httpx.AsyncClient
    hook: str
    sent: list[bytes]

    async def events(self) -> list[Event]:
        async with self.services.sessions() as session:
            return list(await session.scalars(select(Event).order_by(Event.id)))


@pytest.fixture
async def ingress(services: Services) -> AsyncIterator[Ingress]:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        connection = await create_connection(
            session,
            tenant_id=tenant.id,
            factory=services.connectors.registry.require("salesforce"),
            name="salesforce",
            config={
                "organization_id": ORG_ID,
                "auth_flow": "client_credentials",
                "integration_user_id": INTEGRATION_USER,
            },
            secrets=SECRETS,
            keyring=services.keyring,
        )
    sent: list[bytes] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request.content)

    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://switchyard.test", event_hooks={"request": [keep]}
    ) as client:
        yield Ingress(services, client, f"/hooks/{connection.id}", sent)


async def test_through_the_ingress_stored_once_acked_and_the_wrong_org_refused(
    ingress: Ingress, edited: SalesforceSandbox
) -> None:
    lead, written = lead_id(edited), lead_id(edited, "Berg & Sons Bakery")
    edited.add_outbound_rule("Lead", ingress.hook, FIELDS)
    edited.change("Lead", lead, Description="Need a demo before our Q3 sign-off.")
    edited.store.update("Lead", written, {"Rating": "Hot"}, INTEGRATION_USER)

    # Salesforce sends both notifications in one message and takes only the exact Ack.
    assert await edited.deliver_outbound(ingress.client) == 2
    assert edited.deliveries == [(200, True)]
    assert edited.pending_notifications() == 0
    [event] = await ingress.events()
    assert (event.object, event.record_id, event.change_type) == ("Lead", lead, "updated")
    assert event.platform_event_id.startswith("om:04l5g")
    assert event.data["Description"] == "Need a demo before our Q3 sign-off."
    assert event.changed_fields == FIELDS

    # The Ack got lost and Salesforce sends the same message again: acked, nothing new.
    [body] = ingress.sent
    again = await ingress.client.post(ingress.hook, content=body, headers=SOAP_HEADERS)
    assert again.headers["content-type"].startswith("text/xml")
    assert is_ack(again.status_code, again.content)
    assert [e.id for e in await ingress.events()] == [event.id]

    # Another org's message, even about our record, is refused and stores nothing.
    foreign = message(note(edited, 16, lead), org_id=OTHER_ORG)
    refused = await ingress.client.post(ingress.hook, content=foreign, headers=SOAP_HEADERS)
    assert refused.status_code == 401
    assert not is_ack(refused.status_code, refused.content)
    assert "OrganizationId" in refused.json()["detail"]
    assert [e.id for e in await ingress.events()] == [event.id]
