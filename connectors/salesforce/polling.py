"""Polling: changed records by a (SystemModstamp, Id) keyset cursor, over SOQL.

For each object in ``config.poll_objects``::

    SELECT <fields> FROM <Object>
    WHERE SystemModstamp > <ts> OR (SystemModstamp = <ts> AND Id > '<id>')
    ORDER BY SystemModstamp, Id

Salesforce keeps datetimes to the second, so many records share a ``SystemModstamp``; the
Id tie-break makes the order total, so resuming after the last row read skips nothing and
repeats nothing. Pages are followed through ``nextRecordsUrl`` (``MAX_PAGES`` per poll;
the scheduler asks again at once when ``PollResult.more``). Each poll cycle starts
``config.poll_lookback_seconds`` before the high-water mark, because a long transaction
commits rows stamped with its start; rows read again there carry the same event id
(``poll:<Object>:<Id>:<SystemModstamp>``) and are stored once. A cycle cut short by the
page budget resumes exactly where it stopped (no look-back), so it always progresses.

Polled updates report the polled fields as ``changed_fields`` (SOQL cannot say which
changed); rows last modified by the integration user are our write-backs and are skipped;
deletions are not seen (use CDC for those).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import ChangeEvent, ChangeType, PollResult, changed_by
from connectors.salesforce.client import SalesforceClient
from core.errors import ConnectorTerminalError

MAX_PAGES = 5
ALWAYS = ("Id", "SystemModstamp", "CreatedDate", "LastModifiedDate", "LastModifiedById")
_ID = re.compile(r"^[a-zA-Z0-9]{15,18}$")
EPOCH = "1970-01-01T00:00:00Z"


def parse_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def soql_datetime(value: datetime) -> str:
    """A SOQL dateTime literal (documented form YYYY-MM-DDThh:mm:ssZ)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_query(object_name: str, fields: Sequence[str], ts: str, last_id: str) -> str:
    if last_id and not _ID.fullmatch(last_id):
        raise ConnectorTerminalError(f"poll cursor holds an invalid record id {last_id!r}")
    selected = list(dict.fromkeys([*ALWAYS, *fields]))
    literal = soql_datetime(parse_datetime(ts))
    # Names are checked API names (config) and the id matched _ID: nothing to inject.
    where = f"SystemModstamp > {literal} OR (SystemModstamp = {literal} AND Id > '{last_id}')"
    select = f"SELECT {', '.join(selected)} FROM {object_name}"  # noqa: S608
    return f"{select} WHERE {where} ORDER BY SystemModstamp, Id"


def row_event(object_name: str, fields: Sequence[str], row: Mapping[str, Any]) -> ChangeEvent:
    record = {k: v for k, v in row.items() if k != "attributes"}
    created = record.get("CreatedDate") == record.get("LastModifiedDate")
    stamp = str(record["SystemModstamp"])
    return ChangeEvent(
        platform_event_id=f"poll:{object_name}:{record['Id']}:{stamp}",
        object=object_name,
        record_id=str(record["Id"]),
        change_type=ChangeType.CREATED if created else ChangeType.UPDATED,
        changed_fields=tuple(fields),
        occurred_at=parse_datetime(stamp),
        data=record | changed_by(record.get("LastModifiedById")),
    )


class Poller:
    def __init__(
        self,
        client: SalesforceClient,
        objects: Mapping[str, Sequence[str]],
        lookback_seconds: int,
        integration_user_id: str | None,
    ) -> None:
        self._client = client
        self._objects = objects
        self._lookback = timedelta(seconds=lookback_seconds)
        self._user = (integration_user_id or "")[:15]

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        if not self._objects:
            raise NotImplementedError("config.poll_objects names no object to poll")
        positions: dict[str, Any] = dict((cursor or {}).get("objects", {}))
        events: list[ChangeEvent] = []
        more = False
        for object_name, fields in self._objects.items():
            position = positions.get(object_name) or {"ts": EPOCH, "id": "", "resume": False}
            found, position, unfinished = await self._object(object_name, fields, position)
            events += found
            positions[object_name] = position
            more = more or unfinished
        return PollResult(events=events, cursor={"objects": positions}, more=more)

    async def _object(
        self, object_name: str, fields: Sequence[str], position: Mapping[str, Any]
    ) -> tuple[list[ChangeEvent], dict[str, Any], bool]:
        ts, last_id = str(position["ts"]), str(position["id"])
        if not position.get("resume") and ts != EPOCH:
            # A new cycle: look back for rows committed late with an older stamp.
            start, start_id = soql_datetime(parse_datetime(ts) - self._lookback), ""
        else:
            start, start_id = ts, last_id
        page = await self._client.query(build_query(object_name, fields, start, start_id))
        events: list[ChangeEvent] = []
        high = {"ts": ts, "id": last_id}
        for pages in range(1, MAX_PAGES + 1):
            for row in page.get("records", []):
                key = (parse_datetime(str(row["SystemModstamp"])), str(row["Id"]))
                if key > (parse_datetime(high["ts"]), high["id"]):
                    high = {"ts": str(row["SystemModstamp"]), "id": str(row["Id"])}
                if self._user and str(row.get("LastModifiedById", ""))[:15] == self._user:
                    continue  # our own write-back
                events.append(row_event(object_name, fields, row))
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return events, {**high, "resume": False}, False
            if pages < MAX_PAGES:
                page = await self._client.query_more(str(page["nextRecordsUrl"]))
        return events, {**high, "resume": True}, True
