"""Fetch, write and describe records: the rules a write must follow before it is sent.

* **Version** = ``LastModifiedDate``. A write with ``expected_version`` sends
  ``If-Unmodified-Since`` (an HTTP date; Salesforce keeps datetimes to the second), and
  Salesforce answers 412 when the record changed since → ``WriteStatus.CONFLICT``.
* **Idempotent per job.** Updates: the outcome of each applied write is recorded under
  ``write:<idempotency key>`` in the connection's state; a retried job finds it and does
  not send the patch again. Creates: upsert on the object's External ID field
  (``config.external_id_fields``) with the idempotency key as the value, so a retried
  create updates the record the first attempt made instead of making a second one.
* **Picklists** are checked before anything is sent, and a wrong value fails the job with
  ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` (no retry), as Salesforce would:

  1. every picklist value against ``describe`` (the active values);
  2. when the patch sets a *restricted* picklist and the object has record types (an
     available one besides the master ``012000000000000AAA``), against the values of the
     record's record type too, from the User Interface API
     ``ui-api/object-info/{Object}/picklist-values/{RecordTypeId}`` (API 41.0+). The record
     type is the patch's ``RecordTypeId``, else for a create the default mapping in
     describe, for an update the record's own (one GET, or one query per batch).

  Describe and each record type's values are cached for ``DESCRIBE_TTL_SECONDS``; objects
  without record types and unrestricted picklists cost no extra call. Dependent picklists
  (``validFor`` a controlling value) are left to Salesforce.
* **Batches**: :meth:`Records.write_many` updates up to 200 records per sObject Collections
  call (``allOrNone: false``) and answers one result or error per patch, in order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

from connectors.base import (
    FieldMeta,
    Patch,
    Record,
    RecordRef,
    StateStore,
    WriteResult,
    WriteStatus,
)
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.errors import PreconditionFailed, classify
from connectors.salesforce.polling import parse_datetime
from core.errors import ConnectorError, ConnectorTerminalError

COLLECTION_LIMIT = 200
DESCRIBE_TTL_SECONDS = 600.0
MASTER_RECORD_TYPE = "012000000000000AAA"
PICKLIST_TYPES = ("picklist", "multipicklist")


def field_meta(described: Mapping[str, Any]) -> list[FieldMeta]:
    metas = []
    for field in described.get("fields", []):
        values = tuple(
            str(v["value"]) for v in field.get("picklistValues") or [] if v.get("active", True)
        )
        metas.append(
            FieldMeta(
                name=str(field["name"]),
                type=str(field.get("type", "")),
                label=str(field.get("label", "")),
                updateable=bool(field.get("updateable", False)),
                required=not field.get("nillable", True)
                and bool(field.get("createable", False))
                and not field.get("defaultedOnCreate", False),
                picklist_values=values,
            )
        )
    return metas


@dataclass(frozen=True)
class Described:
    """What a write needs from ``sobjects/{Object}/describe``."""

    fields: list[FieldMeta]
    restricted: frozenset[str]  # restricted picklist and multipicklist fields
    record_types: Mapping[str, str]  # 15-character id → name, master included
    has_record_types: bool  # an available record type besides the master
    default_record_type: str  # the default mapping (the master when there is none)


def described_object(described: Mapping[str, Any]) -> Described:
    restricted = frozenset(
        str(f["name"])
        for f in described.get("fields", [])
        if f.get("type") in PICKLIST_TYPES and f.get("restrictedPicklist")
    )
    infos = [i for i in described.get("recordTypeInfos") or [] if i.get("recordTypeId")]
    available = [i for i in infos if i.get("available", True)]
    default = next(
        (str(i["recordTypeId"]) for i in available if i.get("defaultRecordTypeMapping")),
        MASTER_RECORD_TYPE,
    )
    return Described(
        fields=field_meta(described),
        restricted=restricted,
        record_types={str(i["recordTypeId"])[:15]: str(i.get("name", "")) for i in infos},
        has_record_types=any(
            str(i["recordTypeId"])[:15] != MASTER_RECORD_TYPE[:15] for i in available
        ),
        default_record_type=default,
    )


def picklist_values(answer: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Field → values of a UI API Picklist Values Collection."""
    fields = answer.get("picklistFieldValues") or {}
    return {
        str(name): tuple(str(v["value"]) for v in (field or {}).get("values") or [])
        for name, field in fields.items()
    }


def _chosen(meta: FieldMeta, value: Any) -> list[str]:
    return str(value).split(";") if meta.type == "multipicklist" else [str(value)]


