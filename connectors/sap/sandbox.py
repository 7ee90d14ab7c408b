"""SANDBOX — a local stand-in for SAP S/4HANA's OData V2 APIs, for demo mode and tests.

Nothing here talks to SAP. :class:`SapSandbox` is an ASGI app (serve it with
:class:`core.sandbox.SandboxServer`) speaking, under ``/sap/opu/odata/sap/<SERVICE>/``:

* the services of :mod:`.sandbox_schema` (``API_SALES_ORDER_SRV``, ``API_BUSINESS_PARTNER``,
  ``API_PRODUCT_SRV``, ``API_SUPPLIERINVOICE_PROCESS_SRV`` and a custom ``YY1_`` object),
  their ``$metadata`` (EDMX with ``sap:creatable`` / ``sap:updatable``), entity and
  collection reads in the ``{"d": ...}`` envelope with ``__metadata`` etags and
  ``/Date(ms)/`` dates, ``$filter``/``$orderby``/``$top``/``$skip``/``$select``/
  ``$inlinecount``, optional server-side paging (``page_limit``: ``__next`` with
  ``$skiptoken``), deep-insert creates, ``PATCH``/``MERGE`` with ``If-Match`` (412 / 428),
  and ``$batch`` with atomic changesets (:mod:`.sandbox_odata`);
* Basic auth for SAP users, or OAuth client credentials (``POST /oauth/token``), and the
  ``sap-client`` header;
* CSRF protection: a GET with ``X-CSRF-Token: Fetch`` answers a token and session cookies;
  a modifying request without both, or after :meth:`expire_csrf`, gets 403 with
  ``x-csrf-token: Required``;
* SAP's error JSON (``error.code``, ``error.message.value``, ``innererror.errordetails``);
  :meth:`inject` makes the next answers 429 / 503 / anything;
* Event Mesh: changes (through the API or :meth:`change`) queue CloudEvents for
  :meth:`subscribe`-d webhooks, sent by :meth:`deliver` with the shared secret.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.sap.sandbox_batch import run_batch
from connectors.sap.sandbox_hooks import Outbox, Subscription
from connectors.sap.sandbox_odata import Answer, Call, Services, error_answer
from connectors.sap.sandbox_schema import ENTITIES, SERVICES, EntityDef, edmx
from connectors.sap.sandbox_seed import SEED_USER, seed
from connectors.sap.sandbox_store import ODataError, Row, key_of, now_utc
from core.sandbox import SandboxServer

__all__ = ["PREFIX", "SandboxServer", "SapSandbox"]

PREFIX = "/sap/opu/odata/sap"
MODIFYING = {"POST", "PUT", "PATCH", "MERGE", "DELETE"}
METHODS = ["GET", "HEAD", *sorted(MODIFYING)]
TOKEN_SECONDS = 3600
REALM = 'Basic realm="SAP NetWeaver Application Server [SBX/100]"'


class SapSandbox:
    """SAP S/4HANA OData APIs in memory (SANDBOX). Thread-safe: served from its own thread."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        oauth_clients: Mapping[str, str] | None = None,
        oauth_user: str = "SB_COMM_USER",
        client: str = "100",
        sid: str = "SBX",
        clock: Callable[[], datetime] = now_utc,
        with_seed: bool = True,
        csrf_seconds: int = 1800,
    ) -> None:
        self.users = dict(users if users is not None else {"SWITCHYARD": "sandbox-password"})
        self.oauth_clients = dict(oauth_clients or {})
        self.oauth_user = oauth_user
        self.client, self.sid = client, sid
        self.clock = clock
        self.csrf_seconds = csrf_seconds
        self.services = Services(clock, self._changed)
        self.outbox = Outbox()
        self.subscriptions: list[Subscription] = []
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.csrf_fetches = self.csrf_refusals = self.token_requests = 0
        self._sessions: dict[str, tuple[str, datetime]] = {}  # session → (token, expiry)
        self._bearer: dict[str, datetime] = {}
        self._faults: deque[tuple[int, str]] = deque()
        self._lock = threading.RLock()
        if with_seed:
            seed(self.services)
        self.app = Starlette(
            routes=[
                Route("/oauth/token", self._oauth, methods=["POST"]),
                Route(PREFIX + "/{service}/", self._serve, methods=METHODS),
                Route(PREFIX + "/{service}/{resource:path}", self._serve, methods=METHODS),
            ]
        )

    # ------------------------------------------------------------ test handles

    @property
    def session_cookie(self) -> str:
        return f"SAP_SESSIONID_{self.sid}_{self.client}"

    def inject(self, status: int, times: int = 1, *, retry_after: str = "1") -> None:
        """The next ``times`` OData answers are ``status`` (429/503 carry Retry-After)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    def expire_csrf(self) -> None:
        """Every CSRF token handed out so far expires now (as when the session times out)."""
        with self._lock:
            self._sessions = {
                s: (t, datetime.min.replace(tzinfo=self.clock().tzinfo))
                for s, (t, _) in self._sessions.items()
            }

    def record(self, set_name: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.services.sets[set_name].rows.get(key)
            return dict(row.values) if row else None

    def rows(self, set_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r.values) for r in self.services.sets[set_name].rows.values()]

    def create(self, set_name: str, values: Mapping[str, Any], *, user: str = SEED_USER) -> str:
        """A record created in SAP by a person (queues a Created event)."""
        with self._lock:
            row = self.services.insert(set_name, values, user)
            return key_of(ENTITIES[set_name], row.values)

    def change(
        self, set_name: str, key: str, values: Mapping[str, Any], *, user: str = SEED_USER
    ) -> None:
        """A person changes a record in SAP (queues a Changed event)."""
        with self._lock:
            self.services.apply(set_name, key, values, user)

    def subscribe(self, url: str, secret: str) -> Subscription:
        subscription = Subscription(url, secret)
        self.subscriptions.append(subscription)
        return subscription

    async def deliver(self, client: httpx.AsyncClient | None = None) -> list[httpx.Response]:
        if client is not None:
            return await self.outbox.deliver(client)
        async with httpx.AsyncClient(timeout=10) as own:
            return await self.outbox.deliver(own)

    def _changed(self, entity: EntityDef, row: Row, user: str, created: bool) -> None:
        self.outbox.add(
            self.subscriptions, entity.set_name, row.values, user, created, self.clock()
        )

    # ------------------------------------------------------------ the gate

    def _user(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            expiry = self._bearer.get(value.strip())
            return self.oauth_user if expiry is not None and expiry > self.clock() else None
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self.users.get(user.upper())
        matches = known is not None and secrets.compare_digest(known.encode(), password.encode())
        return user.upper() if matches else None

    def _csrf(
        self, request: Request, method: str
    ) -> tuple[Answer | None, dict[str, str], str | None]:
        """(a refusal, headers to add, a new session cookie value)."""
        session = request.cookies.get(self.session_cookie)
        now = self.clock()
        if method in MODIFYING:
            held = self._sessions.get(session or "")
            presented = request.headers.get("x-csrf-token", "")
            if held is None or held[1] <= now or not secrets.compare_digest(held[0], presented):
                self.csrf_refusals += 1
                refusal = Answer(403, "CSRF token validation failed", {"x-csrf-token": "Required"})
                return refusal, {}, None
            return None, {}, None
        if request.headers.get("x-csrf-token", "").lower() != "fetch":
            return None, {}, None
        self.csrf_fetches += 1
        held = self._sessions.get(session or "")
        if held is not None and held[1] > now:
            return None, {"x-csrf-token": held[0]}, None
        session = secrets.token_hex(16)
        token = base64.b64encode(secrets.token_bytes(18)).decode()
        self._sessions[session] = (token, now + timedelta(seconds=self.csrf_seconds))
        return None, {"x-csrf-token": token}, session

    async def _serve(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.requests.append((request.method, request.url.path))
            if request.headers.get("sap-client", self.client) != self.client:
                return _plain(Answer(401, "Logon failed: unknown client"))
            user = self._user(request)
            if user is None:
                return _plain(
                    Answer(401, "Logon failed"),
                    {"www-authenticate": REALM},
                )
            if self._faults:
                status, retry_after = self._faults.popleft()
                answer = error_answer(
                    ODataError(
                        status,
                        "/IWFND/CM_BEC/026",
                        "SANDBOX fault: try again later"
                        if status in (429, 503)
                        else "SANDBOX fault",
                    )
                )
                return _plain(answer, {"retry-after": retry_after} if status in (429, 503) else {})
            service = request.path_params["service"]
            resource = request.path_params.get("resource", "")
            if service not in SERVICES:
                return _plain(
                    error_answer(
                        ODataError(
                            404,
                            "/IWFND/MED/170",
                            f"No service found for namespace '', name '{service}', version '0001'",
                        )
                    )
                )
            refusal, extra, session = self._csrf(request, request.method.upper())
            if refusal is not None:
                return _plain(refusal)
            response = self._answer(request, service, resource, body, user)
            response.headers.update(extra)
            if session is not None:
                response.set_cookie(self.session_cookie, session, path="/", httponly=True)
                response.set_cookie(
                    f"sap-XSRF_{self.sid}_{self.client}",
                    secrets.token_hex(8),
                    path="/sap/opu/odata/",
                )
            return response

    def _answer(
        self, request: Request, service: str, resource: str, body: bytes, user: str
    ) -> Response:
        if resource == "":
            sets = [e.set_name for e in SERVICES[service]]
            return JSONResponse({"d": {"EntitySets": sets}})
        if resource == "$metadata":
            return Response(edmx(service), media_type="application/xml")
        call = Call(
            request.method.upper(),
            service,
            resource,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            user,
            f"{str(request.base_url).rstrip('/')}{PREFIX}/{service}",
        )
        if resource == "$batch":
            if request.method.upper() != "POST":
                return _plain(
                    error_answer(ODataError(405, "/IWBEP/CM_MGW_RT/003", "$batch needs POST"))
                )
            if not call.headers.get("content-type", "").lower().startswith("multipart/mixed"):
                return _plain(
                    error_answer(
                        ODataError(
                            415, "/IWBEP/CM_MGW_RT/010", "Content-Type must be multipart/mixed"
                        )
                    )
                )
            try:
                return _plain(run_batch(self.services, call))
            except ODataError as exc:
                return _plain(error_answer(exc))
        return _plain(self.services.handle(call))

    # ------------------------------------------------------------ OAuth

    async def _oauth(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        with self._lock:
            self.token_requests += 1
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            try:
                client_id, _, secret = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id, secret = "", ""
            known = self.oauth_clients.get(client_id)
            if (
                scheme.lower() != "basic"
                or known is None
                or not secrets.compare_digest(known, secret)
            ):
                return JSONResponse(
                    {"error": "unauthorized", "error_description": "Bad credentials"}, 401
                )
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            token = secrets.token_urlsafe(24)
            self._bearer[token] = self.clock() + timedelta(seconds=TOKEN_SECONDS)
            return JSONResponse(
                {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_SECONDS}
            )

    def expire_tokens(self) -> None:
        with self._lock:
            self._bearer = dict.fromkeys(self._bearer, self.clock() - timedelta(seconds=1))


def _plain(answer: Answer, extra: Mapping[str, str] | None = None) -> Response:
    headers = dict(answer.headers) | dict(extra or {})
    if answer.body is None:
        return Response(status_code=answer.status, headers=headers)
    if isinstance(answer.body, str):
        media = headers.pop("content-type", "text/plain")
        return Response(answer.body, answer.status, headers=headers, media_type=media)
    return JSONResponse(answer.body, answer.status, headers=headers)
