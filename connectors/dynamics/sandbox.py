"""SANDBOX — a local stand-in for a Dataverse environment and its Azure AD tenant, for demo
mode, tests and benchmarks. Nothing here talks to Microsoft.

Serve :attr:`DataverseSandbox.app` over TLS (MSAL accepts only https authorities:
:class:`connectors.salesforce.sandbox_tls.TlsSandboxServer`) and set
:attr:`base_url` to the served URL; it is both the environment URL and the authority host.
It speaks:

* Azure AD (:mod:`.sandbox_gate`): OpenID configuration and the client-credentials token
  endpoint; bearer tokens that expire (:meth:`expire_tokens`);
* ``/api/data/v9.x/``: ``<set>(<id>)`` GET (``$select``, ``If-None-Match`` → 304) / PATCH
  (upsert; ``If-Match`` → 412 on a stale version, 404 with ``*`` on a missing row;
  ``If-None-Match: *`` → 412 on an existing row; ``Prefer: return=representation``) /
  DELETE; ``POST <set>``; collection reads with paging and change tracking
  (:mod:`.sandbox_query`); ``$batch`` with atomic changesets; ``EntityDefinitions`` with
  attributes and option sets; ``WhoAmI``;
* errors as ``{"error": {"code", "message"}}``; faults: :meth:`inject` (429 storms with
  Retry-After, 5xx), ``delay_seconds``; delta-token expiry: :meth:`expire_delta_tokens`;
* webhooks: :meth:`register_webhook` adds a service endpoint step; every change of its
  tables (through the API as the Application User, or by a person with :meth:`change`)
  queues a ``RemoteExecutionContext``; :meth:`deliver` sends them (:mod:`.sandbox_hooks`).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.dynamics.sandbox_batch import answer_batch
from connectors.dynamics.sandbox_gate import App, Gate, odata_error
from connectors.dynamics.sandbox_hooks import ORGANIZATION, Outbox, Registration, context
from connectors.dynamics.sandbox_query import Reader, metadata_answer, row_json, select_of
from connectors.dynamics.sandbox_schema import (
    BY_SET,
    TABLES,
)
from connectors.dynamics.sandbox_seed import seed
from connectors.dynamics.sandbox_store import ODataError, Store, not_found

__all__ = ["APP_USER", "CLIENT_ID", "CLIENT_SECRET", "HUMAN_USER", "TENANT_ID", "DataverseSandbox"]

TENANT_ID = "5f1e2d3c-4b5a-4968-8778-a1b2c3d4e5f6"
CLIENT_ID = "0c7e9a51-3f2b-4d8e-9a6c-1b2d3e4f5a6b"
CLIENT_SECRET = "sandbox-dataverse-client-secret"  # noqa: S105 (opens nothing but this sandbox)
APP_USER = "a1e5c0de-0000-4000-8000-00000000a5e7"
HUMAN_USER = "b0b0b0b0-1111-4222-8333-444455556666"
_KEY = re.compile(r"^(?P<set>\w+)(\((?P<key>[^)]*)\))?$")
_ENTITY_DEF = re.compile(r"^EntityDefinitions\(LogicalName='(\w+)'\)(/Attributes/([\w.]+))?$")


class DataverseSandbox:
    """Dataverse in memory (SANDBOX). Thread-safe: it is served from its own thread."""

    def __init__(
        self,
        *,
        tenant_id: str = TENANT_ID,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        app_user: str = APP_USER,
        with_seed: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gate = Gate(
            tenant_id=tenant_id, apps={client_id: App(client_id, client_secret, app_user)}
        )
        self.store = Store(TABLES)
        self.outbox = Outbox(host="")
        self.registrations: list[Registration] = []
        self.clock = clock
        self.delay_seconds = 0.0
        self.requests = 0
        self.writes: list[tuple[str, str, dict[str, Any]]] = []  # (table, id, values) by the API
        self._lock = threading.Lock()
        self._base_url = ""
        if with_seed:
            seed(self.store, clock(), HUMAN_USER)
        self.app = Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route(
                    "/api/data/{version}/{rest:path}",
                    self._api,
                    methods=["GET", "POST", "PATCH", "DELETE"],
                ),
            ]
        )

    # ------------------------------------------------------------ test handles

    @property
    def base_url(self) -> str:
        return self._base_url

    @base_url.setter
    def base_url(self, url: str) -> None:
        self._base_url = url.rstrip("/")
        self.gate.base_url = self._base_url
        self.outbox.host = urlsplit(self._base_url).netloc

    @property
    def api_root(self) -> str:
        return f"{self._base_url}/api/data/v9.2"

    @property
    def token_requests(self) -> int:
        return self.gate.token_requests

    def inject(self, status: int, times: int = 1, **fault: Any) -> None:
        """The next ``times`` API answers are ``status`` (429: service protection)."""
        with self._lock:
            self.gate.inject(status, times, **fault)

    def expire_tokens(self) -> None:
        with self._lock:
            self.gate.expire_tokens()

    def expire_delta_tokens(self) -> None:
        with self._lock:
            self.store.expire_tokens()

    def ids(self, table: str) -> list[str]:
        with self._lock:
            rows = self.store.rows.get(table, {})
            return sorted(rows, key=lambda rid: rows[rid].values.get("createdon") or "")

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.store.get(table, record_id)
            return dict(row.values) if row else None

    def change(
        self,
        table: str,
        record_id: str | None,
        values: Mapping[str, Any],
        *,
        user: str = HUMAN_USER,
    ) -> str:
        """A person creates (``record_id`` None) or changes a row in the app."""
        with self._lock:
            return self._write(TABLES[table], record_id, values, user, None)

    def delete(self, table: str, record_id: str, *, user: str = HUMAN_USER) -> None:
        with self._lock:
            self.store.delete(TABLES[table], record_id)
            self._queue(table, record_id.lower(), "Delete", {}, None, user, None)

    def register_webhook(
        self,
        url: str,
        *,
        kind: str,
        key: str,
        name: str = "code",
        tables: tuple[str, ...] = ("account", "incident"),
    ) -> Registration:
        registration = Registration(url, kind, name, key, frozenset(tables))
        self.registrations.append(registration)
        return registration

    async def deliver(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        return await self.outbox.deliver(client)

    # ------------------------------------------------------------ changes

    def _write(
        self,
        table: Any,
        record_id: str | None,
        values: Mapping[str, Any],
        user: str,
        application: str | None,
    ) -> str:
        now = self.clock()
        rid, row, created, changed = self.store.write(table, record_id, values, user=user, now=now)
        message = "Create" if created else "Update"
        self._queue(
            table.logical_name,
            rid,
            message,
            changed,
            dict(row.values),
            user,
            application,
            row.version,
        )
        return rid

    def _queue(
        self,
        table: str,
        record_id: str,
        message: str,
        attributes: Mapping[str, Any],
        image: Mapping[str, Any] | None,
        user: str,
        application: str | None,
        version: int = 0,
    ) -> None:
        now = self.clock()
        target = dict(attributes) | (
            {"modifiedon": f"/Date({int(now.timestamp() * 1000)})/"} if message == "Update" else {}
        )
        for registration in self.registrations:
            if table in registration.tables:
                self.outbox.add(
                    registration,
                    context(
                        registration=registration,
                        organization=ORGANIZATION,
                        message=message,
                        table=table,
                        record_id=record_id,
                        attributes=target,
                        image=image,
                        user_id=user,
                        application_id=application,
                        version=version,
                        now=now,
                    ),
                )

    # ------------------------------------------------------------ endpoints

    async def _openid(self, request: Request) -> Response:
        with self._lock:
            return self.gate.openid_configuration(request.path_params["tenant"])

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        with self._lock:
            return self.gate.token(request.path_params["tenant"], form)

    async def _api(self, request: Request) -> Response:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self.requests += 1
            app, refused = self.gate.caller(headers.get("authorization", ""))
            if refused is not None or app is None:
                return refused or Response(status_code=401)
            rest, query = request.path_params["rest"], dict(request.query_params)
            if rest == "$batch" and request.method == "POST":
                return answer_batch(self, app, headers.get("content-type", ""), raw)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return odata_error(400, "0x80048d19", "The request body is not valid JSON.")
            status, out_headers, payload = self.execute(
                app, request.method, rest, query, headers, body
            )
        if payload is None:
            return Response(status_code=status, headers=out_headers)
        return JSONResponse(payload, status, headers=out_headers)

    def execute(
        self,
        app: App,
        method: str,
        rest: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Any,
    ) -> tuple[int, dict[str, str], Any]:
        try:
            return self._route(app, method, rest, query, headers, body)
        except ODataError as exc:
            return exc.status, {}, {"error": {"code": exc.code, "message": exc.message}}

    def _route(
        self,
        app: App,
        method: str,
        rest: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Any,
    ) -> tuple[int, dict[str, str], Any]:
        if rest == "WhoAmI":
            return (
                200,
                {},
                {
                    "@odata.context": f"{self.api_root}/$metadata#Microsoft.Dynamics.CRM."
                    "WhoAmIResponse",
                    "BusinessUnitId": ORGANIZATION["business_unit_id"],
                    "UserId": app.user_id,
                    "OrganizationId": ORGANIZATION["organization_id"],
                },
            )
        definition = _ENTITY_DEF.match(rest)
        if definition is not None and method == "GET":
            return (
                200,
                {},
                metadata_answer(self.api_root, definition.group(1), definition.group(3), query),
            )
        found = _KEY.match(rest)
        table = BY_SET.get(found.group("set")) if found else None
        if found is None or table is None:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{rest}'.")
        prefer = [p.strip() for p in headers.get("prefer", "").split(",") if p.strip()]
        key = found.group("key")
        if key is None:
            if method == "GET":
                answer, out = Reader(self.store, self.api_root).collection(
                    table, query, prefer, self.clock()
                )
                return 200, out, answer
            if method == "POST":
                return self._save(app, table, None, headers, body or {}, prefer, create_only=True)
            raise ODataError(405, "0x80060888", f"{method} is not supported on {rest}.")
        record_id = key.strip("{}'").lower()
        row = self.store.get(table.logical_name, record_id)
        if method == "GET":
            if row is None:
                raise not_found(table, record_id)
            if headers.get("if-none-match") == row.etag:
                return 304, {}, None
            return (
                200,
                {},
                row_json(table, row, select_of(table, query))
                | {"@odata.context": f"{self.api_root}/$metadata#{table.entity_set}/$entity"},
            )
        if method == "DELETE":
            self._precondition(table, record_id, row, headers)
            self.store.delete(table, record_id)
            self._queue(
                table.logical_name, record_id, "Delete", {}, None, app.user_id, app.client_id
            )
            return 204, {}, None
        if method == "PATCH":
            self._precondition(table, record_id, row, headers)
            return self._save(app, table, record_id, headers, body or {}, prefer)
        raise ODataError(405, "0x80060888", f"{method} is not supported on {rest}.")

    def _precondition(
        self, table: Any, record_id: str, row: Any, headers: Mapping[str, str]
    ) -> None:
        if_match, if_none = headers.get("if-match"), headers.get("if-none-match")
        if if_none == "*" and row is not None:
            raise ODataError(412, "0x80040237", "A record with matching key values already exists.")
        if if_match is not None:
            if row is None:
                raise not_found(table, record_id)
            if if_match != "*" and if_match != row.etag:
                raise ODataError(
                    412,
                    "0x80060882",
                    "The version of the existing record doesn't "
                    "match the RowVersion property provided.",
                )

    def _save(
        self,
        app: App,
        table: Any,
        record_id: str | None,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        prefer: list[str],
        *,
        create_only: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        wanted = record_id or str(body.get(table.primary_id) or "") or None
        if create_only and wanted and self.store.get(table.logical_name, wanted):
            raise ODataError(412, "0x80040237", "A record with matching key values already exists.")
        existed = wanted is not None and self.store.get(table.logical_name, wanted) is not None
        rid = self._write(table, wanted, body, app.user_id, app.client_id)
        self.writes.append((table.logical_name, rid, dict(body)))
        row = self.store.get(table.logical_name, rid)
        assert row is not None
        entity_id = f"{self.api_root}/{table.entity_set}({rid})"
        out = {"OData-EntityId": entity_id, "ETag": row.etag}
        if "return=representation" in prefer:
            out["Preference-Applied"] = "return=representation"
            payload = row_json(table, row, None) | {
                "@odata.context": f"{self.api_root}/$metadata#{table.entity_set}/$entity"
            }
            return (200 if existed else 201), out, payload
        return 204, out, None
