"""SANDBOX: Outbound Messages as Salesforce sends them, and its Ack check.

:func:`envelope` builds the SOAP 1.1 ``notifications`` call (up to 100 Notifications of
one object, selected fields in ``urn:sobject.enterprise.soap.sforce.com`` with
``xsi:type="sf:<Object>"``); :func:`is_ack` accepts only an HTTP 200 whose body is a
``notificationsResponse`` with ``<Ack>true</Ack>``, as Salesforce does — anything else
leaves the notifications queued for redelivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from connectors.salesforce.outbound import OUTBOUND, SOAP_ENV, SOBJECT, XSI

MAX_PER_MESSAGE = 100


@dataclass(frozen=True)
class Notification:
    notification_id: str
    object: str
    fields: Mapping[str, Any]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def envelope(
    organization_id: str,
    action_id: str,
    instance_url: str,
    api_version: str,
    notifications: Sequence[Notification],
) -> bytes:
    org15 = organization_id[:15]
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        f'xmlns:xsi="{XSI}">',
        "<soapenv:Body>",
        f'<notifications xmlns="{OUTBOUND}">',
        f"<OrganizationId>{organization_id}</OrganizationId>",
        f"<ActionId>{action_id}</ActionId>",
        '<SessionId xsi:nil="true"/>',
        f"<EnterpriseUrl>{instance_url}/services/Soap/c/{api_version}/{org15}</EnterpriseUrl>",
        f"<PartnerUrl>{instance_url}/services/Soap/u/{api_version}/{org15}</PartnerUrl>",
    ]
    for item in notifications:
        parts.append(f"<Notification><Id>{item.notification_id}</Id>")
        parts.append(f'<sObject xsi:type="sf:{item.object}" xmlns:sf="{SOBJECT}">')
        for name, value in item.fields.items():
            if value is None:
                parts.append(f'<sf:{name} xsi:nil="true"/>')
            else:
                parts.append(f"<sf:{name}>{_value(value)}</sf:{name}>")
        parts.append("</sObject></Notification>")
    parts += ["</notifications>", "</soapenv:Body>", "</soapenv:Envelope>"]
    return "".join(parts).encode()


def is_ack(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    try:
        root = ET.fromstring(body)  # noqa: S314 - parses our own listener's answer in tests
    except ET.ParseError:
        return False
    ack = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notificationsResponse/{{{OUTBOUND}}}Ack")
    return ack is not None and (ack.text or "").strip() == "true"
