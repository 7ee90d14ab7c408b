"""Reading and writing rows: fetch, conditional updates, idempotent creates, ``$batch``.

* **Update** — ``PATCH <set>(<id>)`` with ``If-Match: <the version read>`` (or ``*``: update
  only, so a vanished row is a 404 and never silently re-created by PATCH's upsert). A
  412 is not overwritten: the row is read again and, if it already holds every patched
  value (a retried job whose first write went through), the write counts as done;
  otherwise it is a CONFLICT.
* **Create** — Dataverse takes no idempotency key, so the new row's id is derived from it:
  ``uuid5(connection, table, key)``, written with ``PATCH <set>(<that id>)`` and
  ``If-None-Match: *`` (create only). A retried job sends the same id, gets 412 "already
  exists", and answers the row the first attempt made: never a second record.
* **Batch** — one atomic changeset per ``config.batch_size`` updates. When an operation
  fails the platform rolls the changeset back and answers only that failure: that row gets
  its result (CONFLICT for a 412) and the others are sent again in a new changeset.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import Patch, Record, WriteResult, WriteStatus
from connectors.dynamics import batch
from connectors.dynamics.client import WebApi
from connectors.dynamics.errors import DynamicsPreconditionFailed, error_body
from connectors.dynamics.metadata import Table, validate_patch

NAMESPACE = uuid.UUID("5b0f2f53-8c51-4f7e-9a0e-3c1d8f6a7b21")  # Switchyard's creates


def create_id(connection_id: str, table: str, idempotency_key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{connection_id}\x00{table}\x00{idempotency_key}"))


def plain_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's columns without OData annotations (``@odata.etag``, ``x@…FormattedValue``)."""
    return {k: v for k, v in row.items() if "@" not in k}


def etag(row: Mapping[str, Any]) -> str | None:
    value = row.get("@odata.etag")
    return str(value) if value else None


def _applied(row: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    return all(name in row and row[name] == value for name, value in fields.items())


class Rows:
    def __init__(self, api: WebApi, connection_id: str, batch_size: int) -> None:
        self._api = api
        self._connection_id = connection_id
        self._batch_size = batch_size

    async def fetch(self, table: Table, record_id: str, fields: Sequence[str] | None) -> Record:
        row = await self._api.read(table.entity_set, record_id, list(fields or table.select()))
        return Record(table.logical_name, record_id.lower(), plain_fields(row), etag(row))

    async def update(self, table: Table, patch: Patch) -> WriteResult:
        validate_patch(patch, table)
        assert patch.record_id is not None
        record_id = patch.record_id
        try:
            row = await self._api.update(
                table.entity_set, record_id, patch.fields, if_match=patch.expected_version or "*"
            )
        except DynamicsPreconditionFailed as exc:
            current = await self._api.read(table.entity_set, record_id, list(patch.fields))
            if _applied(current, patch.fields):
                return WriteResult(
                    WriteStatus.WRITTEN, record_id, etag(current), detail="already applied"
                )
            return WriteResult(WriteStatus.CONFLICT, record_id, etag(current), detail=exc.detail)
        return WriteResult(WriteStatus.WRITTEN, record_id, etag(row))

    async def create(self, table: Table, patch: Patch, idempotency_key: str) -> WriteResult:
        validate_patch(patch, table)
        record_id = create_id(self._connection_id, table.logical_name, idempotency_key)
        try:
            row = await self._api.update(
                table.entity_set, record_id, patch.fields, if_none_match="*"
            )
        except DynamicsPreconditionFailed:
            # Made by an earlier attempt of the same job: answer that row.
            row = await self._api.read(table.entity_set, record_id, [table.primary_id])
            return WriteResult(WriteStatus.WRITTEN, record_id, etag(row), detail="already created")
        return WriteResult(WriteStatus.WRITTEN, record_id, etag(row))

    async def update_many(
        self, table: Table, patches: Sequence[Patch]
    ) -> tuple[list[WriteResult], dict[str, str]]:
        """Per row: a WriteResult (written or conflict), or an error message."""
        for patch in patches:
            validate_patch(patch, table)
        results: list[WriteResult] = []
        failed: dict[str, str] = {}
        pending = list(patches)
        while pending:
            chunk, pending = pending[: self._batch_size], pending[self._batch_size :]
            done, rest = await self._changeset(table, chunk, results, failed)
            pending = rest + pending if not done else pending
        return results, failed

    async def _changeset(
        self,
        table: Table,
        chunk: Sequence[Patch],
        results: list[WriteResult],
        failed: dict[str, str],
    ) -> tuple[bool, list[Patch]]:
        operations = [
            batch.Operation(
                "PATCH",
                self._api.url(f"{table.entity_set}({patch.record_id})"),
                {"If-Match": patch.expected_version or "*", "Prefer": "return=representation"},
                dict(patch.fields),
                str(n + 1),
            )
            for n, patch in enumerate(chunk)
        ]
        answers = await self._api.changeset(operations)
        error = next((a for a in answers if a.status >= 400), None)
        if error is None:
            for patch, answer in zip(chunk, answers, strict=False):
                assert patch.record_id is not None
                row = answer.json() or {}
                results.append(WriteResult(WriteStatus.WRITTEN, patch.record_id, etag(row)))
            return True, []
        index = int(error.content_id) - 1 if error.content_id.isdigit() else 0
        culprit = chunk[index]
        assert culprit.record_id is not None
        code, message = error_body(error.body)
        if error.status == 412:
            results.append(
                WriteResult(WriteStatus.CONFLICT, culprit.record_id, detail=message or "412")
            )
        else:
            failed[culprit.record_id] = f"Dataverse answered {error.status} {code}: {message}"
        rest = [p for n, p in enumerate(chunk) if n != index]
        return False, rest
