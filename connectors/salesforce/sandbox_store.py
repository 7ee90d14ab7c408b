"""SANDBOX: the Salesforce sandbox's records, with the checks Salesforce makes on a save.

Thread-safe (the sandbox server runs in its own thread). Datetimes are kept to the second,
as Salesforce keeps them (``2024-05-01T10:00:00.000+0000``), so records saved in the same
second share a ``SystemModstamp``. A save that breaks a rule raises :class:`SfError` with
the error code and message Salesforce uses.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.salesforce import sandbox_soql as soql

_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SYSTEM_READ_ONLY = {
    "Id",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "IsDeleted",
}


@dataclass
class SfError(Exception):
    status: int
    code: str
    message: str
    fields: list[str] = field(default_factory=list)


def to_18(id15: str) -> str:
    """The case-safe 18-character form of a 15-character Salesforce id."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        suffix += _ID_SUFFIX[bits]
    return id15 + suffix


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass(frozen=True)
class ValidationRule:
    object: str
    message: str
    field: str | None
    broken: Callable[[Mapping[str, Any]], bool]


class OrgStore:
    def __init__(
        self,
        describe: Mapping[str, Mapping[str, Any]],
        *,
        org_id: str,
        clock: Callable[[], datetime] | None = None,
        record_type_values: Mapping[str, Mapping[str, Mapping[str, list[str]]]] | None = None,
    ) -> None:
        self.describe = describe
        # object → record type id → restricted picklist → the values that type takes
        self.record_type_values = record_type_values or {}
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in describe}
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rules: list[ValidationRule] = []
        self.listeners: list[Callable[[str, str], None]] = []
        self._held: tuple[int, list[tuple[str, str]]] | None = None  # (thread, changes)
        self._serial = itertools.count(1)
        self._pod = org_id[3:5]

    def new_id(self, prefix: str) -> str:
        number, digits = next(self._serial), ""
        for _ in range(8):
            number, rest = divmod(number, 62)
            digits = _BASE62[rest] + digits
        return to_18(f"{prefix}{self._pod}{'0' * 2}{digits}")

    def _meta(self, object_name: str) -> dict[str, Mapping[str, Any]]:
        described = self.describe.get(object_name)
        if described is None:
            raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
        return {f["name"]: f for f in described["fields"]}

    def _check(self, object_name: str, values: Mapping[str, Any], creating: bool) -> None:
        meta = self._meta(object_name)
        for name, value in values.items():
            info = meta.get(name)
            if info is None:
                raise SfError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {object_name}",
                    [name],
                )
            if not info["updateable"] and not (creating and info["createable"]):
                raise SfError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile "
                    "or permission set.",
                    [name],
                )
            allowed = [v["value"] for v in info["picklistValues"] if v["active"]]
            if info["restrictedPicklist"] and value is not None and value not in allowed:
                raise SfError(
                    400,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{info['label']}: bad value for restricted picklist field: {value}",
                    [name],
                )

    def picklist_values(
        self, object_name: str, record_type_id: str
    ) -> dict[str, list[Mapping[str, Any]]] | None:
        """Picklist field → the values (describe's entries) records of the record type
        take; None when the object has no such record type."""
        described = self.describe.get(object_name)
        info = self._record_type(object_name, record_type_id)
        if described is None or info is None:
            return None
        subsets = self.record_type_values.get(object_name, {}).get(info["recordTypeId"], {})
        return {
            f["name"]: [
                v
                for v in f["picklistValues"]
                if v["active"] and (f["name"] not in subsets or v["value"] in subsets[f["name"]])
            ]
            for f in described["fields"]
            if f["type"] in ("picklist", "multipicklist")
        }

    def _record_type(self, object_name: str, record_type_id: str) -> Mapping[str, Any] | None:
        if len(record_type_id) not in (15, 18):
            return None
        infos = self.describe.get(object_name, {}).get("recordTypeInfos") or []
        return next((i for i in infos if i["recordTypeId"][:15] == record_type_id[:15]), None)

    def _check_record_type(
        self, object_name: str, record: dict[str, Any], values: Mapping[str, Any]
    ) -> None:
        """Assign the default record type on a create, refuse one the user cannot use, and
        refuse a restricted picklist value the record's type does not take."""
        infos = self.describe[object_name].get("recordTypeInfos") or []
        if not any(i["available"] and not i["master"] for i in infos):
            return
        if record.get("RecordTypeId") is None:
            record["RecordTypeId"] = next(
                i["recordTypeId"] for i in infos if i["defaultRecordTypeMapping"]
            )
        info = self._record_type(object_name, str(record["RecordTypeId"]))
        if info is None or not info["available"]:
            raise SfError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                f"Record Type ID: this ID value isn't valid for the user: {record['RecordTypeId']}",
                ["RecordTypeId"],
            )
        record["RecordTypeId"] = info["recordTypeId"]
        allowed = self.picklist_values(object_name, info["recordTypeId"]) or {}
        meta = self._meta(object_name)
        for name, value in values.items():
            if value is None or not meta[name]["restrictedPicklist"] or name not in allowed:
                continue
            if value not in [v["value"] for v in allowed[name]]:
                raise SfError(
                    400,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{meta[name]['label']}: bad value for restricted picklist field: {value}",
                    [name],
                )

    def _validate(self, object_name: str, record: Mapping[str, Any]) -> None:
        missing = [
            f["name"]
            for f in self.describe[object_name]["fields"]
            if not f["nillable"] and f["createable"] and record.get(f["name"]) in (None, "")
        ]
        if missing:
            raise SfError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", missing
            )
        for rule in self.rules:
            if rule.object == object_name and rule.broken(record):
                fields = [rule.field] if rule.field else []
                raise SfError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, fields)

    def _changed(self, object_name: str, record_id: str) -> None:
        held = self._held
        if held is not None and held[0] == threading.get_ident():
            held[1].append((object_name, record_id))
            return
        for listener in self.listeners:
            listener(object_name, record_id)

    @contextmanager
    def transaction(self) -> Iterator[Callable[[], None]]:
        """Several saves as one transaction (sObject Collections with ``allOrNone``): the
        listeners hear of the saves when it ends; calling the yielded ``rollback`` restores
        the records and drops those notices, as a rolled-back save sends no message."""
        changes: list[tuple[str, str]] = []
        with self.lock:
            before = {o: {i: dict(r) for i, r in rs.items()} for o, rs in self.records.items()}

            def rollback() -> None:
                self.records = before
                changes.clear()

            self._held = (threading.get_ident(), changes)
            try:
                yield rollback
            finally:
                self._held = None
        for object_name, record_id in changes:
            self._changed(object_name, record_id)

    def insert(self, object_name: str, values: Mapping[str, Any], user_id: str) -> str:
        with self.lock:
            self._check(object_name, values, creating=True)
            prefix = self.describe[object_name]["keyPrefix"]
            record_id, now = self.new_id(prefix), stamp(self.clock())
            record: dict[str, Any] = {f["name"]: None for f in self.describe[object_name]["fields"]}
            record.update(values)
            record.update(
                Id=record_id,
                CreatedDate=now,
                CreatedById=user_id,
                LastModifiedDate=now,
                LastModifiedById=user_id,
                SystemModstamp=now,
                IsDeleted=False,
            )
            if object_name == "Case":
                record["CaseNumber"] = f"{len(self.records['Case']) + 1:08d}"
            self._check_record_type(object_name, record, values)
            self._validate(object_name, record)
            self.records[object_name][record_id] = record
        self._changed(object_name, record_id)
        return record_id

    def get(self, object_name: str, record_id: str) -> dict[str, Any]:
        with self.lock:
            self._meta(object_name)
            if not soql_id(record_id):
                raise SfError(
                    400,
                    "MALFORMED_ID",
                    f"{object_name} ID: id value of incorrect type: {record_id}",
                    ["Id"],
                )
            record = self.records[object_name].get(record_id) or self.records[object_name].get(
                to_18(record_id[:15])
            )
            if record is None:
                raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
            return dict(record)

    def update(
        self,
        object_name: str,
        record_id: str,
        values: Mapping[str, Any],
        user_id: str,
        unmodified_since: datetime | None = None,
    ) -> None:
        with self.lock:
            current = self.get(object_name, record_id)
            if unmodified_since is not None:
                modified = soql.as_datetime(current["LastModifiedDate"])
                if modified > unmodified_since:
                    raise SfError(
                        412,
                        "PRECONDITION_FAILED",
                        "The requested resource has "
                        "been modified since the If-Unmodified-Since date.",
                    )
            self._check(object_name, values, creating=False)
            now = stamp(self.clock())
            merged = {**current, **values}
            merged.update(LastModifiedDate=now, LastModifiedById=user_id, SystemModstamp=now)
            self._check_record_type(object_name, merged, values)
            self._validate(object_name, merged)
            self.records[object_name][current["Id"]] = merged
        self._changed(object_name, current["Id"])

    def find(self, object_name: str, field_name: str, value: str) -> list[str]:
        with self.lock:
            return [
                record_id
                for record_id, record in self.records[object_name].items()
                if record.get(field_name) is not None and str(record[field_name]) == value
            ]

    def query(self, text: str) -> tuple[soql.Query, list[dict[str, Any]]]:
        try:
            parsed = soql.parse(text)
        except soql.SoqlError as exc:
            raise SfError(400, "MALFORMED_QUERY", str(exc)) from None
        meta = self._meta(parsed.object)
        unknown = [f for f in parsed.fields if f not in meta]
        if unknown:
            raise SfError(
                400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{parsed.object}'."
            )
        with self.lock:
            rows = [r for r in self.records[parsed.object].values() if parsed.where(r)]
        for name, descending in reversed(parsed.order):
            rows.sort(key=lambda r, n=name: soql.sort_key(r, n), reverse=descending)  # type: ignore[misc]
        if parsed.limit is not None:
            rows = rows[: parsed.limit]
        return parsed, [{f: row.get(f) for f in parsed.fields} for row in rows]


def soql_id(value: str) -> bool:
    return len(value) in (15, 18) and value.isalnum()
