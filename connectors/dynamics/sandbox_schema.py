"""SANDBOX — the tables the Dataverse sandbox knows, and their ``EntityDefinitions``.

``account`` and ``incident`` (case) with the standard columns the sample flows read
(mappings/dynamics/*.yaml) and the custom ``new_*`` columns they write, in the metadata
shapes the Web API answers: ``AttributeType``, ``DisplayName.UserLocalizedLabel``,
``IsValidForUpdate`` / ``IsValidForCreate`` / ``IsValidForRead``, ``RequiredLevel`` and,
for choice columns, ``OptionSet.Options`` with integer ``Value`` and a label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

READ_ONLY_TYPES = {"Uniqueidentifier"}
LOOKUPS = {"Lookup", "Customer", "Owner"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # AttributeType
    label: str
    updateable: bool = True
    required: bool = False
    options: tuple[tuple[int, str], ...] = ()

    @property
    def wire(self) -> str:
        """The name the column has in Web API rows (lookups: ``_<name>_value``)."""
        return f"_{self.name}_value" if self.type in LOOKUPS else self.name


@dataclass(frozen=True)
class TableDef:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str
    columns: tuple[Column, ...]
    change_tracking: bool = True
    by_wire: dict[str, Column] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_wire.update({c.wire: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self.by_wire.get(name)


def _label(text: str) -> dict[str, Any]:
    label = {"Label": text, "LanguageCode": 1033, "IsManaged": True}
    return {"LocalizedLabels": [label], "UserLocalizedLabel": label}


def _system(primary_id: str) -> list[Column]:
    return [
        Column(primary_id, "Uniqueidentifier", "Id", updateable=False),
        Column("createdon", "DateTime", "Created On", updateable=False),
        Column("modifiedon", "DateTime", "Modified On", updateable=False),
        Column("modifiedby", "Lookup", "Modified By", updateable=False),
        Column("versionnumber", "BigInt", "Version Number", updateable=False),
        Column("ownerid", "Owner", "Owner"),
        Column("statecode", "State", "Status", updateable=False),
    ]


PRIORITY = ((1, "High"), (2, "Normal"), (3, "Low"))
CASE_TYPE = ((1, "Question"), (2, "Problem"), (3, "Request"))
INDUSTRY = ((1, "Accounting"), (7, "Consulting"), (12, "Manufacturing"), (33, "Wholesale"))

TABLES: dict[str, TableDef] = {
    "account": TableDef(
        "account",
        "accounts",
        "accountid",
        "name",
        (
            *_system("accountid"),
            Column("name", "String", "Account Name", required=True),
            Column("accountnumber", "String", "Account Number"),
            Column("description", "Memo", "Description"),
            Column("revenue", "Money", "Annual Revenue"),
            Column("numberofemployees", "Integer", "Number of Employees"),
            Column("creditonhold", "Boolean", "Credit Hold"),
            Column("creditlimit", "Money", "Credit Limit"),
            Column("opendeals", "Integer", "Open Deals", updateable=False),
            Column("openrevenue", "Money", "Open Revenue", updateable=False),
            Column("industrycode", "Picklist", "Industry", options=INDUSTRY),
            Column("telephone1", "String", "Main Phone"),
            Column("emailaddress1", "String", "Email"),
            Column("new_healthscore", "Integer", "Health Score"),
            Column("new_healthdrivers", "Memo", "Health Drivers"),
            Column("new_healthsummary", "Memo", "Health Summary"),
        ),
    ),
    "incident": TableDef(
        "incident",
        "incidents",
        "incidentid",
        "title",
        (
            *_system("incidentid"),
            Column("title", "String", "Case Title", required=True),
            Column("ticketnumber", "String", "Case Number", updateable=False),
            Column("description", "Memo", "Description"),
            Column("prioritycode", "Picklist", "Priority", options=PRIORITY),
            Column("casetypecode", "Picklist", "Case Type", options=CASE_TYPE),
            Column("customerid", "Customer", "Customer", required=True),
            Column("new_aicategory", "String", "AI Category"),
            Column(
                "new_aisuggestedpriority", "Picklist", "AI Suggested Priority", options=PRIORITY
            ),
            Column("new_aitriagenote", "Memo", "AI Triage Note"),
        ),
    ),
}
BY_SET = {table.entity_set: table for table in TABLES.values()}


def attribute_json(column: Column) -> dict[str, Any]:
    return {
        "LogicalName": column.name,
        "SchemaName": column.name,
        "AttributeType": column.type,
        "AttributeTypeName": {"Value": f"{column.type}Type"},
        "DisplayName": _label(column.label),
        "IsValidForCreate": column.updateable,
        "IsValidForUpdate": column.updateable,
        "IsValidForRead": True,
        "IsCustomAttribute": column.name.startswith("new_"),
        "AttributeOf": None,
        "RequiredLevel": {
            "Value": "ApplicationRequired" if column.required else "None",
            "CanBeChanged": True,
        },
        "MetadataId": f"sandbox-{column.name}",
    }


def option_set_json(column: Column) -> dict[str, Any]:
    return {
        "Options": [
            {"Value": value, "Label": _label(label), "Color": None}
            for value, label in column.options
        ]
    }


def select_keys(item: dict[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    if not select:
        return item
    return {k: v for k, v in item.items() if k in select or k.startswith("@")}


def entity_json(table: TableDef, select: Sequence[str] | None) -> dict[str, Any]:
    entity = {
        "LogicalName": table.logical_name,
        "SchemaName": table.logical_name.capitalize(),
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "ChangeTrackingEnabled": table.change_tracking,
        "IsCustomEntity": False,
        "MetadataId": f"sandbox-{table.logical_name}",
    }
    return select_keys(entity, select)
