"""HubSpot's API through the official ``hubspot-api-client``.

The SDK is synchronous (urllib3), so each call runs in a worker thread via
:func:`asyncio.to_thread`: an async HTTP client would mean re-implementing the SDK's
paths and models, and the calls are few and short. One SDK ``ApiClient`` per API family is
built once per connector (``hubspot.Client`` would build a new one, with a new connection
pool, on every attribute access). urllib3's own retries are off: retrying is decided here
(a 429 waits and tries again a few times; a 401 refreshes an OAuth token once and replays)
and, beyond that, by the queue.

Every call: the governor's permission (:mod:`connectors.hubspot.limits`) → the SDK call
with the current token → its rate-limit headers observed; SDK errors are translated by
:func:`connectors.hubspot.errors.translate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.hubspot.auth import TokenSource
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.errors import HubSpotUnauthorized, translate
from connectors.hubspot.limits import RateGovernor
from core.errors import ConnectorTransientError

BATCH_SIZE = 100  # inputs per batch call
THROTTLE_RETRIES = 3  # 429s absorbed inside one call before the queue takes over

SdkCall = Callable[[dict[str, str]], Any]  # takes the request auth, returns SDK http_info


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


class HubSpotApi:
    def __init__(self, config: HubSpotConfig, tokens: TokenSource, governor: RateGovernor) -> None:
        from hubspot import oauth
        from hubspot.crm import objects, properties
        from hubspot.crm.associations import v4

        host = str(config.base_url).rstrip("/")
        self._timeout = config.timeout_seconds
        self._max_wait = config.max_rate_wait_seconds
        self._tokens = tokens
        self._governor = governor
        self._clients: list[Any] = []

        def client(package: Any) -> Any:
            configuration = package.Configuration(host=host)
            configuration.retries = False
            built = package.ApiClient(configuration=configuration)
            self._clients.append(built)
            return built

        crm = client(objects)
        self._basic = objects.BasicApi(crm)
        self._batch = objects.BatchApi(crm)
        self._search = objects.SearchApi(crm)
        self._properties = properties.CoreApi(client(properties))
        self._associations = v4.BasicApi(client(v4))
        self._oauth = oauth.TokensApi(client(oauth))

    # --------------------------------------------------------------- plumbing

    def _invoke(self, what: str, call: SdkCall, token: str) -> tuple[Any, int, Any]:
        auth = {"in": "header", "key": "Authorization", "value": f"Bearer {token}"}
        with translate(what):
            data, status, headers = call(auth | {"type": "oauth2"})
        return data, status, headers

    async def _call(self, what: str, call: SdkCall, *, search: bool = False) -> tuple[Any, int]:
        token = await self._tokens.token()
        replayed = False
        throttled = 0
        while True:
            await self._governor.before(search=search)
            try:
                data, status, headers = await asyncio.to_thread(self._invoke, what, call, token)
            except HubSpotUnauthorized:
                fresh = None if replayed else await self._tokens.refreshed(token)
                if fresh is None:
                    raise
                token, replayed = fresh, True
                continue
            except ConnectorTransientError as exc:
                if exc.extensions.get("status_code") != 429:
                    raise
                self._governor.throttled(exc.retry_after)
                throttled += 1
                # HubSpot refuses a throttled call before doing anything: safe to repeat.
                if throttled > THROTTLE_RETRIES or (exc.retry_after or 0) > self._max_wait:
                    raise
                continue
            self._governor.observe(dict(headers or {}))
            return data, status

    def _timeouts(self) -> dict[str, Any]:
        return {"_request_timeout": self._timeout}

    # ---------------------------------------------------------------- records

    async def read(
        self, object_type: str, record_id: str, properties: Sequence[str]
    ) -> dict[str, Any] | None:
        """One record with ``properties`` (batch read: no URL length limit); None if absent."""
        body = {"inputs": [{"id": record_id}], "properties": list(properties)}
        data, _ = await self._call(
            f"read {object_type} {record_id}",
            lambda auth: self._batch.read_with_http_info(
                object_type, body, archived=False, _request_auth=auth, **self._timeouts()
            ),
        )
        results = [_plain(r) for r in _plain(data).get("results") or []]
        return results[0] if results else None

    async def update(
        self, object_type: str, record_id: str, properties: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"properties": dict(properties)}
        data, _ = await self._call(
            f"update {object_type} {record_id}",
            lambda auth: self._basic.update_with_http_info(
                object_type, record_id, body, _request_auth=auth, **self._timeouts()
            ),
        )
        return dict(_plain(data))

    async def batch_update(
        self, object_type: str, changes: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Update many records, 100 a call; the updated records and the per-input errors."""
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for start in range(0, len(changes), BATCH_SIZE):
            chunk = changes[start : start + BATCH_SIZE]
            body = {"inputs": [{"id": rid, "properties": dict(props)} for rid, props in chunk]}
            data, _ = await self._call(
                f"batch update {len(chunk)} {object_type}",
                lambda auth, body=body: self._batch.update_with_http_info(  # type: ignore[misc]
                    object_type, body, _request_auth=auth, **self._timeouts()
                ),
            )
            plain = _plain(data)
            results.extend(_plain(r) for r in plain.get("results") or [])
            errors.extend(_plain(e) for e in plain.get("errors") or [])
        return results, errors

    async def upsert(
        self, object_type: str, id_property: str, key: str, properties: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create or update the record whose unique ``id_property`` is ``key``."""
        body = {"inputs": [{"idProperty": id_property, "id": key, "properties": dict(properties)}]}
        data, _ = await self._call(
            f"upsert {object_type} {id_property}={key}",
            lambda auth: self._batch.upsert_with_http_info(
                object_type, body, _request_auth=auth, **self._timeouts()
            ),
        )
        results = _plain(data).get("results") or []
        if not results:
            errors = _plain(data).get("errors") or []
            from core.errors import ConnectorTerminalError

            raise ConnectorTerminalError(f"upsert {object_type}: {errors[:1]}")
        return dict(_plain(results[0]))

    async def search(self, object_type: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data, _ = await self._call(
            f"search {object_type}",
            lambda auth: self._search.do_search_with_http_info(
                object_type, dict(body), _request_auth=auth, **self._timeouts()
            ),
            search=True,
        )
        return dict(_plain(data))

    async def properties(self, object_type: str) -> list[dict[str, Any]]:
        data, _ = await self._call(
            f"properties of {object_type}",
            lambda auth: self._properties.get_all_with_http_info(
                object_type, archived=False, _request_auth=auth, **self._timeouts()
            ),
        )
        return [_plain(p) for p in _plain(data).get("results") or []]

    async def associated_ids(self, object_type: str, record_id: str, to_type: str) -> list[str]:
        data, _ = await self._call(
            f"associations {object_type} {record_id} → {to_type}",
            lambda auth: self._associations.get_page_with_http_info(
                object_type,
                record_id,
                to_type,
                limit=500,
                _request_auth=auth,
                **self._timeouts(),
            ),
        )
        rows = [_plain(r) for r in _plain(data).get("results") or []]

        # Primary associations first (HUBSPOT_DEFINED label "Primary").
        def secondary(row: dict[str, Any]) -> bool:
            return not any(t.get("label") == "Primary" for t in row["association_types"])

        rows.sort(key=secondary)
        return [str(r["to_object_id"]) for r in rows]

    # ----------------------------------------------------------------- oauth

    async def exchange(
        self, refresh_token: str, client_id: str, client_secret: str
    ) -> tuple[str, str, int]:
        """``POST /oauth/v1/token`` with grant_type=refresh_token."""

        def call() -> Any:
            with translate("refresh the OAuth token"):
                return self._oauth.create(
                    grant_type="refresh_token",
                    client_id=client_id,
                    client_secret=client_secret,
                    refresh_token=refresh_token,
                    **self._timeouts(),
                )

        answer = await asyncio.to_thread(call)
        return answer.access_token, answer.refresh_token, int(answer.expires_in)

    async def aclose(self) -> None:
        for built in self._clients:
            built.rest_client.pool_manager.clear()
