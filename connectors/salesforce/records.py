"""Fetch, write and describe records: the rules a write must follow before it is sent.

* **Version** = ``LastModifiedDate``. A write with ``expected_version`` sends
  ``If-Unmodified-Since`` (an HTTP date; Salesforce keeps datetimes to the second), and
  Salesforce answers 412 when the record changed since → ``WriteStatus.CONFLICT``.
* **Idempotent per job.** Updates: the outcome of each applied write is recorded under
  ``write:<idempotency key>`` in the connection's state; a retried job finds it and does
  not send the patch again. Creates: upsert on the object's External ID field
  (``config.external_id_fields``) with the idempotency key as the value, so a retried
  create updates the record the first attempt made instead of making a second one.
* **Picklists** are checked against ``describe`` (active values) before anything is sent.
  Record-type-specific subsets of a restricted picklist are not in describe; Salesforce
  refuses those with ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` (no retry).
* **Batches**: :meth:`Records.write_many` updates up to 200 records per sObject Collections
  call (``allOrNone: false``) and answers one result or error per patch, in order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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
        self._described: dict[str, tuple[float, list[FieldMeta]]] = {}

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None) -> Record:
        wanted = list(dict.fromkeys([*fields, "LastModifiedDate"])) if fields else None
        body = await self._client.get(ref.object, ref.record_id, wanted)
        values = {k: v for k, v in dict(body).items() if k != "attributes"}
        version = values.get("LastModifiedDate")
        if fields:
            values = {k: v for k, v in values.items() if k in fields}
        return Record(ref.object, str(body.get("Id", ref.record_id)), values, version)

    async def describe(self, object_name: str) -> list[FieldMeta]:
        cached = self._described.get(object_name)
        if cached is not None and time.monotonic() - cached[0] < DESCRIBE_TTL_SECONDS:
            return cached[1]
        metas = field_meta(await self._client.describe(object_name))
        self._described[object_name] = (time.monotonic(), metas)
        return metas

    async def check_picklists(self, object_name: str, fields: Mapping[str, Any]) -> None:
        by_name = {meta.name: meta for meta in await self.describe(object_name)}
        for name, value in fields.items():
            meta = by_name.get(name)
            if meta is None or not meta.picklist_values or value is None:
                continue
            chosen = str(value).split(";") if meta.type == "multipicklist" else [str(value)]
            wrong = [v for v in chosen if v not in meta.picklist_values]
            if wrong:
                raise ConnectorTerminalError(
                    f"{object_name}.{name} does not accept {', '.join(map(repr, wrong))}; "
                    f"active values: {', '.join(meta.picklist_values)}",
                    error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    fields=[name],
                )

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
        await self.check_picklists(patch.object, patch.fields)
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
        records = []
        for patch in chunk:
            if patch.record_id is None:
                raise ConnectorTerminalError("write_many updates records; a patch has no id")
            await self.check_picklists(patch.object, patch.fields)
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
