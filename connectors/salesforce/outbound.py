"""Outbound Messages: Salesforce's SOAP 1.1 ``notifications`` call, and its Ack.

A workflow rule or flow POSTs (``Content-Type: text/xml``)::

    <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" …>
     <soapenv:Body>
      <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
       <OrganizationId>00D…</OrganizationId> <ActionId>04k…</ActionId>
       <SessionId xsi:nil="true"/> <EnterpriseUrl>…</EnterpriseUrl> <PartnerUrl>…</PartnerUrl>
       <Notification>                                  (1 to 100 of them)
        <Id>04l…</Id>                                  (stable across redeliveries)
        <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
         <sf:Id>00Q…</sf:Id> <sf:Description>…</sf:Description> …  (the selected fields)

There is no payload signature: authenticity is HTTPS plus ``OrganizationId`` equal to the
connection's ``config.organization_id`` (15- and 18-character forms compare equal). The
answer, once the events are stored, is HTTP 200 with ``<Ack>true</Ack>`` in a
``notificationsResponse``; anything else makes Salesforce redeliver (for up to 24 hours).

Salesforce does not say which fields changed, so an event's ``changed_fields`` are the
fields the message carries (pick them with an ISCHANGED() criterion on the rule). An
event whose ``LastModifiedById`` is the integration user is our own write-back and is
dropped. The XML is parsed with the standard library: no DTDs or entities are accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from connectors.base import Ack, ChangeEvent, ChangeType, changed_by
from core.errors import PayloadMalformed, SignatureInvalid

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100

ACK_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body>"
    "</soapenv:Envelope>"
).encode()


def ack() -> Ack:
    return Ack(status_code=200, body=ACK_BODY, media_type="text/xml; charset=utf-8")


def is_soap(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in ("text/xml", "application/soap+xml", "application/xml")


class _NoDoctype(ET.TreeBuilder):
    """Refuses a DOCTYPE as the parser meets it, whatever the document's encoding (a
    byte search misses ``<!DOCTYPE`` in UTF-16), so no entity is ever declared."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise PayloadMalformed("outbound message: DTDs and entities are not accepted")


def _notifications(body: bytes) -> ET.Element:
    parser = ET.XMLParser(target=_NoDoctype())  # noqa: S314 - DOCTYPE refused, see above
    try:
        parser.feed(body)
        root = parser.close()
    except ET.ParseError as exc:
        raise PayloadMalformed(f"outbound message is not XML: {exc}") from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise PayloadMalformed("outbound message: the root is not a SOAP 1.1 Envelope")
    found = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notifications")
    if found is None:
        raise PayloadMalformed(
            f"outbound message: no notifications element in {OUTBOUND} inside the Body"
        )
    return found


def _text(element: ET.Element, name: str) -> str:
    found = element.find(f"{{{OUTBOUND}}}{name}")
    return (found.text or "").strip() if found is not None else ""


def organization_id(body: bytes) -> str:
    return _text(_notifications(body), "OrganizationId")


def verify(body: bytes, expected_org: str) -> None:
    """Raise ``SignatureInvalid`` unless the message comes from the connection's org
    (``PayloadMalformed`` when it is no outbound message at all)."""
    org = organization_id(body)
    if not org or org[:15] != expected_org[:15]:
        raise SignatureInvalid(
            "outbound message from another Salesforce org (OrganizationId does not match "
            "the connection's config.organization_id)"
        )


def _value(element: ET.Element) -> Any:
    if element.get(f"{{{XSI}}}nil") == "true":
        return None
    if len(element):  # a related record (e.g. sf:Owner); keep its fields
        return {child.tag.split("}")[-1]: _value(child) for child in element}
    return element.text or ""


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse(body: bytes, integration_user_id: str | None) -> list[ChangeEvent]:
    notifications = _notifications(body)
    items = notifications.findall(f"{{{OUTBOUND}}}Notification")
    if not items:
        raise PayloadMalformed("outbound message carries no Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadMalformed(f"outbound message carries more than {MAX_NOTIFICATIONS}")
    events = []
    for index, item in enumerate(items):
        notification_id = _text(item, "Id")
        sobject = item.find(f"{{{OUTBOUND}}}sObject")
        if not notification_id or sobject is None:
            raise PayloadMalformed(f"Notification {index}: needs an Id and an sObject")
        object_name = (sobject.get(f"{{{XSI}}}type") or "").split(":")[-1]
        fields = {child.tag.split("}")[-1]: _value(child) for child in sobject}
        record_id = fields.get("Id")
        if not object_name or not isinstance(record_id, str) or not record_id:
            raise PayloadMalformed(f"Notification {index}: sObject needs xsi:type and sf:Id")
        modifier = fields.get("LastModifiedById")
        ours = integration_user_id and isinstance(modifier, str)
        if ours and str(modifier)[:15] == str(integration_user_id)[:15]:
            continue  # our own write-back, reported back by the rule
        created = fields.get("CreatedDate")
        change = (
            ChangeType.CREATED
            if created is not None and created == fields.get("LastModifiedDate")
            else ChangeType.UPDATED
        )
        try:
            events.append(
                ChangeEvent(
                    platform_event_id=f"om:{notification_id}",
                    object=object_name,
                    record_id=record_id,
                    change_type=change,
                    changed_fields=tuple(name for name in fields if name != "Id"),
                    occurred_at=_timestamp(fields.get("LastModifiedDate")),
                    data=fields | changed_by(modifier),
                )
            )
        except ValueError as exc:
            raise PayloadMalformed(f"Notification {index}: {exc}") from None
    return events
