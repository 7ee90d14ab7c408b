"""Polling with Dataverse change tracking, from a cursor stored with the events it covers.

Per table (``config.poll_objects``: logical name → columns), the first request is
``GET <set>?$select=<columns>`` with ``Prefer: odata.track-changes, odata.maxpagesize=N``;
its pages end with an ``@odata.deltaLink``, and GETting that link later answers the rows
changed since (plus ``$deletedEntity`` entries for deleted rows, detected by the context's
suffix and ``reason``, never by a literal URL) and a new delta link. Tables take turns,
one page per call; ``more`` says another page is ready now.

The cursor, per table:

* ``delta`` — the last COMPLETE delta link. It is replaced only when the last page of a
  round has been processed; an unfinished round keeps its ``next`` link beside it, so a
  crash between pages resumes there (or, should that link fail, starts again from
  ``delta``) and never skips changes;
* ``seen`` — per row, a digest: its version (from ``@odata.etag``) and a 24-bit hash of
  each polled column. It tells which polled columns an update changed (the platform does
  not say), and it makes a resync cheap and quiet: a row whose version is unchanged emits
  nothing. Size: about 40 + 7 * columns bytes per row.

The very first round is a baseline: it records digests and emits nothing (connecting a
table does not replay its history into flows). When a delta link is refused as expired
(:func:`connectors.dynamics.errors.is_expired_token`) the table is read again in full: new
rows are ``created``, rows whose digest differs ``updated``, rows that no longer appear
``deleted``, and unchanged rows nothing. Rows last modified by the connection's own
Application User are our write-backs: their digests are recorded, but they start nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.base import ChangeEvent, ChangeType, PollResult
from connectors.dynamics.errors import DeltaTokenExpired
from connectors.dynamics.metadata import Table

MODIFIED_BY = "_modifiedby_value"
MODIFIED_ON = "modifiedon"
HASH_HEX = 6

Page = Callable[[str, bool], Awaitable[dict[str, Any]]]  # (url or path, track changes)
TableOf = Callable[[str], Awaitable[Table]]


def version_of(row: Mapping[str, Any]) -> str:
    etag = str(row.get("@odata.etag") or "")
    return etag.removeprefix("W/").strip('"')


def digest(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    hashes = "".join(
        hashlib.blake2b(
            json.dumps(row.get(c), sort_keys=True, default=str).encode(), digest_size=3
        ).hexdigest()
        for c in columns
    )
    return f"{version_of(row)}|{hashes}"


def changed_columns(old: str, new: str, columns: Sequence[str]) -> list[str]:
    old_hashes, new_hashes = old.partition("|")[2], new.partition("|")[2]
    return [
        column
        for n, column in enumerate(columns)
        if old_hashes[n * HASH_HEX : (n + 1) * HASH_HEX]
        != new_hashes[n * HASH_HEX : (n + 1) * HASH_HEX]
    ]


def is_deleted(row: Mapping[str, Any]) -> bool:
    context = str(row.get("@odata.context") or "")
    return context.endswith("$deletedEntity") and "reason" in row


class Poller:
    def __init__(
        self,
        page: Page,
        table_of: TableOf,
        *,
        objects: Mapping[str, Sequence[str]],
    ) -> None:
        self._page = page
        self._table_of = table_of
        self._objects = {name: list(columns) for name, columns in objects.items()}

    async def poll(self, cursor: Mapping[str, Any] | None, own_user: str | None) -> PollResult:
        if not self._objects:
            raise NotImplementedError("no tables to poll (config.poll_objects is empty)")
        tables = {k: dict(v) for k, v in dict((cursor or {}).get("tables", {})).items()}
        names = list(self._objects)
        turn = int((cursor or {}).get("turn", 0))
        name = names[turn % len(names)]
        state = self._fresh_state(name, tables.get(name))
        events, state = await self._step(name, state, own_user)
        tables[name] = state
        more = any(
            name not in tables or tables[name].get("next") or not tables[name].get("delta")
            for name in names
        )
        return PollResult(events, {"tables": tables, "turn": turn + 1}, bool(more))

    def _fresh_state(self, name: str, state: dict[str, Any] | None) -> dict[str, Any]:
        columns = self._objects[name]
        if state is None or state.get("columns") != columns:
            # New table, or its columns changed: digests would not compare; start over.
            return {
                "columns": columns,
                "mode": "baseline",
                "delta": None,
                "next": None,
                "seen": {},
                "fresh": {},
            }
        return state

    async def _request(self, name: str, state: dict[str, Any]) -> dict[str, Any]:
        link = state.get("next") or (state.get("delta") if state["mode"] == "delta" else None)
        if link:
            try:
                return await self._page(str(link), True)
            except DeltaTokenExpired:
                # A delta round (or its next page) whose token expired: read the table
                # again; an unfinished baseline simply starts over, still quietly.
                mode = "baseline" if state["mode"] == "baseline" else "resync"
                state.update(mode=mode, delta=None, next=None, fresh={})
        table = await self._table_of(name)
        select = [table.primary_id, *state["columns"], MODIFIED_ON, MODIFIED_BY]
        unique = ",".join(dict.fromkeys(select))
        return await self._page(f"{table.entity_set}?$select={unique}", True)

    async def _step(
        self, name: str, state: dict[str, Any], own_user: str | None
    ) -> tuple[list[ChangeEvent], dict[str, Any]]:
        answer = await self._request(name, state)
        table = await self._table_of(name)
        columns: list[str] = state["columns"]
        seen: dict[str, str] = state["seen"]
        fresh: dict[str, str] = state.setdefault("fresh", {})
        mode = state["mode"]
        events: list[ChangeEvent] = []
        for row in answer.get("value") or []:
            if is_deleted(row):
                record_id = str(row.get("id") or "").lower()
                old = seen.pop(record_id, None)
                if record_id and (old is not None or mode == "delta"):
                    version = (old or "").partition("|")[0]
                    events.append(self._deleted(name, record_id, version))
                continue
            record_id = str(row.get(table.primary_id) or "").lower()
            if not record_id:
                continue
            now = digest(row, columns)
            old = seen.get(record_id)
            if mode == "delta":
                seen[record_id] = now
            else:
                fresh[record_id] = now
            if mode == "baseline" or old == now:
                continue
            if old is not None and old.partition("|")[0] == now.partition("|")[0]:
                continue  # same version: nothing happened to the row
            if own_user is not None and str(row.get(MODIFIED_BY) or "").lower() == own_user:
                continue  # our own write-back
            events.append(self._changed(name, record_id, row, old, now, columns))
        next_link = answer.get("@odata.nextLink")
        if next_link:
            state["next"] = str(next_link)
            return events, state
        # The round's last page: only now does the new delta link replace the old one.
        if mode != "delta":
            if mode == "resync":
                for record_id in sorted(set(seen) - set(fresh)):
                    events.append(self._deleted(name, record_id, seen[record_id].partition("|")[0]))
            state["seen"] = fresh
        state.update(mode="delta", next=None, fresh={}, delta=answer.get("@odata.deltaLink"))
        return events, state

    def _changed(
        self,
        name: str,
        record_id: str,
        row: Mapping[str, Any],
        old: str | None,
        now: str,
        columns: Sequence[str],
    ) -> ChangeEvent:
        created = old is None
        version = now.partition("|")[0]
        return ChangeEvent(
            platform_event_id=f"poll:{name}:{record_id}:{version}"[:255],
            object=name,
            record_id=record_id,
            change_type=ChangeType.CREATED if created else ChangeType.UPDATED,
            changed_fields=() if created else tuple(changed_columns(old or "", now, columns)),
            occurred_at=_parse_time(row.get(MODIFIED_ON)),
            data={"source": "poll", "modified_by": row.get(MODIFIED_BY)},
        )

    def _deleted(self, name: str, record_id: str, version: str) -> ChangeEvent:
        return ChangeEvent(
            platform_event_id=f"poll:{name}:{record_id}:deleted:{version}"[:255],
            object=name,
            record_id=record_id,
            change_type=ChangeType.DELETED,
            data={"source": "poll"},
        )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
