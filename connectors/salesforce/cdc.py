"""Change Data Capture and Platform Events, delivered by a relay.

Salesforce streams CDC and platform events over the Pub/Sub API (gRPC) or CometD; neither
can call a webhook. A small relay (any CometD / Pub/Sub subscriber that keeps the
``replayId``) forwards what it receives to ``POST /hooks/{connection_id}``:

* body ``{"events": [<event>, …]}``, each event as CometD delivers it — either
  ``{"schema", "payload": {"ChangeEventHeader": {…}, <fields>}, "event": {"replayId"}}`` or
  wrapped as ``{"data": {…}, "channel": "/data/LeadChangeEvent"}`` (platform events need
  the wrapper: the channel ``/event/<Name>__e`` names them);
* authenticated with the ``Switchyard-Signature`` header (HMAC-SHA256 over
  ``f"{t}.{body}"`` with ``secrets.relay_secret``, timestamp within the tolerance), the
  scheme Switchyard's own callbacks use — Salesforce signs nothing itself, so the relay,
  which holds Salesforce credentials anyway, is the party that vouches.

Each record id of a change becomes one event, ``cdc:<transactionKey>:<sequenceNumber>:<id>``
(stable across redeliveries). Gap events carry no fields and map to their base change;
``GAP_OVERFLOW`` and wildcard record ids (``001*``) name no record and are skipped. A change
committed by the integration user that touches only ``config.writeback_fields`` (or any
field, when none are listed for the object) is our own write-back and is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.base import ChangeEvent, ChangeType, InboundRequest, changed_by
from core import signing
from core.errors import PayloadMalformed, SignatureInvalid

MAX_EVENTS = 500
CHANGE_TYPES = {
    "CREATE": ChangeType.CREATED,
    "UPDATE": ChangeType.UPDATED,
    "DELETE": ChangeType.DELETED,
    "UNDELETE": ChangeType.CREATED,
}
# Fields every save touches: they never make a change someone else's.
SYSTEM_FIELDS = frozenset({"LastModifiedDate", "LastModifiedById", "SystemModstamp"})


def verify(request: InboundRequest, secret: str | None, tolerance_seconds: int) -> None:
    if secret is None:
        raise SignatureInvalid(
            "this connection takes no relay deliveries: set secrets.relay_secret to accept "
            "CDC / platform events"
        )
    signing.verify(
        [secret],
        request.header(signing.HEADER),
        request.body,
        tolerance_seconds=tolerance_seconds,
    )


def _events(body: bytes) -> list[Any]:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadMalformed(f"relay delivery is not JSON: {exc}") from None
    events = raw.get("events") if isinstance(raw, dict) else None
    if not isinstance(events, list) or not events:
        raise PayloadMalformed('relay delivery must be {"events": [at least one event]}')
    if len(events) > MAX_EVENTS:
        raise PayloadMalformed(f"relay delivery carries more than {MAX_EVENTS} events")
    return events


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _millis(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int | float) else None


class Parser:
    def __init__(
        self,
        integration_user_id: str | None,
        writeback_fields: Mapping[str, Sequence[str]],
        platform_events: Mapping[str, str],
    ) -> None:
        self._user = (integration_user_id or "")[:15]
        self._ours = {name: set(fields) for name, fields in writeback_fields.items()}
        self._platform_events = platform_events

    def parse(self, body: bytes) -> list[ChangeEvent]:
        parsed: list[ChangeEvent] = []
        for index, raw in enumerate(_events(body)):
            if not isinstance(raw, dict):
                raise PayloadMalformed(f"events[{index}]: not an object")
            channel = str(raw.get("channel", ""))
            message = raw.get("data", raw)
            payload = message.get("payload") if isinstance(message, dict) else None
            if not isinstance(payload, dict):
                raise PayloadMalformed(f"events[{index}]: no payload object")
            replay = (message.get("event") or {}) if isinstance(message, dict) else {}
            try:
                if isinstance(payload.get("ChangeEventHeader"), dict):
                    parsed += self._change(payload)
                else:
                    parsed += self._platform_event(channel, payload, replay)
            except PayloadMalformed as exc:
                raise PayloadMalformed(f"events[{index}]: {exc.detail}") from None
            except ValueError as exc:  # a ChangeEvent field out of bounds
                raise PayloadMalformed(f"events[{index}]: {exc}") from None
        return parsed

    def _own(self, entity: str, commit_user: Any, changed: Sequence[str]) -> bool:
        if not self._user or not isinstance(commit_user, str):
            return False
        if commit_user[:15] != self._user:
            return False
        ours = self._ours.get(entity)
        return ours is None or set(changed) - SYSTEM_FIELDS <= ours

    def _change(self, payload: dict[str, Any]) -> list[ChangeEvent]:
        header = payload["ChangeEventHeader"]
        entity = header.get("entityName")
        kind = str(header.get("changeType", ""))
        ids = header.get("recordIds")
        if not isinstance(entity, str) or not entity or not isinstance(ids, list):
            raise PayloadMalformed("ChangeEventHeader needs entityName and recordIds")
        base = kind.removeprefix("GAP_")
        if base == "OVERFLOW":
            return []
        if base not in CHANGE_TYPES:
            raise PayloadMalformed(f"unknown changeType {kind!r}")
        transaction, sequence = header.get("transactionKey"), header.get("sequenceNumber")
        if not isinstance(transaction, str) or not transaction or not _integer(sequence):
            # The event id is built from them: without them, unrelated changes of one
            # record would share an id and all but the first be dropped as redeliveries.
            raise PayloadMalformed("ChangeEventHeader needs transactionKey and sequenceNumber")
        changed = [str(f) for f in header.get("changedFields") or []]
        if self._own(entity, header.get("commitUser"), changed):
            return []
        key = f"{transaction}:{sequence}"
        data = {k: v for k, v in payload.items() if k != "ChangeEventHeader"}
        return [
            ChangeEvent(
                platform_event_id=f"cdc:{key}:{record_id}",
                object=entity,
                record_id=record_id,
                change_type=CHANGE_TYPES[base],
                changed_fields=tuple(changed),
                occurred_at=_millis(header.get("commitTimestamp")),
                data=data
                | changed_by(header.get("commitUser"))
                | ({"gap": True} if kind.startswith("GAP_") else {}),
            )
            for record_id in ids
            if isinstance(record_id, str) and record_id and "*" not in record_id
        ]

    def _platform_event(
        self, channel: str, payload: dict[str, Any], replay: Any
    ) -> list[ChangeEvent]:
        name = channel.removeprefix("/event/")
        target = self._platform_events.get(name)
        if not channel.startswith("/event/") or target is None:
            raise PayloadMalformed(
                f"platform event on channel {channel!r} is not mapped in "
                "config.platform_events (or lacks a ChangeEventHeader)"
            )
        object_name, _, id_field = target.partition(".")
        record_id = payload.get(id_field)
        if not isinstance(record_id, str) or not record_id:
            raise PayloadMalformed(f"{name}: {id_field} names no record")
        replay = replay if isinstance(replay, dict) else {}
        unique = replay.get("EventUuid") or replay.get("replayId")
        if unique is None:
            raise PayloadMalformed(f"{name}: event needs EventUuid or replayId")
        created = payload.get("CreatedDate")
        return [
            ChangeEvent(
                platform_event_id=f"pe:{name}:{unique}",
                object=object_name,
                record_id=record_id,
                change_type=ChangeType.UPDATED,
                changed_fields=tuple(k for k in payload if k.endswith("__c")),
                occurred_at=(
                    datetime.fromisoformat(created.replace("Z", "+00:00"))
                    if isinstance(created, str)
                    else None
                ),
                data=dict(payload),
            )
        ]