class Records:
    def __init__(
        self,
        client: SalesforceClient,
        state: StateStore | None,
        external_id_fields: Mapping[str, str],
    ) -> None:
        self._client = client
        self._state = state
        self._external = external_id_fields
        self._described: dict[str, tuple[float, Described]] = {}
        self._picklists: dict[tuple[str, str], tuple[float, dict[str, tuple[str, ...]]]] = {}

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None) -> Record:
        wanted = list(dict.fromkeys([*fields, "LastModifiedDate"])) if fields else None
        body = await self._client.get(ref.object, ref.record_id, wanted)
        values = {k: v for k, v in dict(body).items() if k != "attributes"}
        version = values.get("LastModifiedDate")
        if fields:
            values = {k: v for k, v in values.items() if k in fields}
        return Record(ref.object, str(body.get("Id", ref.record_id)), values, version)

    async def describe(self, object_name: str) -> list[FieldMeta]:
        return (await self._describe(object_name)).fields

    async def _describe(self, object_name: str) -> Described:
        cached = self._described.get(object_name)
        if cached is not None and time.monotonic() - cached[0] < DESCRIBE_TTL_SECONDS:
            return cached[1]
        described = described_object(await self._client.describe(object_name))
        self._described[object_name] = (time.monotonic(), described)
        return described

    async def _record_type_values(
        self, object_name: str, record_type_id: str
    ) -> dict[str, tuple[str, ...]]:
        key = (object_name, record_type_id[:15])
        cached = self._picklists.get(key)
        if cached is not None and time.monotonic() - cached[0] < DESCRIBE_TTL_SECONDS:
            return cached[1]
        values = picklist_values(await self._client.picklist_values(object_name, record_type_id))
        self._picklists[key] = (time.monotonic(), values)
        return values

    async def _needs_record_type(self, object_name: str, fields: Mapping[str, Any]) -> bool:
        """Whether checking the patch needs the record's record type read first."""
        described = await self._describe(object_name)
        return (
            described.has_record_types
            and not fields.get("RecordTypeId")
            and any(v is not None and n in described.restricted for n, v in fields.items())
        )

    async def check_picklists(
        self,
        object_name: str,
        fields: Mapping[str, Any],
        record_id: str | None = None,
        record_type_id: str | None = None,
    ) -> None:
        """Refuse a value the field's picklist does not take, before anything is sent.

        ``record_id`` is the record an update writes (None: a create); ``record_type_id``
        its record type when the caller read it already (see the module docstring)."""
        described = await self._describe(object_name)
        by_name = {meta.name: meta for meta in described.fields}
        restricted: dict[str, list[str]] = {}
        for name, value in fields.items():
            meta = by_name.get(name)
            if meta is None or not meta.picklist_values or value is None:
                continue
            chosen = _chosen(meta, value)
            wrong = [v for v in chosen if v not in meta.picklist_values]
            if wrong:
                raise ConnectorTerminalError(
                    f"{object_name}.{name} does not accept {', '.join(map(repr, wrong))}; "
                    f"active values: {', '.join(meta.picklist_values)}",
                    error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    fields=[name],
                )
            if name in described.restricted:
                restricted[name] = chosen
        if not restricted or not described.has_record_types:
            return
        if fields.get("RecordTypeId"):
            record_type_id = str(fields["RecordTypeId"])
        elif record_id is None:
            record_type_id = described.default_record_type
        elif record_type_id is None:
            body = await self._client.get(object_name, record_id, ["RecordTypeId"])
            record_type_id = str(body.get("RecordTypeId") or MASTER_RECORD_TYPE)
        allowed = await self._record_type_values(object_name, record_type_id)
        for name, chosen in restricted.items():
            if name not in allowed:
                continue  # not in the answer (e.g. not visible to the user): Salesforce decides
            wrong = [v for v in chosen if v not in allowed[name]]
            if wrong:
                label = described.record_types.get(record_type_id[:15], "")
                raise ConnectorTerminalError(
                    f"{object_name}.{name} does not accept {', '.join(map(repr, wrong))} on "
                    f"record type {label!r} ({record_type_id}); its values: "
                    f"{', '.join(allowed[name]) or '(none)'}",
                    error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    fields=[name],
                )

    async def _record_types(self, patches: Sequence[Patch]) -> dict[str, str]:
        """15-character record id → record type id of the updates whose check needs it:
        one SOQL query per object instead of one GET per record."""
        wanted: dict[str, list[str]] = {}
        for patch in patches:
            record_id = patch.record_id
            # Only ids go into the query; a malformed one fails on its own when sent.
            if (
                record_id
                and record_id.isalnum()
                and await self._needs_record_type(patch.object, patch.fields)
            ):
                wanted.setdefault(patch.object, []).append(record_id)
        found: dict[str, str] = {}
        for object_name, ids in wanted.items():
            where = " OR ".join(f"Id = '{i}'" for i in dict.fromkeys(ids))
            soql = f"SELECT Id, RecordTypeId FROM {object_name} WHERE {where}"  # noqa: S608
            answer = await self._client.query(soql)
            for row in answer.get("records") or []:
                found[str(row["Id"])[:15]] = str(row.get("RecordTypeId") or MASTER_RECORD_TYPE)
        return found

    async def _recorded(self, key: str) -> dict[str, Any] | None:
        return await self._state.get(f"write:{key}") if self._state is not None else None

    async def _record(self, key: str, outcome: Mapping[str, Any]) -> None:
        if self._state is not None:
            await self._state.put(f"write:{key}", outcome)

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        done = await self._recorded(idempotency_key)
        if done is not None:
            return WriteResult(
                WriteStatus.WRITTEN,
                str(done["record_id"]),
                detail="applied by an earlier attempt of this job; not sent again",
            )
        await self.check_picklists(patch.object, patch.fields, patch.record_id)
        if patch.record_id is None:
            record_id = await self._create(patch, idempotency_key)
        else:
            record_id = patch.record_id
            headers = {}
            if patch.expected_version:
                stamp = parse_datetime(patch.expected_version)
                headers["If-Unmodified-Since"] = format_datetime(stamp, usegmt=True)
            try:
                await self._client.update(patch.object, record_id, dict(patch.fields), headers)
            except PreconditionFailed:
                return WriteResult(
                    WriteStatus.CONFLICT, record_id, detail="modified since it was read"
                )
        await self._record(idempotency_key, {"record_id": record_id})
        return WriteResult(WriteStatus.WRITTEN, record_id)

    async def _create(self, patch: Patch, idempotency_key: str) -> str:
        field = self._external.get(patch.object)
        if field is None:
            raise ConnectorTerminalError(
                f"creating {patch.object} records needs an External ID field to make the "
                f"create idempotent: set config.external_id_fields.{patch.object}"
            )
        value = str(patch.fields.get(field) or idempotency_key)
        fields = {k: v for k, v in patch.fields.items() if k != field}
        answer = await self._client.upsert(patch.object, field, value, fields)
        if not answer.get("id"):
            raise ConnectorTerminalError(f"upsert of {patch.object} answered no id")
        return str(answer["id"])

    async def write_many(
        self, patches: Sequence[Patch], idempotency_key: str
    ) -> list[WriteResult | ConnectorError]:
        """Update records in sObject Collections calls of up to 200; per-patch outcomes."""
        outcomes: list[WriteResult | ConnectorError] = []
        for start in range(0, len(patches), COLLECTION_LIMIT):
            chunk = patches[start : start + COLLECTION_LIMIT]
            key = f"{idempotency_key}:{start // COLLECTION_LIMIT}"
            items: list[dict[str, Any]] = list(
                (await self._recorded(key) or {}).get("items") or [{}] * len(chunk)
            )
            # A retry sends only what did not succeed before: nothing is applied twice.
            pending = [i for i, item in enumerate(items) if not item.get("success")]
            if pending:
                sent = await self._send_chunk([chunk[i] for i in pending])
                for index, item in zip(pending, sent, strict=True):
                    items[index] = item
                await self._record(key, {"items": items})
            for patch, item in zip(chunk, items, strict=True):
                if item.get("success"):
                    outcomes.append(WriteResult(WriteStatus.WRITTEN, str(item["id"])))
                else:
                    error = classify(0, item.get("errors") or [], f"update {patch.record_id}")
                    assert isinstance(error, ConnectorError)
                    outcomes.append(error)
        return outcomes

    async def _send_chunk(self, chunk: Sequence[Patch]) -> list[dict[str, Any]]:
        if any(patch.record_id is None for patch in chunk):
            raise ConnectorTerminalError("write_many updates records; a patch has no id")
        # A record the query did not find is checked as the master type (all values); its
        # save then answers its own error.
        record_types = await self._record_types(chunk)
        records = []
        for patch in chunk:
            assert patch.record_id is not None
            await self.check_picklists(
                patch.object,
                patch.fields,
                patch.record_id,
                record_types.get(patch.record_id[:15], MASTER_RECORD_TYPE),
            )
            records.append(
                {"attributes": {"type": patch.object}, "id": patch.record_id, **patch.fields}
            )
        answer = await self._client.update_collection(records)
        if len(answer) != len(records):
            raise ConnectorTerminalError(
                f"composite/sobjects answered {len(answer)} results for {len(records)} records"
            )
        return [
            {
                "id": item.get("id"),
                "success": bool(item.get("success")),
                "errors": item.get("errors"),
            }
            for item in answer
        ]
