"""Inbound Dataverse webhooks (a registered service endpoint): authentication and parsing.

Authentication (register-web-hook docs): the endpoint is registered with ONE of HttpHeader
(a header carries the key), WebhookKey (``?code=<key>``) or HttpQueryString
(``?<name>=<key>``). There is no signature over the body; the endpoint must refuse a
request whose key does not match. The key is ``secrets.webhook_secret``, compared in
constant time; ``config.webhook_auth`` says where it travels.

Body: a ``RemoteExecutionContext`` (DataContract JSON): ``MessageName``,
``PrimaryEntityName``, ``PrimaryEntityId``, ``InputParameters`` (key/value list; ``Target``
holds the entity, whose ``Attributes`` are a key/value list too), ``PostEntityImages``,
``CorrelationId``, ``Depth``, ``InitiatingUserId``, ``UserId``, ``OperationId``,
``RequestId``, ``OperationCreatedOn`` (``/Date(ms)/``). Above 256 KB the platform drops
``InputParameters`` and the images and says so in ``x-ms-dynamics-msg-size-exceeded``;
the event then names no changed columns.

One delivery is one event. Its id is the operation's (``OperationId``, else
``RequestId``, else a digest of the body) with the row and message, so the platform's
retried delivery of the same operation is stored once. Dropped before storage: changes
made by the connection's own Application User (``config.application_user_id``; also,
where the payload carries it, ``InitiatingUserApplicationId`` equal to our client id) —
our write-backs must not start flows again — and messages that change no row data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from connectors.base import ChangeEvent, ChangeType, InboundRequest
from connectors.dynamics.config import WebhookAuth, WebhookAuthKind
from core.errors import PayloadMalformed, SignatureInvalid

MESSAGES = {
    "create": ChangeType.CREATED,
    "update": ChangeType.UPDATED,
    "delete": ChangeType.DELETED,
    "assign": ChangeType.UPDATED,
    "setstate": ChangeType.UPDATED,
    "setstatedynamicentity": ChangeType.UPDATED,
}
IMPLIED_FIELDS = {"assign": ("ownerid",), "setstate": ("statecode", "statuscode")}
IMPLIED_FIELDS["setstatedynamicentity"] = IMPLIED_FIELDS["setstate"]
SYSTEM_FIELDS = {"modifiedon", "modifiedby", "modifiedonbehalfby", "versionnumber"}
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def verify(request: InboundRequest, auth: WebhookAuth, secret: str) -> None:
    if auth.kind is WebhookAuthKind.HEADER:
        presented = request.header(auth.parameter)
        where = f"header {auth.parameter}"
    else:
        presented = request.query.get(auth.parameter)
        where = f"query parameter {auth.parameter}"
    if presented is None:
        raise SignatureInvalid(f"the webhook key is missing ({where})")
    if not hmac.compare_digest(presented.encode(), secret.encode()):
        raise SignatureInvalid(f"the webhook key in {where} does not match")


def date_of(value: Any) -> datetime | None:
    """``/Date(1700000000000)/`` or ``/Date(1700000000000-0700)/`` (the offset is the
    sender's zone, the milliseconds are UTC)."""
    match = _DATE.match(str(value or ""))
    if match is None:
        return None
    return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)


def pairs(value: Any) -> dict[str, Any]:
    """A DataContract key/value list as a dict (a plain object is accepted too)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return {
            str(item["key"]): item.get("value")
            for item in value
            if isinstance(item, Mapping) and "key" in item
        }
    return {}


def _guid(value: Any) -> str | None:
    text = str(value or "").strip("{}").lower()
    return text if _GUID.match(text) and text != EMPTY_GUID else None


def _body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadMalformed(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(parsed, dict):
        raise PayloadMalformed("body must be a RemoteExecutionContext object")
    return parsed


def parse(
    request: InboundRequest,
    *,
    own_user_id: str | None,
    own_application_id: str,
    user_emails: Mapping[str, str],
) -> list[ChangeEvent]:
    context = _body(request.body)
    message = str(context.get("MessageName") or "")
    entity = str(context.get("PrimaryEntityName") or "")
    record_id = _guid(context.get("PrimaryEntityId"))
    if not message or not entity:
        raise PayloadMalformed("MessageName and PrimaryEntityName are required")
    change = MESSAGES.get(message.lower())
    if change is None or record_id is None:
        return []  # Associate, Retrieve, …: no row data changed
    initiating = _guid(context.get("InitiatingUserId")) or _guid(context.get("UserId"))
    application = _guid(context.get("InitiatingUserApplicationId"))
    if own_user_id is not None and initiating == own_user_id.lower():
        return []  # our own write-back
    if application is not None and application == own_application_id.lower():
        return []
    inputs = pairs(context.get("InputParameters"))
    target = inputs.get("Target")
    attributes = pairs(target.get("Attributes")) if isinstance(target, Mapping) else {}
    fields: tuple[str, ...] = ()
    if change is ChangeType.UPDATED:
        implied = IMPLIED_FIELDS.get(message.lower(), ())
        fields = implied or tuple(sorted(set(attributes) - SYSTEM_FIELDS))
    operation = _guid(context.get("OperationId")) or _guid(context.get("RequestId"))
    key = operation or hashlib.sha256(request.body).hexdigest()[:32]
    data: dict[str, Any] = {
        "message": message,
        "correlation_id": _guid(context.get("CorrelationId")),
        "depth": context.get("Depth"),
        "initiating_user_id": initiating,
        "stage": context.get("Stage"),
        "size_exceeded": request.header("x-ms-dynamics-msg-size-exceeded") is not None,
    }
    if initiating is not None:
        data["changed_by"] = user_emails.get(initiating, initiating)
    try:
        event = ChangeEvent(
            platform_event_id=f"wh:{key}:{entity}:{record_id}:{message.lower()}"[:255],
            object=entity,
            record_id=record_id,
            change_type=change,
            changed_fields=fields,
            occurred_at=date_of(context.get("OperationCreatedOn")),
            data=data,
        )
    except ValidationError as exc:
        raise PayloadMalformed(f"{entity} {record_id}: {exc.errors()[0]['msg']}") from None
    return [event]
