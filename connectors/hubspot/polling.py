"""Polling through the CRM search API, from a cursor stored with the events it covers.

Per object type, a window is one search: ``<modified> GTE lower``, sorted ascending on the
modified-date property (``lastmodifieddate`` on contacts, ``hs_lastmodifieddate``
elsewhere), paged with ``after``. HubSpot serves at most 10,000 results per search (paging
past them is a 400), so before a window reaches the cap it is restarted from the last
modified date seen; records at that instant are read again and stored once (an event's id
is object + record + modified date). If a whole capped window shares ONE instant, that
instant is read in id order instead (``<modified> EQ t AND hs_object_id GT last``, sorted
by ``hs_object_id``) and the next window starts after it: no gap, no endless loop.

Each new cycle starts ``lookback`` seconds before the last date seen, for records the
search index reports late; what was already seen dedupes. Object types take turns, one
page per call; ``more`` says another page is ready now. Updates our own writes caused
(remembered with the modified date they produced) are skipped. Search cannot say which
property changed, so a polled update reports the connection's watched properties.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors.base import ChangeEvent, ChangeType, PollResult

MODIFIED = {"contacts": "lastmodifieddate"}
CREATED_WITHIN_MS = 2000  # a record modified this soon after creation counts as created

Search = Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any]]]


def modified_property(object_type: str) -> str:
    return MODIFIED.get(object_type, "hs_lastmodifieddate")


def to_ms(value: Any) -> int | None:
    """Epoch ms from HubSpot's ISO-8601 datetimes (or an epoch-ms string)."""
    if value is None or value == "":
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class Poller:
    def __init__(
        self,
        search: Search,
        *,
        objects: Sequence[str],
        page_size: int,
        lookback_ms: int,
        cap: int,
        watched: Mapping[str, Sequence[str]],
        now_ms: Callable[[], int],
    ) -> None:
        self._search = search
        self._objects = list(objects)
        self._page = page_size
        self._lookback = lookback_ms
        self._cap = cap
        self._watched = watched
        self._now_ms = now_ms

    def _start(self) -> dict[str, Any]:
        return {
            "mode": "range",
            "lower": self._now_ms() - self._lookback,
            "after": None,
            "read": 0,
            "max_ts": None,
            "max_id": None,
        }

    async def poll(
        self, cursor: Mapping[str, Any] | None, own_writes: Mapping[str, int]
    ) -> PollResult:
        states: dict[str, dict[str, Any]] = {
            name: dict(value) for name, value in dict((cursor or {}).get("objects", {})).items()
        }
        turn = int((cursor or {}).get("turn", 0))
        object_type = self._objects[turn % len(self._objects)]
        state = states.get(object_type) or self._start()
        events, state, more_here = await self._page_of(object_type, state, own_writes)
        states[object_type] = state
        pending = dict((cursor or {}).get("pending", {}))
        pending[object_type] = more_here
        turn = turn + 1
        more = any(pending.get(name, True) for name in self._objects)
        return PollResult(events, {"objects": states, "turn": turn, "pending": pending}, more)

    def _request(self, object_type: str, state: Mapping[str, Any]) -> dict[str, Any]:
        modified = modified_property(object_type)
        if state["mode"] == "ties":
            filters = [
                {"propertyName": modified, "operator": "EQ", "value": str(state["ts"])},
                {"propertyName": "hs_object_id", "operator": "GT", "value": str(state["id"])},
            ]
            sort = "hs_object_id"
        else:
            filters = [{"propertyName": modified, "operator": "GTE", "value": str(state["lower"])}]
            sort = modified
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": [modified, "createdate", "hs_object_id"],
            "limit": self._page,
        }
        if state.get("after"):
            body["after"] = state["after"]
        return body

    async def _page_of(
        self, object_type: str, state: dict[str, Any], own_writes: Mapping[str, int]
    ) -> tuple[list[ChangeEvent], dict[str, Any], bool]:
        answer = await self._search(object_type, self._request(object_type, state))
        modified = modified_property(object_type)
        events = []
        for row in answer.get("results") or []:
            record_id = str(row["id"])
            properties = row.get("properties") or {}
            ts = to_ms(properties.get(modified)) or to_ms(row.get("updated_at")) or 0
            if state["max_ts"] is None or (ts, int(record_id)) > (
                state["max_ts"],
                int(state["max_id"]),
            ):
                state["max_ts"], state["max_id"] = ts, record_id
            if own_writes.get(f"{object_type}/{record_id}") == ts:
                continue  # the change is our own write-back
            events.append(self._event(object_type, record_id, ts, properties))
        state["read"] += len(answer.get("results") or [])
        after = ((answer.get("paging") or {}).get("next") or {}).get("after")
        if after and state["read"] + self._page <= self._cap:
            state["after"] = after
            return events, state, True
        if after:  # the next page would pass the search cap: restart the window
            return events, self._restart(state), True
        # After one instant walked by id, the range behind it is still to be read.
        return events, self._next_cycle(state), state["mode"] == "ties"

    def _restart(self, state: dict[str, Any]) -> dict[str, Any]:
        if state["mode"] == "ties":
            return state | {"id": state["max_id"], "after": None, "read": 0}
        if state["max_ts"] is not None and state["max_ts"] > state["lower"]:
            return state | {"lower": state["max_ts"], "after": None, "read": 0}
        # A full window at one instant: walk that instant by id.
        return {
            "mode": "ties",
            "ts": state["lower"],
            "id": state["max_id"],
            "after": None,
            "read": 0,
            "max_ts": state["max_ts"],
            "max_id": state["max_id"],
        }

    def _next_cycle(self, state: dict[str, Any]) -> dict[str, Any]:
        if state["mode"] == "ties":  # the instant is done: continue strictly after it
            lower = state["ts"] + 1
        elif state["max_ts"] is not None:
            lower = max(state["lower"], state["max_ts"] - self._lookback)
        else:
            lower = state["lower"]
        return {
            "mode": "range",
            "lower": lower,
            "after": None,
            "read": 0,
            "max_ts": state["max_ts"],
            "max_id": state["max_id"],
        }

    def _event(
        self, object_type: str, record_id: str, ts: int, properties: Mapping[str, Any]
    ) -> ChangeEvent:
        created = to_ms(properties.get("createdate"))
        is_new = created is not None and ts - created < CREATED_WITHIN_MS
        return ChangeEvent(
            platform_event_id=f"poll:{object_type}:{record_id}:{ts}",
            object=object_type,
            record_id=record_id,
            change_type=ChangeType.CREATED if is_new else ChangeType.UPDATED,
            changed_fields=() if is_new else tuple(self._watched.get(object_type, ())),
            occurred_at=datetime.fromtimestamp(ts / 1000, UTC),
            data={"source": "poll"},
        )
