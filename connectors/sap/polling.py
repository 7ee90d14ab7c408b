"""Polling OData entity sets on their change date, from a cursor of (timestamp, key).

Per object (``config.poll_objects``: object → its ``Edm.DateTimeOffset`` change field,
e.g. ``A_SalesOrder`` → ``LastChangeDateTime``) one query::

    $filter=LastChangeDateTime gt datetimeoffset'T'
            or (LastChangeDateTime eq datetimeoffset'T' and SalesOrder gt 'K')
    $orderby=LastChangeDateTime asc,SalesOrder asc   $top=<page>

Ordering by the date AND the key makes the cursor exact: records sharing one timestamp
are read in key order and the cursor stops between two of them, so nothing is skipped or
read twice however many share it. When SAP pages on its own (server-side paging, a
``__next`` link with ``$skiptoken``), the link is stored in the cursor and followed next.
A first poll (no cursor) reads no changes: it places the cursor after the newest change
SAP holds (``$orderby`` descending, ``$top=1``), so SAP's clock, not ours, sets the start.
Objects take turns, one page per call; ``more`` says another page is ready now. Rows last
changed by our own write user (``LastChangedByUser``, where the entity has it) are passed
over: they are our write-backs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.base import ChangeEvent, ChangeType, PollResult
from connectors.sap import wire

USER_FIELDS = ("LastChangedByUser", "LastChangedByUserID")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (object, params, next link) → (plain rows, next link)
Query = Callable[
    [str, Mapping[str, str], str | None], Awaitable[tuple[list[dict[str, Any]], str | None]]
]
Keys = Callable[[str], Awaitable[tuple[Sequence[str], Sequence[str]]]]  # keys, properties


class Poller:
    def __init__(
        self,
        query: Query,
        keys: Keys,
        *,
        objects: Mapping[str, str],
        page_size: int,
        own_user: str | None,
    ) -> None:
        self._query = query
        self._keys = keys
        self._objects = dict(objects)
        self._page = page_size
        self._own = (own_user or "").upper() or None

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        names = list(self._objects)
        if not names:
            return PollResult([], dict(cursor or {}), False)
        states = {k: dict(v) for k, v in dict((cursor or {}).get("objects", {})).items()}
        turn = int((cursor or {}).get("turn", 0))
        name = names[turn % len(names)]
        state = states.get(name)
        if state is None:
            events: list[ChangeEvent] = []
            state, more_here = await self._start(name), True
        else:
            events, state, more_here = await self._page_of(name, state)
        states[name] = state
        pending = dict((cursor or {}).get("pending", {}))
        pending[name] = more_here
        more = any(pending.get(n, False) for n in names)
        return PollResult(events, {"objects": states, "turn": turn + 1, "pending": pending}, more)

    async def _start(self, name: str) -> dict[str, Any]:
        """Begin after the newest change SAP holds: SAP's clock, not ours, sets the start."""
        field = self._objects[name]
        keys, _ = await self._keys(name)
        params = {
            "$orderby": f"{field} desc,{keys[0]} desc",
            "$top": "1",
            "$select": ",".join([field, *keys]),
        }
        rows, _ = await self._query(name, params, None)
        newest = wire.parse_date(rows[0].get(field)) if rows else None
        if newest is None:
            return {"ts": wire.iso(EPOCH), "key": "", "next": None}
        return {"ts": wire.iso(newest), "key": str(rows[0].get(keys[0]) or ""), "next": None}

    async def _page_of(
        self, name: str, state: dict[str, Any]
    ) -> tuple[list[ChangeEvent], dict[str, Any], bool]:
        field = self._objects[name]
        keys, properties = await self._keys(name)
        key = keys[0]
        moment = wire.parse_date(state["ts"]) or EPOCH
        stamp = wire.datetimeoffset_literal(moment)
        literal = wire.string_literal(str(state["key"]))
        select = [field, *keys, *(f for f in USER_FIELDS if f in properties)]
        params = {
            "$filter": f"{field} gt {stamp} or ({field} eq {stamp} and {key} gt {literal})",
            "$orderby": f"{field} asc,{key} asc",
            "$top": str(self._page),
            "$select": ",".join(select),
        }
        rows, next_url = await self._query(name, params, state.get("next"))
        events = []
        for row in rows:
            changed = wire.parse_date(row.get(field))
            if changed is None:
                continue
            record_id = wire.record_id(row, keys)
            state = {"ts": wire.iso(changed), "key": str(row.get(key) or ""), "next": None}
            user = next((str(row[f]) for f in USER_FIELDS if row.get(f)), "")
            if self._own is not None and user.upper() == self._own:
                continue  # our own write-back
            events.append(
                ChangeEvent(
                    platform_event_id=f"poll:{name}:{record_id}:{wire.epoch_ms(changed)}"[:255],
                    object=name,
                    record_id=record_id,
                    change_type=ChangeType.UPDATED,
                    occurred_at=changed,
                    data={"source": "poll", "changed_by": user or None},
                )
            )
        state["next"] = next_url
        return events, state, bool(next_url) or len(rows) >= self._page
