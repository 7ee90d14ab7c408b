"""Many updates in OData ``$batch`` requests, each record on its own.

Each patch is its own changeset (a changeset is atomic, so one record's failure does not
undo another's). A patch without an expected version gets its record's ETag from a first
batch of GETs; one whose ETag cannot be read is not written (it would overwrite blindly).
Every ``PATCH`` carries ``If-Match``; a 412 is a CONFLICT. The answer has one result (a
WriteResult, or the typed error of that record) per patch, in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import Patch, WriteResult, WriteStatus
from connectors.sap import multipart, wire
from connectors.sap.client import ODataClient
from connectors.sap.errors import PreconditionFailed, error_body, from_response
from core.errors import ConnectorError, ConnectorTerminalError, ConnectorTransientError

if TYPE_CHECKING:
    from connectors.sap.odata import ODataRecords

Planned = tuple[str, dict[str, Any], str | None]  # path, body, etag


async def send(
    client: ODataClient, service: str, parts: Sequence[multipart.Part], what: str
) -> list[multipart.Part]:
    boundary = multipart.new_boundary("batch")
    response = await client.send(
        "POST",
        service,
        "$batch",
        what=what,
        content=multipart.build(parts, boundary).encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
    )
    try:
        return multipart.parse(response.text, response.headers.get("content-type", ""))
    except multipart.BatchMalformed as exc:
        raise ConnectorTerminalError(f"{what}: unreadable $batch answer: {exc}") from None


async def write_many(
    records: ODataRecords, client: ODataClient, size: int, patches: Sequence[Patch]
) -> list[WriteResult | ConnectorError]:
    if not patches:
        return []
    service, _, _ = await records.entity(patches[0].object)
    results: list[WriteResult | ConnectorError] = []
    for start in range(0, len(patches), size):
        results += await _chunk(records, client, service, patches[start : start + size])
    return results


async def _chunk(
    records: ODataRecords, client: ODataClient, service: str, patches: Sequence[Patch]
) -> list[WriteResult | ConnectorError]:
    results: list[WriteResult | ConnectorError | None] = [None] * len(patches)
    planned: dict[int, Planned] = {}
    for index, patch in enumerate(patches):
        other, _, entity_set = await records.entity(patch.object)
        if other != service or patch.record_id is None:
            raise ConnectorTerminalError("write_many takes updates of one SAP service")
        path = entity_set.name + wire.key_predicate(entity_set.type.keys, patch.record_id)
        try:
            body = records.body(entity_set, patch.fields, create=False)
        except ConnectorTerminalError as exc:
            results[index] = exc
            continue
        planned[index] = (path, body, patch.expected_version)
    unknown = [i for i, (_, _, etag) in planned.items() if etag is None]
    if unknown:
        reads: list[multipart.Part] = [
            multipart.HttpMessage(f"GET {planned[i][0]} HTTP/1.1", {"accept": "application/json"})
            for i in unknown
        ]
        answers = await send(client, service, reads, f"read {len(reads)} records")
        for index, answer in zip(unknown, _aligned(answers, len(unknown)), strict=True):
            etag = None
            if answer is not None and answer.status == 200:
                etag = wire.etag_of(wire.envelope(json.loads(answer.body)), answer.headers)
            if etag is None:
                results[index] = _failure(patches[index], answer, "read")
                del planned[index]
            else:
                planned[index] = (planned[index][0], planned[index][1], etag)
    order = sorted(planned)
    changesets: list[multipart.Part] = [
        [
            multipart.HttpMessage(
                f"PATCH {planned[i][0]} HTTP/1.1",
                {"content-type": "application/json", "if-match": planned[i][2] or "*"},
                json.dumps(planned[i][1]),
            )
        ]
        for i in order
    ]
    if changesets:
        answers = await send(client, service, changesets, f"update {len(order)} records")
        for index, answer in zip(order, _aligned(answers, len(order)), strict=True):
            if answer is not None and answer.status < 300:
                record_id = patches[index].record_id or ""
                etag = answer.headers.get("etag")
                results[index] = WriteResult(WriteStatus.WRITTEN, record_id, etag)
            else:
                results[index] = _failure(patches[index], answer, "update")
    return [r if r is not None else ConnectorTerminalError("no result") for r in results]


def _aligned(answers: Sequence[multipart.Part], count: int) -> list[multipart.HttpMessage | None]:
    """One message per request part (a changeset's first), None where SAP sent none."""
    found: list[multipart.HttpMessage | None] = []
    for answer in list(answers)[:count]:
        message = answer[0] if isinstance(answer, list) and answer else answer
        found.append(message if isinstance(message, multipart.HttpMessage) else None)
    return found + [None] * (count - len(found))


def _failure(
    patch: Patch, answer: multipart.HttpMessage | None, what: str
) -> WriteResult | ConnectorError:
    record_id = patch.record_id or ""
    if answer is None:
        return ConnectorTransientError(f"{what} {patch.object} {record_id}: no answer in $batch")
    error = from_response(
        f"{what} {patch.object} {record_id}",
        answer.status,
        error_body(answer.body) and answer.body,
        answer.headers,
    )
    if isinstance(error, PreconditionFailed):
        return WriteResult(WriteStatus.CONFLICT, record_id, None, error.detail)
    return error
