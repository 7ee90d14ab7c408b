"""SANDBOX — a local stand-in for HubSpot's CRM API, for demo mode, tests and benchmarks.

Nothing here talks to HubSpot. :class:`HubSpotSandbox` is an ASGI app (serve it with
:class:`core.sandbox.SandboxServer`) that the official ``hubspot-api-client`` uses
unchanged once its host points here. It speaks:

* ``/crm/v3/objects/{type}/{id}`` GET / PATCH, ``POST /crm/v3/objects/{type}``,
  ``/batch/{read,update,create,upsert}`` (≤ 100 inputs; unknown ids → 207 with errors),
  ``/search`` (filterGroups, sorts, ``after`` paging, ``total``; 10,000-result cap: paging
  past it is a 400), ``GET /crm/v3/properties/{type}``,
  ``GET /crm/v4/objects/{type}/{id}/associations/{to}``, ``POST /oauth/v1/token``
  (refresh-token grant; the refresh token rotates and the old one stops working);
* bearer auth: private-app tokens, or OAuth access tokens that expire
  (401 ``EXPIRED_AUTHENTICATION``);
* HubSpot's error body (``status``, ``message``, ``correlationId``, ``category``) and the
  ``X-HubSpot-RateLimit-*`` headers of a rolling window (daily headers only for private
  app tokens), 429 ``RATE_LIMITS`` past it;
* faults: :meth:`inject` (the next N answers, e.g. a 429 storm or 502s),
  :meth:`expire_tokens`, ``delay_seconds`` for slow answers.

Changes made through the API (``changeSource`` INTEGRATION, ``sourceId`` = the calling
app's id) or with :meth:`change` (as a user in the UI) queue webhook events for the
subscriptions added with :meth:`subscribe`; :meth:`deliver` sends them signed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.hubspot.sandbox_gate import Gate, error
from connectors.hubspot.sandbox_hooks import Outbox, Subscription, signed_headers
from connectors.hubspot.sandbox_seed import seed
from connectors.hubspot.sandbox_store import PROPERTIES, InvalidInput, Store, iso
from core.sandbox import SandboxServer

__all__ = ["HubSpotSandbox", "SandboxServer", "signed_headers"]

SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal"}


class HubSpotSandbox:
    """HubSpot's CRM API in memory (SANDBOX). Thread-safe: it is served from its own thread."""

    def __init__(
        self,
        *,
        portal_id: int = 62515,
        app_id: int = 2_931_120,
        private_tokens: tuple[str, ...] = (),
        client_id: str = "sandbox-client-id",
        client_secret: str = "sandbox-client-secret",  # noqa: S107 (a sandbox default)
        refresh_tokens: tuple[str, ...] = (),
        rate_max: int = 190,
        window_ms: int = 10_000,
        daily_max: int = 625_000,
        with_seed: bool = True,
        search_cap: int = 10_000,
        clock: Any = time.time,
    ) -> None:
        self.portal_id, self.app_id = portal_id, app_id
        self.client_secret = client_secret
        self.gate = Gate(
            private_tokens=private_tokens,
            refresh_tokens=refresh_tokens,
            client_id=client_id,
            client_secret=client_secret,
            rate_max=rate_max,
            window_ms=window_ms,
            daily_max=daily_max,
            clock=clock,
        )
        self.store = Store(search_cap=search_cap)
        self.outbox = Outbox()
        self.subscriptions: list[Subscription] = []
        self.delay_seconds = 0.0
        self.requests = 0
        self.writes: list[tuple[str, str, dict[str, Any]]] = []  # (type, id, properties)
        self._lock = threading.Lock()
        if with_seed:
            seed(self.store, self._now_ms())
        routes = [
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/crm/v3/properties/{type}", self._properties, methods=["GET"]),
            Route(
                "/crm/v4/objects/{type}/{id}/associations/{to}", self._associations, methods=["GET"]
            ),
            Route("/crm/v3/objects/{type}/search", self._search, methods=["POST"]),
            Route("/crm/v3/objects/{type}/batch/{op}", self._batch, methods=["POST"]),
            Route("/crm/v3/objects/{type}/{id}", self._one, methods=["GET", "PATCH"]),
            Route("/crm/v3/objects/{type}", self._create, methods=["GET", "POST"]),
        ]
        self.app = Starlette(routes=routes)

    # ------------------------------------------------------------ test handles

    def _now_ms(self) -> int:
        return int(self.gate.clock() * 1000)

    @property
    def token_requests(self) -> int:
        return self.gate.token_requests

    def inject(
        self,
        status: int,
        times: int = 1,
        *,
        category: str | None = None,
        message: str = "sandbox fault",
    ) -> None:
        """The next ``times`` API answers are ``status`` (429 → RATE_LIMITS): a 429 storm,
        5xx outages, or any error category."""
        with self._lock:
            self.gate.inject(status, times, category, message)

    def expire_tokens(self) -> None:
        """Every OAuth access token handed out so far expires now."""
        with self._lock:
            self.gate.expire_tokens()

    def record(self, object_type: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self.store.get(object_type, record_id)
            return dict(stored.properties) if stored else None

    def create(self, object_type: str, properties: Mapping[str, Any]) -> str:
        """A record created in HubSpot's UI; queues ``<object>.creation`` events."""
        with self._lock:
            stored = self.store.create(object_type, properties, self._now_ms())
            self._queue(object_type, stored.id, None, "CRM_UI", "userId:9001", stored.created_ms)
            return stored.id

    def change(
        self,
        object_type: str,
        record_id: str,
        properties: Mapping[str, Any],
        *,
        source: str = "CRM_UI",
        source_id: str = "userId:9001",
    ) -> None:
        """A user (or an import, ``source="IMPORT"``) changes a record in HubSpot."""
        with self._lock:
            stored, changed = self.store.update(object_type, record_id, properties, self._now_ms())
            self._queue(object_type, record_id, changed, source, source_id, stored.updated_ms)

    def subscribe(self, url: str, *, versions: tuple[str, ...] = ("v3", "v1")) -> Subscription:
        subscription = Subscription(
            url, self.client_secret, self.app_id, self.portal_id, versions=versions
        )
        self.subscriptions.append(subscription)
        return subscription

    async def deliver(self, client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
        """Send the pending webhook events to every subscription (signed)."""
        responses: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=10) if client is None else nullcontext(client) as c:
            for subscription in self.subscriptions:
                responses += await self.outbox.deliver(subscription, c)
        return responses

    def _queue(
        self,
        object_type: str,
        record_id: str,
        changed: Mapping[str, Any] | None,
        source: str,
        source_id: str,
        at_ms: int,
    ) -> None:
        kind = SINGULAR.get(object_type)
        if kind is None:
            return
        for subscription in self.subscriptions:
            common = {
                "objectId": int(record_id),
                "occurredAt": at_ms,
                "changeSource": source,
                "sourceId": source_id,
            }
            if changed is None:
                self.outbox.add(
                    subscription,
                    subscriptionType=f"{kind}.creation",
                    changeFlag="CREATED",
                    **common,
                )
                continue
            for name, value in changed.items():
                self.outbox.add(
                    subscription,
                    subscriptionType=f"{kind}.propertyChange",
                    propertyName=name,
                    propertyValue=value,
                    **common,
                )

    # ------------------------------------------------------------ the gate

    async def _answer(self, request: Request, handler: Any) -> Response:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        with self._lock:
            self.requests += 1
            refused, headers = self.gate.check(request)
            if refused is not None:
                refused.headers.update(headers)
                return refused
            try:
                response: Response = handler(request, body)
            except InvalidInput as exc:
                response = error(400, "VALIDATION_ERROR", str(exc))
            response.headers.update(headers)
            return response

    # ------------------------------------------------------------ endpoints

    async def _token(self, request: Request) -> Response:
        form = await _form(request)
        with self._lock:
            return self.gate.token(form)

    async def _one(self, request: Request) -> Response:
        return await self._answer(request, self._one_locked)

    def _one_locked(self, request: Request, body: Any) -> Response:
        object_type, record_id = request.path_params["type"], request.path_params["id"]
        stored = self.store.get(object_type, record_id)
        if stored is None:
            return error(404, "OBJECT_NOT_FOUND", "resource not found")
        if request.method == "GET":
            wanted = [p for p in request.query_params.get("properties", "").split(",") if p]
            return JSONResponse(stored.view(object_type, wanted))
        values = dict(body.get("properties") or {})
        self._apply(object_type, record_id, values)
        return JSONResponse(stored.view(object_type, list(values)))

    def _apply(self, object_type: str, record_id: str, values: dict[str, Any]) -> None:
        self.store.check_properties(object_type, values)
        stored, changed = self.store.update(object_type, record_id, values, self._now_ms())
        self.writes.append((object_type, record_id, values))
        self._queue(
            object_type, record_id, changed, "INTEGRATION", str(self.app_id), stored.updated_ms
        )

    async def _create(self, request: Request) -> Response:
        def create(request: Request, body: Any) -> Response:
            object_type = request.path_params["type"]
            if request.method == "GET":  # list: limit, after, properties
                query = request.query_params
                rows = sorted(
                    self.store.records.get(object_type, {}).values(), key=lambda s: int(s.id)
                )
                start, limit = int(query.get("after") or 0), int(query.get("limit") or 10)
                wanted = [p for p in query.get("properties", "").split(",") if p]
                page: dict[str, Any] = {
                    "results": [s.view(object_type, wanted) for s in rows[start : start + limit]]
                }
                if start + limit < len(rows):
                    page["paging"] = {"next": {"after": str(start + limit)}}
                return JSONResponse(page)
            values = dict(body.get("properties") or {})
            self.store.check_properties(object_type, values)
            stored = self.store.create(object_type, values, self._now_ms())
            self._queue(
                object_type, stored.id, None, "INTEGRATION", str(self.app_id), stored.created_ms
            )
            return JSONResponse(stored.view(object_type, list(values)), 201)

        return await self._answer(request, create)

    async def _batch(self, request: Request) -> Response:
        return await self._answer(request, self._batch_locked)

    def _batch_locked(self, request: Request, body: Any) -> Response:
        object_type, op = request.path_params["type"], request.path_params["op"]
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            raise InvalidInput("Batch input limit is 100 inputs; got " + str(len(inputs)))
        started = iso(self._now_ms())
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            if op == "upsert":
                results.append(self._upsert(object_type, item))
                continue
            if op == "create":
                values = dict(item.get("properties") or {})
                created = self.store.create(object_type, values, self._now_ms())
                results.append(created.view(object_type, list(values)))
                continue
            stored = self.store.get(object_type, str(item.get("id")))
            if stored is None:
                missing.append(str(item.get("id")))
            elif op == "read":
                results.append(stored.view(object_type, body.get("properties")))
            elif op == "update":
                values = dict(item.get("properties") or {})
                self._apply(object_type, stored.id, values)
                results.append(stored.view(object_type, list(values)))
            else:
                raise InvalidInput(f"unsupported batch operation {op}")
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso(self._now_ms()),
        }
        if not missing:
            return JSONResponse(answer, 201 if op == "create" else 200)
        kind = object_type.rstrip("s").upper()
        answer |= {
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {kind} objects, they may be deleted or "
                    "not exist. Check that ids are valid.",
                    "context": {"ids": missing},
                    "links": {},
                    "errors": [],
                }
            ],
        }
        return JSONResponse(answer, 207)

    def _upsert(self, object_type: str, item: Mapping[str, Any]) -> dict[str, Any]:
        id_property, key = item.get("idProperty"), str(item.get("id"))
        values = dict(item.get("properties") or {})
        unique = {p["name"] for p in PROPERTIES.get(object_type, []) if p["hasUniqueValue"]}
        if id_property not in unique:
            raise InvalidInput(f"{id_property} is not a unique-value property of {object_type}")
        values[str(id_property)] = key
        stored = self.store.find_unique(object_type, str(id_property), key)
        new = stored is None
        if stored is None:
            self.store.check_properties(object_type, values)
            stored = self.store.create(object_type, values, self._now_ms())
            self.writes.append((object_type, stored.id, values))
        else:
            self._apply(object_type, stored.id, values)
        return stored.view(object_type, list(values)) | {"new": new}

    async def _search(self, request: Request) -> Response:
        return await self._answer(
            request, lambda r, body: JSONResponse(self.store.search(r.path_params["type"], body))
        )

    async def _properties(self, request: Request) -> Response:
        def properties(request: Request, body: Any) -> Response:
            found = PROPERTIES.get(request.path_params["type"])
            if found is None:
                return error(
                    400,
                    "VALIDATION_ERROR",
                    "Unable to infer object type from: " + request.path_params["type"],
                )
            return JSONResponse({"results": found})

        return await self._answer(request, properties)

    async def _associations(self, request: Request) -> Response:
        def associations(request: Request, body: Any) -> Response:
            p = request.path_params
            links = self.store.links.get((p["type"], p["id"], p["to"]), [])
            results = [
                {
                    "toObjectId": int(to_id),
                    "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": label}
                    ],
                }
                for to_id, type_id, label in links
            ]
            return JSONResponse({"results": results})

        return await self._answer(request, associations)


async def _form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
