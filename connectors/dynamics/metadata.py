"""Table metadata from ``EntityDefinitions`` as FieldMeta, and the check a patch passes
before it is sent.

Two requests per table: the definition with its attributes
(``EntityDefinitions(LogicalName='account')?$select=…&$expand=Attributes($select=…)``), and
the choice columns' options through the type cast
``…/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet``.
A choice's allowed values are its option ``Value`` integers, as text (``"1"``), since
that is what the Web API reads and writes. Helper attributes (``AttributeOf`` set, e.g. a
lookup's name) and ``Virtual`` ones are left out; ``IsValidForUpdate`` is ``updateable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import FieldMeta, Patch
from core.errors import ConnectorTerminalError

ENTITY_SELECT = "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"
ATTRIBUTE_SELECT = (
    "LogicalName,AttributeType,DisplayName,IsValidForUpdate,IsValidForCreate,"
    "IsValidForRead,RequiredLevel,AttributeOf"
)
PICKLIST_CAST = "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
LOOKUP_TYPES = {"lookup", "customer", "owner"}
REQUIRED = {"ApplicationRequired", "SystemRequired"}
NUMBER_TYPES = {"integer", "bigint", "decimal", "double", "money"}


@dataclass(frozen=True)
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    fields: tuple[FieldMeta, ...]

    def select(self) -> list[str]:
        """``$select`` names of every readable column (lookups as ``_<name>_value``)."""
        return [
            f"_{meta.name}_value" if meta.type in LOOKUP_TYPES else meta.name
            for meta in self.fields
        ]


def _label(value: Any) -> str:
    if isinstance(value, Mapping):
        localized = value.get("UserLocalizedLabel")
        if isinstance(localized, Mapping) and localized.get("Label"):
            return str(localized["Label"])
    return ""


def table_from(definition: Mapping[str, Any], picklists: Sequence[Mapping[str, Any]]) -> Table:
    options: dict[str, tuple[str, ...]] = {}
    for attribute in picklists:
        option_set = attribute.get("OptionSet") or {}
        values = [str(o.get("Value")) for o in option_set.get("Options") or []]
        options[str(attribute.get("LogicalName"))] = tuple(values)
    fields = []
    for attribute in definition.get("Attributes") or []:
        kind = str(attribute.get("AttributeType") or "String")
        if (
            attribute.get("AttributeOf")
            or kind == "Virtual"
            or not attribute.get("IsValidForRead", True)
        ):
            continue
        name = str(attribute["LogicalName"])
        level = (attribute.get("RequiredLevel") or {}).get("Value")
        fields.append(
            FieldMeta(
                name=name,
                type=kind.lower(),
                label=_label(attribute.get("DisplayName")),
                updateable=bool(attribute.get("IsValidForUpdate")),
                required=level in REQUIRED,
                picklist_values=options.get(name, ()),
            )
        )
    return Table(
        logical_name=str(definition["LogicalName"]),
        entity_set=str(definition["EntitySetName"]),
        primary_id=str(definition["PrimaryIdAttribute"]),
        fields=tuple(fields),
    )


def validate_patch(patch: Patch, table: Table) -> None:
    by_name = {meta.name: meta for meta in table.fields}
    problems = []
    for name, value in patch.fields.items():
        meta = by_name.get(name)
        if meta is None:
            problems.append(f"{name}: no such column on {table.logical_name}")
        elif not meta.updateable:
            problems.append(f"{name}: not valid for update")
        elif meta.picklist_values and value is not None:
            if isinstance(value, bool) or str(value) not in meta.picklist_values:
                allowed = ", ".join(meta.picklist_values)
                problems.append(f"{name}: {value!r} is not an option value ({allowed})")
        elif (
            meta.type in NUMBER_TYPES
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int | float))
        ):
            problems.append(f"{name}: {type(value).__name__} given for a {meta.type} column")
    if problems:
        raise ConnectorTerminalError(
            f"the patch for {patch.object} {patch.record_id} does not fit Dataverse's "
            f"columns: {'; '.join(problems)}"
        )
