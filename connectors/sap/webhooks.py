"""Inbound SAP Event Mesh / Integration Suite events: the shared secret and CloudEvents.

**Secret.** Each delivery carries the connection's ``secrets.webhook_secret`` in the
``X-Switchyard-Secret`` header, or as the password of HTTP Basic auth (``Authorization:
Basic``, any user name), which is what an Event Mesh webhook subscription with Basic
authentication sends. It is compared in constant time; a missing or wrong secret is
refused before anything is read or stored.

**Body.** CloudEvents 1.0 as S/4HANA business events use them, in structured mode (one
JSON object, or a JSON array of them) or binary mode (``ce-id``, ``ce-type``, ...
headers and the event's ``data`` as the body). ``type`` reads
``<prefix>.<Action>.v<n>``, e.g. ``sap.s4.beh.salesorder.v1.SalesOrder.Changed.v1``;
``config.event_objects`` maps the prefix to an object and the data field holding its key
(``A_SalesOrder:SalesOrder``; ``+`` joins the fields of a compound key, giving the record
id ``<a>/<b>``). ``Created`` → created, ``Deleted`` → deleted, every other
action (Changed, Released, ...) → updated; unknown types are skipped. The event id is the
CloudEvent ``id`` (redeliveries share it, so they are stored once).

**Own writes.** Standard business events carry keys only. Where the event says who made
the change (``data.LastChangedByUser``, ``ChangedByUser`` or ``CreatedByUser``, or a
``sapuser`` extension attribute — e.g. added by an Integration Suite flow), an event caused
by the connection's write user starts nothing. [uncertain: SAP documents no standard
attribute for the acting user.]
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connectors.base import ChangeEvent, ChangeType, InboundRequest
from core.errors import PayloadMalformed, SignatureInvalid

SECRET_HEADER = "X-Switchyard-Secret"  # noqa: S105 (a header name)
MAX_EVENTS = 500
USER_FIELDS = ("LastChangedByUser", "ChangedByUser", "CreatedByUser")
ACTIONS = {"created": ChangeType.CREATED, "deleted": ChangeType.DELETED}


def _presented(request: InboundRequest) -> str | None:
    header = request.header(SECRET_HEADER)
    if header is not None:
        return header
    scheme, _, value = (request.header("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def verify(request: InboundRequest, secret: str) -> None:
    presented = _presented(request)
    if presented is None:
        raise SignatureInvalid(f"no {SECRET_HEADER} header and no Basic credentials")
    if not hmac.compare_digest(presented.encode(), secret.encode()):
        raise SignatureInvalid("the delivery's shared secret does not match")


def _events(request: InboundRequest) -> list[dict[str, Any]]:
    try:
        raw = json.loads(request.body) if request.body else None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadMalformed(f"body is not JSON: {type(exc).__name__}") from None
    if request.header("ce-id") is not None:  # binary mode: attributes in ce-* headers
        attributes = {
            name[3:]: value for name, value in request.headers.items() if name.startswith("ce-")
        }
        return [attributes | {"data": raw}]
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, dict) for item in items):
        raise PayloadMalformed("body must be a CloudEvent object or an array of them")
    if len(items) > MAX_EVENTS:
        raise PayloadMalformed(f"more than {MAX_EVENTS} events in one delivery")
    return [dict(item) for item in items if isinstance(item, dict)]


def _action(event_type: str) -> tuple[str, str] | None:
    parts = event_type.split(".")
    if len(parts) < 3 or not parts[-1].startswith("v"):
        return None
    return ".".join(parts[:-2]), parts[-2]


def parse(
    request: InboundRequest, *, event_objects: Mapping[str, str], own_user: str | None
) -> list[ChangeEvent]:
    own = (own_user or "").upper() or None
    found: list[ChangeEvent] = []
    for event in _events(request):
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise PayloadMalformed("every CloudEvent needs a string id and type")
        split = _action(event_type)
        target = event_objects.get(split[0]) if split else None
        if split is None or target is None:
            continue  # a type this connection does not map
        object_name, key_fields = target.split(":")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        parts = [data.get(name) for name in key_fields.split("+")]
        if any(part in (None, "") for part in parts):
            raise PayloadMalformed(f"event {event_id}: data.{key_fields} is missing")
        key = "/".join(str(part) for part in parts)
        user = event.get("sapuser") or next((data[f] for f in USER_FIELDS if data.get(f)), None)
        if own is not None and isinstance(user, str) and user.upper() == own:
            continue  # our own write-back
        occurred = None
        if isinstance(event.get("time"), str):
            try:
                occurred = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            except ValueError:
                occurred = None
        try:
            found.append(
                ChangeEvent(
                    platform_event_id=event_id[:255],
                    object=object_name,
                    record_id=str(key),
                    change_type=ACTIONS.get(split[1].lower(), ChangeType.UPDATED),
                    occurred_at=occurred,
                    data={
                        "type": event_type,
                        "source": event.get("source"),
                        "changed_by": user if isinstance(user, str) else None,
                    },
                )
            )
        except ValidationError as exc:
            raise PayloadMalformed(f"event {event_id}: {exc.errors()[0]['msg']}") from None
    return found
