"""SANDBOX — the SAP sandbox's OData V2 services: entities, queries, writes, ``$batch``.

:class:`Services` answers one :class:`Call` (a request already authenticated and past
the CSRF check) with an :class:`Answer`; the HTTP layer (:mod:`.sandbox`) and ``$batch``
both use it. Writes need ``If-Match`` on ETag-enabled entities (428 without, 412 when it
is stale); a changeset in ``$batch`` is atomic (all or nothing) and its failure is one
error answer; every part has its own status inside the ``202``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from connectors.sap.sandbox_schema import ENTITIES, SERVICE_OF, EntityDef
from connectors.sap.sandbox_store import (
    EntityStore,
    ODataError,
    Row,
    etag_of,
    key_of,
    matcher,
    render_value,
    sort_key,
    to_python,
)

_RESOURCE = re.compile(
    r"^(?P<set>[A-Za-z0-9_]+)(?:\((?P<key>[^)]*)\))?(?:/(?P<nav>[A-Za-z0-9_]+))?$"
)
Changed = Callable[[EntityDef, Row, str, bool], None]  # entity, row, user, created


@dataclass
class Call:
    method: str
    service: str
    resource: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    user: str = ""
    base: str = ""  # service root URL, for __metadata and __next


@dataclass
class Answer:
    status: int
    body: Any = None  # JSON-able, or text
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(exc: ODataError) -> Answer:
    inner = {
        "transactionid": "0A1B2C3D4E5F60718293A4B5C6D7E8F9",
        "timestamp": "20260101000000.0000000",
        "errordetails": [
            {
                "code": d.get("code", exc.code),
                "message": d["message"],
                "propertyref": "",
                "severity": "error",
                "target": d.get("target", ""),
                "transition": False,
            }
            for d in (exc.details or [{"code": exc.code, "message": exc.message}])
        ],
    }
    body = {
        "error": {
            "code": exc.code,
            "message": {"lang": "en", "value": exc.message},
            "innererror": inner,
        }
    }
    return Answer(exc.status, body)


def _key(entity: EntityDef, raw: str) -> str:
    parts = [p.strip() for p in unquote(raw).split(",")]
    values: dict[str, str] = {}
    for index, part in enumerate(parts):
        name, eq, literal = part.partition("=")
        if not eq:
            name, literal = entity.keys[index] if index < len(entity.keys) else "", part
        if not (literal.startswith("'") and literal.endswith("'")):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate ({raw})")
        values[name.strip()] = literal[1:-1].replace("''", "'")
    if set(values) != set(entity.keys):
        raise ODataError(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate ({raw})")
    return key_of(entity, values)


class Services:
    def __init__(self, clock: Callable[[], datetime], on_change: Changed) -> None:
        self.sets = {name: EntityStore(entity) for name, entity in ENTITIES.items()}
        self.clock = clock
        self.on_change = on_change
        self.page_limit: int | None = None  # server-side paging (answers carry __next)
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []  # method, set, key, body

    # ------------------------------------------------------------ rendering

    def render(
        self, entity: EntityDef, row: Row, base: str, select: list[str] | None = None
    ) -> dict[str, Any]:
        key = "(" + ",".join(f"{k}='{row.values.get(k)}'" for k in entity.keys) + ")"
        uri = f"{base}/{entity.set_name}{key}"
        out: dict[str, Any] = {
            "__metadata": {
                "id": uri,
                "uri": uri,
                "type": f"{SERVICE_OF[entity.set_name]}.{entity.type_name}",
                "etag": etag_of(entity, row),
            }
        }
        for prop in entity.props:
            if select and prop.name not in select:
                continue
            out[prop.name] = render_value(entity, prop.name, row.values.get(prop.name))
        for nav in entity.navs:
            if not select:
                out[nav] = {"__deferred": {"uri": f"{uri}/{nav}"}}
        return out

    # ------------------------------------------------------------ dispatch

    def handle(self, call: Call) -> Answer:
        try:
            return self._dispatch(call)
        except ODataError as exc:
            return error_answer(exc)

    def _dispatch(self, call: Call) -> Answer:
        match = _RESOURCE.match(call.resource)
        store = self.sets.get(match.group("set")) if match else None
        if match is None or store is None or SERVICE_OF[store.entity.set_name] != call.service:
            raise ODataError(
                404, "/IWBEP/CM_MGW_RT/025", f"Resource not found for segment '{call.resource}'"
            )
        entity = store.entity
        method = call.headers.get("x-http-method", call.method).upper()
        if match.group("key") is None:
            if method == "GET":
                return self._collection(store, call)
            if method == "POST":
                return self._create(store, call)
            raise ODataError(
                405, "/IWBEP/CM_MGW_RT/003", f"Method {method} not allowed on a collection"
            )
        key = _key(entity, match.group("key"))
        row = store.rows.get(key)
        if row is None:
            raise ODataError(
                404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{entity.type_name}'"
            )
        if match.group("nav"):
            return self._children(store, row, match.group("nav"), call)
        if method == "GET":
            return Answer(
                200,
                {"d": self.render(entity, row, call.base, select_of(call))},
                {"etag": etag_of(entity, row)},
            )
        if method in ("PATCH", "MERGE", "PUT"):
            return self._update(store, key, row, call)
        if method == "DELETE":
            self._precondition(entity, row, call)
            del store.rows[key]
            return Answer(204)
        raise ODataError(405, "/IWBEP/CM_MGW_RT/003", f"Method {method} not allowed")

    def _collection(self, store: EntityStore, call: Call) -> Answer:
        entity = store.entity
        keep = matcher(entity, call.query.get("$filter"))
        rows = sorted(
            (r for r in store.rows.values() if keep(r.values)),
            key=sort_key(entity, call.query.get("$orderby")),
        )
        total = len(rows)
        skip = int(call.query.get("$skiptoken") or call.query.get("$skip") or 0)
        top = int(call.query["$top"]) if "$top" in call.query else None
        end = total if top is None else min(total, skip + top)
        limit = self.page_limit
        page_end = end if limit is None else min(end, skip + limit)
        body: dict[str, Any] = {
            "results": [
                self.render(entity, r, call.base, select_of(call)) for r in rows[skip:page_end]
            ]
        }
        if call.query.get("$inlinecount") == "allpages":
            body["__count"] = str(total)
        if page_end < end:
            kept = {k: v for k, v in call.query.items() if k not in ("$skiptoken", "$skip")}
            if top is not None:
                kept["$top"] = str(end - page_end)
            query = "&".join(f"{k}={v}" for k, v in kept.items())
            body["__next"] = f"{call.base}/{entity.set_name}?{query}&$skiptoken={page_end}".replace(
                "?&", "?"
            )
        return Answer(200, {"d": body})

    def _children(self, store: EntityStore, row: Row, nav: str, call: Call) -> Answer:
        child_set = store.entity.navs.get(nav)
        if child_set is None:
            raise ODataError(404, "/IWBEP/CM_MGW_RT/025", f"Navigation {nav} not found")
        child = self.sets[child_set]
        parent = {k: row.values[k] for k in store.entity.keys}
        rows = [
            r for r in child.rows.values() if all(r.values.get(k) == v for k, v in parent.items())
        ]
        rows.sort(key=sort_key(child.entity, None))
        return Answer(
            200, {"d": {"results": [self.render(child.entity, r, call.base) for r in rows]}}
        )

    # ------------------------------------------------------------ writes

    def _json(self, call: Call) -> dict[str, Any]:
        try:
            body = json.loads(call.body or b"{}")
        except ValueError:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/006", "The request body is not valid JSON"
            ) from None
        if not isinstance(body, dict):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/006", "The request body must be an object")
        return body

    def _values(self, entity: EntityDef, body: Mapping[str, Any], create: bool) -> dict[str, Any]:
        values, details = {}, []
        for name, raw in body.items():
            if name == "__metadata" or name in entity.navs:
                continue
            prop = entity.prop(name)
            if prop is not None and not (prop.creatable if create else prop.updatable):
                if create and name in entity.keys and not raw:
                    continue
                details.append(
                    {
                        "code": "/IWBEP/CM_MGW_RT/022",
                        "message": f"Property {name} is read-only",
                        "target": name,
                    }
                )
                continue
            values[name] = to_python(entity, name, raw)
        if details:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022", details[0]["message"], details)
        return values

    def _stamp(self, entity: EntityDef, values: dict[str, Any], user: str, created: bool) -> None:
        now = self.clock()
        if entity.change_field:
            values[entity.change_field] = now
        if entity.prop("LastChangedByUser"):
            values["LastChangedByUser"] = user
        if created and entity.prop("CreatedByUser"):
            values["CreatedByUser"] = user
        if created and entity.prop("CreationDate"):
            values["CreationDate"] = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def insert(
        self, set_name: str, fields: Mapping[str, Any], user: str, *, notify: bool = True
    ) -> Row:
        store = self.sets[set_name]
        entity = store.entity
        values = dict(fields)
        if entity.numbered and not values.get(entity.numbered):
            width = next(p.length for p in entity.props if p.name == entity.numbered) or 10
            values[entity.numbered] = str(next(store.numbers)).zfill(min(width, 10))
        self._stamp(entity, values, user, created=True)
        key = key_of(entity, values)
        if key in store.rows:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/030", f"{entity.type_name} {key} already exists"
            )
        row = store.rows[key] = Row(values)
        if notify:
            self.on_change(entity, row, user, True)
        return row

    def _create(self, store: EntityStore, call: Call) -> Answer:
        entity = store.entity
        if not entity.creatable:
            raise ODataError(
                405, "/IWBEP/CM_MGW_RT/003", f"Creating {entity.set_name} is not allowed"
            )
        body = self._json(call)
        values = self._values(entity, body, create=True)
        if entity.set_name == "A_SalesOrder" and not values.get("SoldToParty"):
            raise ODataError(
                400,
                "V1/212",
                "Enter a sold-to party",
                [{"code": "V1/212", "message": "Enter a sold-to party", "target": "SoldToParty"}],
            )
        children: list[tuple[str, dict[str, Any]]] = []
        for nav, child_set in entity.navs.items():
            for index, item in enumerate((body.get(nav) or {}).get("results") or [], 1):
                child = self.sets[child_set].entity
                item_values = self._values(child, item, create=True)
                item_values.setdefault(child.keys[-1], str(index * 10))
                children.append((child_set, item_values))
        row = self.insert(entity.set_name, values, call.user, notify=False)
        for child_set, item_values in children:
            for key in entity.keys:
                item_values[key] = row.values[key]
            self.insert(child_set, item_values, call.user, notify=False)
        self.writes.append(("POST", entity.set_name, key_of(entity, row.values), body))
        self.on_change(entity, row, call.user, True)
        rendered = self.render(entity, row, call.base)
        return Answer(
            201,
            {"d": rendered},
            {
                "etag": etag_of(entity, row),
                "location": rendered["__metadata"]["uri"],
                "sap-message": json.dumps(
                    {
                        "code": "SBX/311",
                        "message": f"{entity.type_name} {key_of(entity, row.values)} created",
                        "severity": "success",
                        "target": "",
                        "details": [],
                    }
                ),
            },
        )

    def _precondition(self, entity: EntityDef, row: Row, call: Call) -> None:
        presented = call.headers.get("if-match")
        if presented is None:
            raise ODataError(
                428, "/IWBEP/CM_MGW_RT/019", "Precondition required: send If-Match with the ETag"
            )
        if presented != "*" and presented != etag_of(entity, row):
            raise ODataError(
                412,
                "/IWBEP/CM_MGW_RT/018",
                "The entity was changed by another user (ETag mismatch)",
            )

    def _update(self, store: EntityStore, key: str, row: Row, call: Call) -> Answer:
        entity = store.entity
        if not entity.updatable:
            raise ODataError(
                405, "/IWBEP/CM_MGW_RT/003", f"Updating {entity.set_name} is not allowed"
            )
        self._precondition(entity, row, call)
        body = self._json(call)
        values = self._values(
            entity, {k: v for k, v in body.items() if k not in entity.keys}, create=False
        )
        self.apply(store.entity.set_name, key, values, call.user)
        self.writes.append(("PATCH", entity.set_name, key, body))
        return Answer(204, None, {"etag": etag_of(entity, row)})

    def apply(self, set_name: str, key: str, values: Mapping[str, Any], user: str) -> Row:
        store = self.sets[set_name]
        row = store.rows[key]
        row.values.update(values)
        row.version += 1
        self._stamp(store.entity, row.values, user, created=False)
        self.on_change(store.entity, row, user, False)
        return row


def select_of(call: Call) -> list[str] | None:
    chosen = [s for s in call.query.get("$select", "").split(",") if s]
    return chosen or None
