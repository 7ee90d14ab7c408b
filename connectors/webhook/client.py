"""Outbound side: fetch and write records over the tool's JSON REST API (httpx).

``GET {base_url}/{object}/{id}`` returns the record as a JSON object; ``PATCH`` the same
path with the changed fields. The record's ``ETag`` (if any) is its version: writes send
``If-Match`` so a record changed since it was read answers 412 → ``WriteStatus.CONFLICT``.
Every write carries ``Idempotency-Key``. httpx errors are translated here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import Patch, Record, RecordRef, WriteResult, WriteStatus
from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import retry_after_seconds, translate_httpx

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    detail = f"{what}: HTTP {response.status_code} {response.text[:300]}"
    if response.status_code in RETRYABLE_STATUS:
        raise ConnectorTransientError(
            detail, retry_after=retry_after_seconds(response.headers.get("retry-after"))
        )
    raise ConnectorTerminalError(detail, status_code=response.status_code)


class RecordsClient:
    def __init__(self, base_url: str, *, token: str | None, timeout: float) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    @staticmethod
    def _path(object_name: str, record_id: str) -> str:
        return f"/{quote(object_name, safe='')}/{quote(record_id, safe='')}"

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None) -> Record:
        what = f"GET {ref.object}/{ref.record_id}"
        params = {"fields": ",".join(fields)} if fields else None
        with translate_httpx(what):
            response = await self._http.get(self._path(ref.object, ref.record_id), params=params)
        _raise_for_status(response, what)
        try:
            body: Any = response.json()
        except ValueError:  # e.g. an HTML page: base_url points at the wrong server
            body = None
        if not isinstance(body, Mapping):
            raise ConnectorTerminalError(f"{what}: expected a JSON object")
        values = {k: v for k, v in body.items() if not fields or k in fields}
        return Record(ref.object, ref.record_id, values, response.headers.get("etag"))

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        if patch.record_id is None:
            raise ConnectorTerminalError(
                f"the webhook connector's records API updates records only; a flow that "
                f"creates {patch.object} records needs a connector that can create them"
            )
        what = f"PATCH {patch.object}/{patch.record_id}"
        headers = {"Idempotency-Key": idempotency_key}
        if patch.expected_version:
            headers["If-Match"] = patch.expected_version
        with translate_httpx(what):
            response = await self._http.patch(
                self._path(patch.object, patch.record_id),
                json=dict(patch.fields),
                headers=headers,
            )
        if response.status_code == 412:
            return WriteResult(
                WriteStatus.CONFLICT, patch.record_id, detail="record changed since it was read"
            )
        _raise_for_status(response, what)
        return WriteResult(WriteStatus.WRITTEN, patch.record_id, response.headers.get("etag"))

    async def aclose(self) -> None:
        await self._http.aclose()
