"""Inbound HubSpot webhooks: signature check and batch parsing.

Signatures (HubSpot "Validating requests"; the SDK's ``hubspot.utils.signature``):

* v3 — ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + body +
  ``X-HubSpot-Request-Timestamp``)), the timestamp in epoch milliseconds; older than the
  tolerance (5 minutes) → rejected even when the HMAC matches. The URI is the public URL
  HubSpot called (``context.public_hook_url`` plus the received query), else the URL as
  received. HubSpot asks receivers to decode some percent-escapes in the URI first; as
  that table is not pinned down here, the URI is tried as is and with those escapes decoded.
* v2 — ``X-HubSpot-Signature`` = hex(SHA-256(secret + method + URI + body)), and
* v1 — hex(SHA-256(secret + body)), ``X-HubSpot-Signature-Version`` naming which: both
  carry no timestamp (a captured delivery replays forever), so they are accepted only when
  the connection's ``config.signature_versions`` lists them.

Body: a JSON array of events (``eventId``, ``subscriptionType`` — older docs ``eventType``
— ``objectId``, ``occurredAt`` ms, ``propertyName``/``propertyValue``, ``changeSource``,
``sourceId``, ``portalId``, ``attemptNumber``...). ``eventId`` is not unique, so an event's
id is built from eventId + object + record + property + occurredAt: a retried delivery
(higher ``attemptNumber``) maps to the same id and is stored once. Dropped before storage:
our own write-backs (``changeSource`` INTEGRATION with ``sourceId`` = our app id, as
HubSpot reports API writes by an app), sources the connection ignores (e.g. IMPORT),
other portals' events and subscription types without a CRM record (conversation.*).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import ChangeEvent, ChangeType, InboundRequest, changed_by
from core.errors import PayloadMalformed, SignatureInvalid

MAX_EVENTS = 1000
OWN_SOURCE = "INTEGRATION"
OBJECTS = {
    "contact": "contacts",
    "company": "companies",
    "deal": "deals",
    "ticket": "tickets",
    "product": "products",
    "line_item": "line_items",
}
OBJECT_TYPE_IDS = {
    "0-1": "contacts",
    "0-2": "companies",
    "0-3": "deals",
    "0-5": "tickets",
    "0-7": "products",
    "0-8": "line_items",
}
CHANGES = {
    "creation": ChangeType.CREATED,
    "deletion": ChangeType.DELETED,
    "privacyDeletion": ChangeType.DELETED,
    "propertyChange": ChangeType.UPDATED,
    "merge": ChangeType.UPDATED,
    "restore": ChangeType.UPDATED,
    "associationChange": ChangeType.UPDATED,
}
# Percent-escapes HubSpot's v3 guide says to decode in the URI before hashing.
_V3_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def _uris(request: InboundRequest, public_url: str | None) -> list[str]:
    uri = request.url
    if public_url:
        query = urlsplit(request.url).query
        uri = public_url + (f"?{query}" if query else "")
    decoded = uri
    for escape, char in _V3_DECODE.items():
        decoded = decoded.replace(escape, char).replace(escape.lower(), char)
    return [uri] if decoded == uri else [uri, decoded]


def _matches(presented: str, expected: Sequence[str]) -> bool:
    return any(hmac.compare_digest(presented.encode(), e.encode()) for e in expected)


def _changed_by(source_id: str | int | None) -> dict[str, str]:
    """Who made the change: ``sourceId`` reads ``userId:<id>`` for a person (a reviewer's key
    carries ``hubspot:<id>`` to be known by it)."""
    source = str(source_id or "")
    return changed_by(source.removeprefix("userId:")) if source.startswith("userId:") else {}


def verify(
    request: InboundRequest,
    secret: str,
    versions: Sequence[str],
    tolerance_seconds: int,
    public_url: str | None,
    now: Callable[[], float] = time.time,
) -> None:
    v3 = request.header("X-HubSpot-Signature-v3")
    if v3 is not None and "v3" in versions:
        stamp = request.header("X-HubSpot-Request-Timestamp") or ""
        if not stamp.isdigit():
            raise SignatureInvalid("X-HubSpot-Request-Timestamp is missing or not a number")
        age = now() - int(stamp) / 1000
        if abs(age) > tolerance_seconds:
            raise SignatureInvalid(
                f"the signature's timestamp is {age:.0f}s from now (more than {tolerance_seconds}s)"
            )
        uris = _uris(request, public_url)
        expected = [sign_v3(secret, request.method, u, request.body, stamp) for u in uris]
        if not _matches(v3, expected):
            raise SignatureInvalid("X-HubSpot-Signature-v3 does not match the request")
        return
    legacy = request.header("X-HubSpot-Signature")
    version = (request.header("X-HubSpot-Signature-Version") or "").lower()
    if legacy is not None and version in ("v1", "v2") and version in versions:
        if version == "v1":
            expected = [sign_v1(secret, request.body)]
        else:
            uris = _uris(request, public_url)
            expected = [sign_v2(secret, request.method, u, request.body) for u in uris]
        if not _matches(legacy.lower(), expected):
            raise SignatureInvalid(f"X-HubSpot-Signature ({version}) does not match")
        return
    accepted = ", ".join(versions)
    raise SignatureInvalid(f"no HubSpot signature of an accepted version ({accepted})")


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event_id: int = Field(alias="eventId")
    subscription_type: str | None = Field(None, alias="subscriptionType")
    event_type: str | None = Field(None, alias="eventType")
    object_id: int = Field(alias="objectId")
    object_type_id: str | None = Field(None, alias="objectTypeId")
    occurred_at: int = Field(alias="occurredAt", ge=0)
    portal_id: int | None = Field(None, alias="portalId")
    property_name: str | None = Field(None, alias="propertyName", max_length=200)
    property_value: Any = Field(None, alias="propertyValue")
    change_source: str | None = Field(None, alias="changeSource")
    source_id: str | int | None = Field(None, alias="sourceId")
    attempt_number: int = Field(0, alias="attemptNumber")


def _read(body: bytes) -> list[_Event]:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadMalformed(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(raw, list) or not raw:
        raise PayloadMalformed("body must be a non-empty JSON array of HubSpot events")
    if len(raw) > MAX_EVENTS:
        raise PayloadMalformed(f"more than {MAX_EVENTS} events in one delivery")
    try:
        return [_Event.model_validate(item) for item in raw]
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise PayloadMalformed("; ".join(problems[:10])) from None


def parse(
    request: InboundRequest, *, app_id: int, portal_id: int, ignored_sources: Sequence[str]
) -> list[ChangeEvent]:
    ignored = {source.upper() for source in ignored_sources}
    events: list[ChangeEvent] = []
    for event in sorted(_read(request.body), key=lambda e: e.occurred_at):
        kind = event.subscription_type or event.event_type or ""
        prefix, _, action = kind.partition(".")
        object_name = (
            OBJECT_TYPE_IDS.get(event.object_type_id or "")
            if prefix == "object"
            else OBJECTS.get(prefix)
        )
        change = CHANGES.get(action)
        if object_name is None or change is None:
            continue  # conversation.*, unknown object types: no CRM record to fetch
        if event.portal_id is not None and event.portal_id != portal_id:
            continue
        source = (event.change_source or "").upper()
        if source == OWN_SOURCE and str(event.source_id) == str(app_id):
            continue  # our own write-back: it must not start the flow again
        if source in ignored:
            continue
        field = event.property_name if action == "propertyChange" else None
        try:
            built = ChangeEvent(
                platform_event_id=(
                    f"{event.event_id}:{object_name}:{event.object_id}:"
                    f"{field or action}:{event.occurred_at}"
                )[:255],
                object=object_name,
                record_id=str(event.object_id),
                change_type=change,
                changed_fields=(field,) if field else (),
                occurred_at=datetime.fromtimestamp(event.occurred_at / 1000, UTC),
                data={
                    "subscriptionType": kind,
                    "propertyValue": event.property_value,
                    "changeSource": event.change_source,
                    "sourceId": None if event.source_id is None else str(event.source_id),
                    "attemptNumber": event.attempt_number,
                }
                | _changed_by(event.source_id),
            )
        except ValidationError as exc:  # e.g. a NUL character PostgreSQL cannot store
            raise PayloadMalformed(f"event {event.event_id}: {exc.errors()[0]['msg']}") from None
        events.append(built)
    return events
