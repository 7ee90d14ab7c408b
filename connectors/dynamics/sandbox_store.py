"""SANDBOX — the rows behind the Dataverse sandbox: values, row versions, tombstones for
change tracking, delta tokens, and validation of written values as the platform does it.

Every change takes the next value of one organisation-wide version counter (like SQL
rowversion), which is the row's ``versionnumber`` and its ETag ``W/"<version>"``. A delta
token is ``<version>!<UTC time>``: the changes after that version are the rows whose
version is higher plus the tombstones of rows deleted after it. Tokens below
``token_floor`` are expired (:meth:`Store.expire_tokens`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.dynamics.sandbox_schema import TableDef


class ODataError(Exception):
    """An answer ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Row:
    values: dict[str, Any]
    version: int

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass
class Store:
    tables: Mapping[str, TableDef]
    rows: dict[str, dict[str, Row]] = field(default_factory=dict)
    tombstones: dict[str, dict[str, int]] = field(default_factory=dict)
    version: int = 1_200_000
    token_floor: int = 0
    tickets: int = 1000

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def get(self, table: str, record_id: str) -> Row | None:
        return self.rows.get(table, {}).get(record_id.lower())

    def check(
        self, table: TableDef, values: Mapping[str, Any], *, creating: bool, system: bool = False
    ) -> None:
        entity = f"Microsoft.Dynamics.CRM.{table.logical_name}"
        for name, value in values.items():
            column = table.column(name)
            if column is None:
                raise ODataError(
                    400,
                    "0x80060888",
                    f"Invalid property '{name}' was found in entity '{entity}'.",
                )
            if not (column.updateable or system or (creating and name == table.primary_id)):
                raise ODataError(
                    400, "0x80040203", f"The attribute '{name}' is not valid for update."
                )
            if value is None:
                continue
            if column.options and value not in [v for v, _ in column.options]:
                accepted = ",".join(str(v) for v, _ in column.options)
                raise ODataError(
                    400,
                    "0x8004431a",
                    f"A validation error occurred. The value {value} of '{name}' on record of "
                    f"type '{table.logical_name}' is outside the valid range. Accepted "
                    f"Values: {accepted}",
                )
            numeric = column.type in ("Integer", "BigInt", "Money", "Decimal", "Double")
            if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ODataError(
                    400,
                    "0x80048d19",
                    f"Error identified in Payload provided by the user for Entity :'"
                    f"{table.entity_set}', Cannot convert the literal '{value}' to the "
                    f"expected type 'Edm.{'Int32' if column.type == 'Integer' else 'Decimal'}'.",
                )
            if column.type == "Boolean" and not isinstance(value, bool):
                raise ODataError(
                    400, "0x80048d19", f"Cannot convert the literal '{value}' to 'Edm.Boolean'."
                )

    def write(
        self,
        table: TableDef,
        record_id: str | None,
        values: Mapping[str, Any],
        *,
        user: str,
        now: datetime,
        system: bool = False,
    ) -> tuple[str, Row, bool, dict[str, Any]]:
        """Create or update a row; (id, row, created, the values that changed)."""
        record_id = (record_id or str(values.get(table.primary_id) or uuid.uuid4())).lower()
        rows = self.rows.setdefault(table.logical_name, {})
        existing = rows.get(record_id)
        created = existing is None
        self.check(table, values, creating=created, system=system)
        stamp = iso(now)
        if existing is None:
            base: dict[str, Any] = {c.wire: None for c in table.columns}
            base |= {
                table.primary_id: record_id,
                "createdon": stamp,
                "statecode": 0,
                "_ownerid_value": user,
            }
            if table.logical_name == "incident":
                self.tickets += 1
                base["ticketnumber"] = f"CAS-{self.tickets:05d}-SBX"
            existing = Row(base, 0)
            rows[record_id] = existing
            self.tombstones.get(table.logical_name, {}).pop(record_id, None)
        changed = {k: v for k, v in values.items() if created or existing.values.get(k) != v}
        existing.values.update(values)
        existing.values[table.primary_id] = record_id
        existing.version = self.next_version()
        existing.values |= {
            "modifiedon": stamp,
            "_modifiedby_value": user,
            "versionnumber": existing.version,
        }
        return record_id, existing, created, changed

    def delete(self, table: TableDef, record_id: str) -> None:
        rows = self.rows.get(table.logical_name, {})
        if rows.pop(record_id.lower(), None) is None:
            raise not_found(table, record_id)
        self.tombstones.setdefault(table.logical_name, {})[record_id.lower()] = self.next_version()

    # ------------------------------------------------------------ change tracking

    def token(self, now: datetime, version: int | None = None) -> str:
        at = self.version if version is None else version
        return f"{at}!{now.astimezone(UTC):%m/%d/%Y %H:%M:%S}"

    def token_version(self, token: str) -> int:
        head = token.partition("!")[0]
        if not head.isdigit():
            raise ODataError(400, "0x80040203", "The delta token is not valid.")
        version = int(head)
        if version < self.token_floor:
            raise ODataError(
                400,
                "0x80044352",
                "Version stamp associated with the client has expired. Please perform a full sync.",
            )
        return version

    def expire_tokens(self) -> None:
        """Every delta token handed out so far is now too old to use."""
        self.token_floor = self.version + 1

    def changes(self, table: TableDef, since: int, upto: int) -> list[tuple[int, str, Row | None]]:
        """(version, id, row or None when deleted) of the changes in (since, upto]."""
        found: list[tuple[int, str, Row | None]] = [
            (row.version, record_id, row)
            for record_id, row in self.rows.get(table.logical_name, {}).items()
            if since < row.version <= upto
        ]
        found += [
            (version, record_id, None)
            for record_id, version in self.tombstones.get(table.logical_name, {}).items()
            if since < version <= upto
        ]
        return sorted(found, key=lambda item: (item[0], item[1]))


def not_found(table: TableDef, record_id: str) -> ODataError:
    return ODataError(
        404, "0x80040217", f"{table.logical_name} With Id = {record_id} Does Not Exist"
    )
