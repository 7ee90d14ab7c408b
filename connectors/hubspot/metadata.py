"""Property metadata (``GET /crm/v3/properties/{objectType}``) as FieldMeta, and the check
a patch passes before it is sent: every property exists, is writable, and an enumeration
gets one of its option values (a multi-select, ``;``-separated values that all are).

HubSpot property ``type``: string, number, date, datetime, enumeration, bool, phone_number;
``fieldType`` the UI control (select, radio, checkbox, booleancheckbox, textarea, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import FieldMeta, Patch
from core.errors import ConnectorTerminalError


def field_meta(prop: Mapping[str, Any]) -> FieldMeta:
    modification = prop.get("modification_metadata") or {}
    read_only = bool(modification.get("read_only_value")) or bool(prop.get("calculated"))
    options = prop.get("options") or []
    return FieldMeta(
        name=str(prop["name"]),
        type=str(prop.get("type") or "string"),
        label=str(prop.get("label") or ""),
        updateable=not read_only,
        picklist_values=tuple(
            str(o["value"]) for o in options if isinstance(o, Mapping) and not o.get("hidden")
        )
        if prop.get("type") == "enumeration"
        else (),
    )


def validate_patch(patch: Patch, described: Sequence[FieldMeta]) -> None:
    if not described:
        return
    by_name = {meta.name: meta for meta in described}
    problems = []
    for name, value in patch.fields.items():
        meta = by_name.get(name)
        if meta is None:
            problems.append(f"{name}: no such property on {patch.object}")
        elif not meta.updateable:
            problems.append(f"{name}: read-only in HubSpot")
        elif meta.type == "enumeration" and value not in (None, ""):
            chosen = str(value).split(";")
            bad = [v for v in chosen if v not in meta.picklist_values]
            if bad:
                allowed = ", ".join(meta.picklist_values[:20])
                problems.append(f"{name}: {', '.join(bad)} is not an option ({allowed})")
    if problems:
        raise ConnectorTerminalError(
            f"the patch for {patch.object} {patch.record_id} does not fit HubSpot's "
            f"properties: {'; '.join(problems)}"
        )
