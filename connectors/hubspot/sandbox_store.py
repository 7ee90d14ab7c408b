"""SANDBOX — the in-memory CRM behind :mod:`connectors.hubspot.sandbox`: records, property
definitions, associations and the search engine, in HubSpot's JSON shapes.

Values are strings as on the wire; datetimes ISO-8601 with milliseconds and ``Z``. Every
record answers ``hs_object_id``, ``createdate`` and its modified date (``lastmodifieddate``
on contacts, ``hs_lastmodifieddate`` elsewhere) whatever was asked for.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SEARCH_CAP = 10_000
MAX_SEARCH_LIMIT = 200
MODIFIED = {"contacts": "lastmodifieddate"}


def modified_of(object_type: str) -> str:
    return MODIFIED.get(object_type, "hs_lastmodifieddate")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


def _ms(value: Any) -> float | None:
    if value is None or value == "":
        return None
    text = str(value)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def _prop(
    name: str,
    label: str,
    kind: str = "string",
    field_type: str = "text",
    *,
    options: Sequence[str] = (),
    read_only: bool = False,
    unique: bool = False,
    custom: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "description": "",
        "groupName": "switchyard" if custom else "contactinformation",
        "options": [
            {"label": v.replace("_", " ").title(), "value": v, "displayOrder": i, "hidden": False}
            for i, v in enumerate(options)
        ],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": unique,
        "hidden": False,
        "hubspotDefined": not custom,
        "formField": not read_only,
        "modificationMetadata": {
            "archivable": custom,
            "readOnlyDefinition": not custom,
            "readOnlyValue": read_only,
        },
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "archived": False,
    }


def _common(object_type: str) -> list[dict[str, Any]]:
    return [
        _prop("hs_object_id", "Record ID", "number", "number", read_only=True),
        _prop("createdate", "Create date", "datetime", "date", read_only=True),
        _prop(modified_of(object_type), "Last modified date", "datetime", "date", read_only=True),
    ]


STAGES = [
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
]
PROPERTIES: dict[str, list[dict[str, Any]]] = {
    "contacts": [
        *_common("contacts"),
        _prop("email", "Email"),
        _prop("firstname", "First name"),
        _prop("lastname", "Last name"),
        _prop("phone", "Phone", "string", "phonenumber"),
        _prop("jobtitle", "Job title"),
        _prop("company", "Company name"),
        _prop("message", "Message", "string", "textarea"),
        _prop(
            "lifecyclestage",
            "Lifecycle stage",
            "enumeration",
            "radio",
            options=[
                "subscriber",
                "lead",
                "marketingqualifiedlead",
                "salesqualifiedlead",
                "opportunity",
                "customer",
            ],
        ),
        _prop(
            "switchyard_intent",
            "Intent",
            "enumeration",
            "select",
            custom=True,
            options=["buying", "researching", "support", "not_a_fit"],
        ),
        _prop(
            "switchyard_persona",
            "Persona",
            "enumeration",
            "select",
            custom=True,
            options=["decision_maker", "influencer", "end_user", "technical_evaluator", "unknown"],
        ),
        _prop("switchyard_summary", "Summary", "string", "textarea", custom=True),
        _prop("switchyard_request_key", "Switchyard request", unique=True, custom=True),
    ],
    "companies": [
        *_common("companies"),
        _prop("name", "Name"),
        _prop("domain", "Domain"),
        _prop("industry", "Industry"),
        _prop("numberofemployees", "Employees", "number", "number"),
    ],
    "deals": [
        *_common("deals"),
        _prop("dealname", "Deal name"),
        _prop("amount", "Amount", "number", "number"),
        _prop("dealstage", "Deal stage", "enumeration", "radio", options=STAGES),
        _prop("pipeline", "Pipeline", "enumeration", "select", options=["default"]),
        _prop("closedate", "Close date", "datetime", "date"),
        _prop("description", "Description", "string", "textarea"),
        _prop("notes_last_updated", "Last activity date", "datetime", "date", read_only=True),
        _prop(
            "switchyard_risk_level",
            "Risk level",
            "enumeration",
            "select",
            custom=True,
            options=["low", "medium", "high"],
        ),
        _prop("switchyard_risk_note", "Risk note", "string", "textarea", custom=True),
        _prop(
            "switchyard_recommended_action", "Recommended action", "string", "textarea", custom=True
        ),
    ],
}
DEFAULT_PROPERTIES = {
    "contacts": ["firstname", "lastname", "email"],
    "companies": ["name", "domain"],
    "deals": ["dealname", "amount", "closedate", "pipeline", "dealstage"],
}


@dataclass
class Stored:
    id: str
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int

    def view(self, object_type: str, wanted: Sequence[str] | None) -> dict[str, Any]:
        names = list(wanted) if wanted else DEFAULT_PROPERTIES.get(object_type, [])
        known = {p["name"] for p in PROPERTIES.get(object_type, [])}
        props = {n: self.properties.get(n) for n in names if n in known}
        props |= {
            "hs_object_id": self.id,
            "createdate": iso(self.created_ms),
            modified_of(object_type): iso(self.updated_ms),
        }
        return {
            "id": self.id,
            "properties": props,
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.updated_ms),
            "archived": False,
        }


class InvalidInput(Exception):
    """A request HubSpot answers 400 VALIDATION_ERROR."""


@dataclass
class Store:
    records: dict[str, dict[str, Stored]] = field(default_factory=dict)
    # (from type, from id, to type) → [(to id, association type id, label)]
    links: dict[tuple[str, str, str], list[tuple[str, int, str | None]]] = field(
        default_factory=dict
    )
    search_cap: int = SEARCH_CAP
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    def invalid_properties(self, object_type: str, values: Mapping[str, Any]) -> list[str]:
        definitions = {p["name"]: p for p in PROPERTIES.get(object_type, [])}
        problems = []
        for name, value in values.items():
            prop = definitions.get(name)
            if prop is None:
                problems.append(f'Property "{name}" does not exist')
            elif prop["modificationMetadata"]["readOnlyValue"]:
                problems.append(f'"{name}" is a read only property; its value cannot be set.')
            elif prop["type"] == "enumeration" and value not in (None, ""):
                allowed = [o["value"] for o in prop["options"]]
                for chosen in str(value).split(";"):
                    if chosen not in allowed:
                        problems.append(f"{chosen} was not one of the allowed options: {allowed}")
            elif prop["type"] == "number" and value not in (None, "") and _ms(value) is None:
                problems.append(f"{value} is not a valid number for {name}")
        return problems

    def check_properties(self, object_type: str, values: Mapping[str, Any]) -> None:
        """Raise HubSpot's VALIDATION_ERROR when a value does not fit its property."""
        problems = self.invalid_properties(object_type, values)
        if problems:
            raise InvalidInput(f"Property values were not valid: {json.dumps(problems)}")

    def create(self, object_type: str, values: Mapping[str, Any], now_ms: int) -> Stored:
        record_id = str(next(self._ids))
        stored = Stored(record_id, {k: _text(v) for k, v in values.items()}, now_ms, now_ms)
        self.records.setdefault(object_type, {})[record_id] = stored
        return stored

    def get(self, object_type: str, record_id: str) -> Stored | None:
        return self.records.get(object_type, {}).get(record_id)

    def update(
        self, object_type: str, record_id: str, values: Mapping[str, Any], now_ms: int
    ) -> tuple[Stored, dict[str, str | None]]:
        stored = self.records[object_type][record_id]
        changed = {k: _text(v) for k, v in values.items() if stored.properties.get(k) != _text(v)}
        stored.properties.update({k: _text(v) for k, v in values.items()})
        stored.updated_ms = max(now_ms, stored.updated_ms)
        return stored, changed

    def find_unique(self, object_type: str, name: str, value: str) -> Stored | None:
        for stored in self.records.get(object_type, {}).values():
            if stored.properties.get(name) == value:
                return stored
        return None

    def associate(
        self,
        from_type: str,
        from_id: str,
        to_type: str,
        to_id: str,
        type_id: int,
        label: str | None,
    ) -> None:
        self.links.setdefault((from_type, from_id, to_type), []).append((to_id, type_id, label))

    def value_of(self, object_type: str, stored: Stored, name: str) -> Any:
        if name == "hs_object_id":
            return int(stored.id)
        if name == "createdate":
            return stored.created_ms
        if name == modified_of(object_type):
            return stored.updated_ms
        return stored.properties.get(name)

    # ------------------------------------------------------------------ search

    def search(self, object_type: str, body: Mapping[str, Any]) -> dict[str, Any]:
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or sum(len(g.get("filters") or []) for g in groups) > 25:
            raise InvalidInput("at most 5 filterGroups and 25 filters in total are allowed")
        if any(len(g.get("filters") or []) > 10 for g in groups):
            raise InvalidInput("at most 10 filters per filterGroup are allowed")
        limit = int(body.get("limit") or 10)
        if not 0 < limit <= MAX_SEARCH_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
        offset = int(body.get("after") or 0)
        if offset >= self.search_cap:
            raise InvalidInput(
                f"Search results are limited to {self.search_cap}; after={offset} is past them"
            )
        rows = [
            stored
            for stored in self.records.get(object_type, {}).values()
            if not groups or any(self._group(object_type, stored, g) for g in groups)
        ]
        rows.sort(key=lambda s: int(s.id))  # ties keep id order
        for sort in reversed(body.get("sorts") or []):
            name = sort.get("propertyName") if isinstance(sort, Mapping) else str(sort)
            descending = isinstance(sort, Mapping) and sort.get("direction") == "DESCENDING"

            def by(stored: Stored, name: Any = name) -> tuple[int, Any]:
                return _key(self.value_of(object_type, stored, str(name)))

            rows.sort(key=by, reverse=descending)
        page = rows[offset : offset + limit]
        answer: dict[str, Any] = {
            "total": len(rows),
            "results": [s.view(object_type, body.get("properties")) for s in page],
        }
        if offset + limit < len(rows):
            answer["paging"] = {"next": {"after": str(offset + limit)}}
        return answer

    def _group(self, object_type: str, stored: Stored, group: Mapping[str, Any]) -> bool:
        return all(self._filter(object_type, stored, f) for f in group.get("filters") or [])

    def _filter(self, object_type: str, stored: Stored, spec: Mapping[str, Any]) -> bool:
        operator = str(spec.get("operator", "EQ"))
        have = self.value_of(object_type, stored, str(spec.get("propertyName")))
        if operator == "HAS_PROPERTY":
            return have not in (None, "")
        if operator == "NOT_HAS_PROPERTY":
            return have in (None, "")
        if operator in ("IN", "NOT_IN"):
            inside = str(have).lower() in {str(v).lower() for v in spec.get("values") or []}
            return inside if operator == "IN" else not inside
        if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = str(spec.get("value", "")).strip("*").lower()
            found = token in str(have or "").lower()
            return found if operator == "CONTAINS_TOKEN" else not found
        if have is None:
            return operator == "NEQ"
        left, right = _key(have), _key(spec.get("value"))
        if operator == "BETWEEN":
            return bool(right <= left <= _key(spec.get("highValue")))
        if type(left[1]) is not type(right[1]):
            return operator == "NEQ"
        compare: dict[str, bool] = {
            "EQ": left == right,
            "NEQ": left != right,
            "LT": left < right,
            "LTE": left <= right,
            "GT": left > right,
            "GTE": left >= right,
        }
        if operator not in compare:
            raise InvalidInput(f"unknown operator {operator}")
        return compare[operator]


def _key(value: Any) -> tuple[int, Any]:
    number = _ms(value)
    return (0, number) if number is not None else (1, str(value or "").lower())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
