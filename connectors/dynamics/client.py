"""The Dataverse Web API (OData v4) over httpx.

Every call: a slot from the governor (:mod:`.limits`) → the request with the current
bearer token and the OData headers → an error answer translated (:mod:`.errors`). A 401
gets a new token once and replays; a 429 (service protection: the request was refused
before it ran, so replaying is safe even for writes) waits its ``Retry-After`` and replays
up to ``THROTTLE_RETRIES`` times when the wait is short, else fails transient for the
queue. Paging follows ``@odata.nextLink`` unmodified, sending the same
``Prefer: odata.maxpagesize`` on every page.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from connectors.dynamics import batch
from connectors.dynamics.auth import MsalTokens
from connectors.dynamics.config import DynamicsConfig
from connectors.dynamics.errors import DynamicsUnauthorized, from_response
from connectors.dynamics.limits import Governor
from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import translate_httpx

THROTTLE_RETRIES = 3
ODATA_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}


class WebApi:
    def __init__(self, config: DynamicsConfig, tokens: MsalTokens, governor: Governor) -> None:
        self._config = config
        self._tokens = tokens
        self.governor = governor
        verify: ssl.SSLContext | bool = True
        if config.ca_file:
            verify = ssl.create_default_context(cafile=config.ca_file)
        self._http = httpx.AsyncClient(
            timeout=config.timeout_seconds, verify=verify, headers=ODATA_HEADERS
        )
        self.root = config.api_root

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.root}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call; an error answer raises the translated error."""
        token = await self._tokens.token()
        replayed = False
        throttled = 0
        while True:
            async with self.governor.slot():
                with translate_httpx(what):
                    response = await self._http.request(
                        method,
                        self.url(path),
                        headers={"Authorization": f"Bearer {token}", **(headers or {})},
                        json=json,
                        content=content,
                        params=params or None,  # {} would drop a link's own query
                    )
            if response.status_code < 400 or response.status_code == 304:
                return response
            error = from_response(what, response.status_code, response.content, response.headers)
            if isinstance(error, DynamicsUnauthorized) and not replayed:
                token, replayed = await self._tokens.refreshed(token), True
                continue
            if isinstance(error, ConnectorTransientError) and response.status_code == 429:
                wait = error.retry_after or 0.0
                self.governor.throttled(wait)
                throttled += 1
                if throttled <= THROTTLE_RETRIES and self.governor.within_wait(wait):
                    continue
            raise error

    async def get_json(
        self, path: str, *, what: str, prefer: Sequence[str] = (), **params: str
    ) -> dict[str, Any]:
        headers = {"Prefer": ",".join(prefer)} if prefer else {}
        response = await self.request("GET", path, what=what, headers=headers, params=params)
        return _json(response, what)

    # ---------------------------------------------------------------- records

    async def read(self, entity_set: str, record_id: str, select: Sequence[str]) -> dict[str, Any]:
        params = {"$select": ",".join(select)} if select else {}
        return await self.get_json(
            f"{entity_set}({record_id})", what=f"read {entity_set}({record_id})", **params
        )

    async def update(
        self,
        entity_set: str,
        record_id: str,
        fields: Mapping[str, Any],
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> dict[str, Any]:
        """PATCH with ``Prefer: return=representation``; the row as it now is."""
        headers = {"Prefer": "return=representation", "Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        response = await self.request(
            "PATCH",
            f"{entity_set}({record_id})",
            what=f"write {entity_set}({record_id})",
            headers=headers,
            json=dict(fields),
        )
        return _json(response, f"write {entity_set}({record_id})")

    async def changeset(self, operations: Sequence[batch.Operation]) -> list[batch.Answer]:
        content_type, body = batch.build_request(operations)
        response = await self.request(
            "POST",
            "$batch",
            what=f"$batch of {len(operations)} operations",
            headers={"Content-Type": content_type},
            content=body,
        )
        return batch.parse_response(response.headers.get("content-type", ""), response.content)

    async def pages(
        self, first: str, *, what: str, page_size: int, track_changes: bool = False
    ) -> dict[str, Any]:
        """One page (GET ``first``: a query URL or a next/delta link)."""
        prefer = [f"odata.maxpagesize={page_size}"]
        if track_changes:
            prefer.insert(0, "odata.track-changes")
        return await self.get_json(first, what=what, prefer=prefer)

    async def who_am_i(self) -> str:
        answer = await self.get_json("WhoAmI", what="WhoAmI")
        return str(answer["UserId"]).lower()

    async def aclose(self) -> None:
        await self._http.aclose()


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError as exc:
        raise ConnectorTerminalError(f"{what}: Dataverse answered no JSON") from exc
    if not isinstance(parsed, dict):
        raise ConnectorTerminalError(f"{what}: Dataverse answered {type(parsed).__name__}")
    return parsed
