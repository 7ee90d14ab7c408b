"""SANDBOX — collection reads of the Dataverse sandbox: ``$select``, a small ``$filter``
(``<column> eq|ne|gt|ge|lt|le <literal>`` joined by ``and``), ``$top``, paging with
``Prefer: odata.maxpagesize`` and an opaque ``$skiptoken`` in ``@odata.nextLink``, and
change tracking (``Prefer: odata.track-changes`` → ``@odata.deltaLink``; a ``$deltatoken``
read answers changed rows and ``$deletedEntity`` entries). Pages are keyset-ordered, so a
row changing while a client pages neither repeats nor hides another row.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from connectors.dynamics.sandbox_schema import (
    TABLES,
    TableDef,
    attribute_json,
    entity_json,
    option_set_json,
)
from connectors.dynamics.sandbox_store import ODataError, Row, Store

MAX_PAGE = 5000
_CONDITION = re.compile(r"^\s*(\w+)\s+(eq|ne|gt|ge|lt|le)\s+(.+?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
UNSUPPORTED_WITH_TRACKING = ("$filter", "$orderby", "$expand", "$top")


def _literal(text: str) -> Any:
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text.lower()  # a GUID


def matcher(table: TableDef, expression: str | None) -> Callable[[Row], bool]:
    if not expression:
        return lambda row: True
    conditions = []
    for part in re.split(r"\s+and\s+", expression):
        found = _CONDITION.match(part)
        if found is None or table.column(found.group(1)) is None:
            raise ODataError(
                400, "0x80060888", f"Could not parse the $filter expression near '{part}'."
            )
        conditions.append((found.group(1), _OPS[found.group(2)], _literal(found.group(3))))

    def match(row: Row) -> bool:
        for name, op, value in conditions:
            have = row.values.get(name)
            if (have is None or value is None) and op not in (operator.eq, operator.ne):
                return False
            if not op(have, value):
                return False
        return True

    return match


def select_of(table: TableDef, query: Mapping[str, str]) -> list[str] | None:
    raw = query.get("$select")
    if not raw:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if table.column(name) is None:
            raise ODataError(
                400,
                "0x80060888",
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical_name}'.",
            )
    return names


def row_json(table: TableDef, row: Row, select: Sequence[str] | None) -> dict[str, Any]:
    names = [table.primary_id, *select] if select else list(row.values)
    item: dict[str, Any] = {"@odata.etag": row.etag}
    item |= {name: row.values.get(name) for name in names}
    return item


class Reader:
    def __init__(self, store: Store, api_root: str) -> None:
        self.store = store
        self.api_root = api_root

    def collection(
        self,
        table: TableDef,
        query: Mapping[str, str],
        prefer: Sequence[str],
        now: datetime,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        select = select_of(table, query)
        page_size = MAX_PAGE
        for item in prefer:
            if item.startswith("odata.maxpagesize="):
                page_size = max(1, min(MAX_PAGE, int(item.split("=", 1)[1])))
        track = "odata.track-changes" in prefer or "$deltatoken" in query
        applied = [p for p in prefer if p.startswith("odata.maxpagesize")]
        if track:
            for option in UNSUPPORTED_WITH_TRACKING:
                if option in query:
                    raise ODataError(
                        400,
                        "0x80040203",
                        f'The "{option}" query parameter isn\'t supported when Change '
                        "Tracking is enabled.",
                    )
            applied.insert(0, "odata.track-changes")
        skip = query.get("$skiptoken", "")
        parts = skip.split(":") if skip else []
        upto = int(parts[1]) if parts else self.store.version
        context = f"{self.api_root}/$metadata#{table.entity_set}"
        context += f"({','.join(select)})" if select else ""
        answer: dict[str, Any] = {"@odata.context": context}
        if "$deltatoken" in query:
            since = self.store.token_version(query["$deltatoken"])
            last = (int(parts[2]), parts[3]) if parts else (since, "")
            changes = [c for c in self.store.changes(table, since, upto) if (c[0], c[1]) > last]
            page, more = changes[:page_size], len(changes) > page_size
            answer["value"] = [
                row_json(table, row, select)
                if row is not None
                else {
                    "@odata.context": f"{context.split('(')[0]}/$deletedEntity",
                    "id": record_id,
                    "reason": "deleted",
                }
                for _, record_id, row in page
            ]
            cursor = f"{page[-1][0]}:{page[-1][1]}" if page else ""
        else:
            if not track and "$top" in query:
                page_size = min(page_size, int(query["$top"]))
            match = matcher(table, query.get("$filter"))
            last_id = parts[3] if parts else ""
            rows = sorted(
                (rid, row)
                for rid, row in self.store.rows.get(table.logical_name, {}).items()
                if rid > last_id and (not track or row.version <= upto) and match(row)
            )
            page_rows = rows[:page_size]
            more = len(rows) > page_size and not (not track and "$top" in query)
            answer["value"] = [row_json(table, row, select) for _, row in page_rows]
            cursor = f"0:{page_rows[-1][0]}" if page_rows else ""
        keep = {k: v for k, v in query.items() if k != "$skiptoken"}
        if more:
            link = keep | {"$skiptoken": f"sbx:{upto}:{cursor}"}
            answer["@odata.nextLink"] = f"{self.api_root}/{table.entity_set}?{urlencode(link)}"
        elif track:
            link = {k: v for k, v in keep.items() if k != "$deltatoken"}
            link["$deltatoken"] = self.store.token(now, upto)
            answer["@odata.deltaLink"] = f"{self.api_root}/{table.entity_set}?{urlencode(link)}"
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return answer, headers


def metadata_answer(
    api_root: str, logical_name: str, cast: str | None, query: Mapping[str, str]
) -> dict[str, Any]:
    """``EntityDefinitions(LogicalName='x')`` (``$expand=Attributes``), or its choice
    columns through the ``PicklistAttributeMetadata`` cast (``$expand=OptionSet``)."""
    table = TABLES.get(logical_name)
    if table is None:
        raise ODataError(404, "0x80040217", f"Could not find entity '{logical_name}'.")
    context = f"{api_root}/$metadata#EntityDefinitions"
    if cast is None:
        select = [s for s in query.get("$select", "").split(",") if s]
        entity = entity_json(table, select or None) | {"@odata.context": f"{context}/$entity"}
        if query.get("$expand", "").startswith("Attributes"):
            entity["Attributes"] = [attribute_json(c) for c in table.columns]
        return entity
    if cast != "Microsoft.Dynamics.CRM.PicklistAttributeMetadata":
        raise ODataError(400, "0x80060888", f"Type cast '{cast}' is not supported here.")
    values = []
    for column in table.columns:
        if column.type == "Picklist":
            item: dict[str, Any] = {"LogicalName": column.name, "MetadataId": f"sbx-{column.name}"}
            if "OptionSet" in query.get("$expand", ""):
                item["OptionSet"] = option_set_json(column)
            values.append(item)
    return {"@odata.context": f"{context}('{logical_name}')/Attributes/{cast}", "value": values}
