"""SANDBOX — a local stand-in for a Salesforce org, for demo mode, tests and benchmarks.

Nothing here talks to Salesforce. It speaks the real wire format closely enough that
simple-salesforce works against it unchanged (serve it over TLS, :mod:`.sandbox_tls`):

* ``POST /services/oauth2/token``: :mod:`.sandbox_oauth`.
* ``/services/data/vXX.X/``: ``sobjects/{Object}/{Id}`` (GET ``?fields=``, PATCH → 204 with
  ``If-Unmodified-Since`` → 412), ``sobjects/{Object}/`` (POST), upsert
  ``sobjects/{Object}/{ExtIdField}/{value}`` (201 ``created:true`` / 200 ``created:false``
  / 300), ``sobjects/{Object}/describe``, ``query/?q=`` with ``nextRecordsUrl`` paging
  (``page_size`` rows a page), ``composite/sobjects`` (PATCH, ≤ 200, HTTP 200 with
  per-item ``errors[].statusCode``), ``limits/``, and the User Interface API's
  ``ui-api/object-info/{Object}/picklist-values/{RecordTypeId}`` (404 ``NOT_FOUND`` for a
  record type the object lacks). Saves assign the default record type and refuse a
  restricted picklist value the record's type does not take (Case's *Billing* type,
  :mod:`.sandbox_seed`) with 400 ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``.
* Every REST answer carries ``Sforce-Limit-Info: api-usage=N/M``; errors are the JSON array
  ``[{"message", "errorCode", "fields"}]``; past the allocation: 403
  ``REQUEST_LIMIT_EXCEEDED``; an unknown token: 401 ``INVALID_SESSION_ID``.
* Fault injection: :meth:`SalesforceSandbox.fail_next` (403 limit, UNABLE_TO_LOCK_ROW,
  5xx, a delay), :meth:`expire_sessions`, :meth:`lock_record`, validation rules.
* Outbound Messages: :meth:`add_outbound_rule` queues a notification whenever a record of
  the object is saved; :meth:`deliver_outbound` POSTs the SOAP envelope and keeps what
  was not acknowledged with the exact Ack (:mod:`.sandbox_outbound`).
* What happened, for assertions: ``requests`` (every authenticated REST call, faulted or
  not), ``writes`` (every save the API applied), ``token_requests``, ``deliveries`` and
  ``delivered`` (the acknowledged notifications, as sent).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.salesforce import sandbox_outbound
from connectors.salesforce.sandbox_oauth import TokenEndpoint
from connectors.salesforce.sandbox_seed import DESCRIBE, RECORD_TYPE_VALUES, SEED
from connectors.salesforce.sandbox_store import OrgStore, SfError, to_18

__all__ = ["INTEGRATION_USER", "ORG_ID", "SalesforceSandbox"]

ORG_ID = "00D5g000004SbxQEAS"
INTEGRATION_USER = "0055g00000AbCdEAAR"
HUMAN_USER = "0055g00000XyZwVAAV"
USERNAME = "switchyard@acme.example"
CLIENT_ID = "3MVG9sandbox.consumer.key"
# Sandbox-only credentials, printed by the demo; they open nothing but this sandbox.
CLIENT_SECRET = "sandbox-consumer-secret"  # noqa: S105
PASSWORD = "sandbox-password"  # noqa: S105
SECURITY_TOKEN = "SANDBOXTOKEN"  # noqa: S105


@dataclass
class _Fault:
    status: int
    code: str
    message: str
    delay: float = 0.0
    methods: frozenset[str] = frozenset({"GET", "POST", "PATCH", "DELETE"})


_FAULTS = {
    "REQUEST_LIMIT_EXCEEDED": (403, "TotalRequests Limit exceeded."),
    "UNABLE_TO_LOCK_ROW": (400, "unable to obtain exclusive access to this record"),
    "SERVER_UNAVAILABLE": (503, "Server temporarily unavailable"),
    "UNKNOWN_EXCEPTION": (
        500,
        "An unexpected error occurred. Please include this ErrorId if you contact support: "
        "1893470231-38912 (-1306234811)",
    ),
}


def _errors(error: SfError, usage: str) -> JSONResponse:
    body = [{"message": error.message, "errorCode": error.code, "fields": error.fields}]
    return JSONResponse(body, error.status, headers={"Sforce-Limit-Info": usage})


class SalesforceSandbox:
    """An in-memory Salesforce org (SANDBOX). Serve ``app`` with ``TlsSandboxServer``."""

    label = "Salesforce org (SANDBOX)"

    def __init__(
        self,
        *,
        organization_id: str = ORG_ID,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        jwt_certificate: str | None = None,
        username: str = USERNAME,
        password: str = PASSWORD,
        security_token: str = SECURITY_TOKEN,
        user_id: str = INTEGRATION_USER,
        page_size: int = 2000,
        api_limit: int = 100_000,
        seed: Mapping[str, list[dict[str, Any]]] | None = SEED,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.organization_id = organization_id
        self.username, self.user_id = username, user_id
        self.oauth = TokenEndpoint(
            organization_id=organization_id,
            client_id=client_id,
            client_secret=client_secret,
            jwt_certificate=jwt_certificate,
            username=username,
            password=password + security_token,
            user_id=user_id,
        )
        self.page_size = page_size
        self.api_used, self.api_limit = 0, api_limit
        self.store = OrgStore(
            DESCRIBE, org_id=organization_id, clock=clock, record_type_values=RECORD_TYPE_VALUES
        )
        self.store.listeners.append(self._queue_notifications)
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._locked: dict[str, int] = {}
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._outbound: list[tuple[str, str, list[str]]] = []  # (object, endpoint, fields)
        self._pending: dict[str, list[tuple[str, str, str]]] = {}  # endpoint → (nid, obj, id)
        self._serial = itertools.count(1)
        self.requests: list[tuple[str, str]] = []  # (method, path) of REST calls
        # (object, id, fields) of every save an API call applied; faulted calls add nothing
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.deliveries: list[tuple[int, bool]] = []  # (HTTP status, acknowledged)
        self.delivered: list[sandbox_outbound.Notification] = []  # acknowledged, as sent
        for object_name, records in (seed or {}).items():
            for values in records:
                self.store.insert(object_name, values, HUMAN_USER)
        self.app = Starlette(
            routes=[
                Route("/services/oauth2/token", self.oauth.token, methods=["POST"]),
                Route(
                    "/services/data/{version}/{rest:path}",
                    self._rest,
                    methods=["GET", "POST", "PATCH", "DELETE"],
                ),
            ]
        )

    @property
    def token_requests(self) -> int:
        return self.oauth.requests

    # ------------------------------------------------------------ test controls

    def fail_next(
        self,
        code: str,
        times: int = 1,
        *,
        delay: float = 0.0,
        methods: tuple[str, ...] = ("GET", "POST", "PATCH", "DELETE"),
    ) -> None:
        """The next ``times`` REST calls answer ``code`` (a key of the fault table, or
        ``"SLOW"`` to answer normally after ``delay`` seconds)."""
        status, message = _FAULTS.get(code, (200, ""))
        with self._lock:
            self._faults += [_Fault(status, code, message, delay, frozenset(methods))] * times

    def expire_sessions(self) -> None:
        """Every issued access token stops working (401 INVALID_SESSION_ID)."""
        with self._lock:
            self.oauth.expire_all()

    def lock_record(self, record_id: str, times: int = 1) -> None:
        """The next ``times`` saves of the record fail with UNABLE_TO_LOCK_ROW."""
        with self._lock:
            self._locked[record_id] = self._locked.get(record_id, 0) + times

    def add_validation_rule(
        self,
        object_name: str,
        message: str,
        broken: Callable[[Mapping[str, Any]], bool],
        field: str | None = None,
    ) -> None:
        from connectors.salesforce.sandbox_store import ValidationRule

        self.store.rules.append(ValidationRule(object_name, message, field, broken))

    def change(self, object_name: str, record_id: str, **values: Any) -> None:
        """A person edits the record in Salesforce (not the integration user)."""
        self.store.update(object_name, record_id, values, HUMAN_USER)

    def create(self, object_name: str, **values: Any) -> str:
        return self.store.insert(object_name, values, HUMAN_USER)

    def record(self, object_name: str, record_id: str) -> dict[str, Any]:
        return self.store.get(object_name, record_id)

    def ids(self, object_name: str) -> list[str]:
        with self.store.lock:
            return list(self.store.records[object_name])

    # ------------------------------------------------------------ outbound messages

    def add_outbound_rule(self, object_name: str, endpoint: str, fields: list[str]) -> None:
        """Like a rule "created, and every time it's edited" with an outbound message."""
        with self._lock:
            self._outbound.append((object_name, endpoint, ["Id", *fields]))

    def _queue_notifications(self, object_name: str, record_id: str) -> None:
        with self._lock:
            for rule_object, endpoint, _ in self._outbound:
                if rule_object == object_name:
                    nid = to_18(f"04l5g{next(self._serial):010d}")
                    self._pending.setdefault(endpoint, []).append((nid, object_name, record_id))

    def pending_notifications(self) -> int:
        with self._lock:
            return sum(len(items) for items in self._pending.values())

    async def deliver_outbound(self, client: httpx.AsyncClient, instance_url: str = "") -> int:
        """Send the queued notifications (≤ 100 a message, current field values, as
        Salesforce does); returns how many were acknowledged. Unacknowledged ones stay."""
        acknowledged = 0
        with self._lock:
            batches = {endpoint: list(items) for endpoint, items in self._pending.items()}
            fields_of = {(o, e): f for o, e, f in self._outbound}
        for endpoint, items in batches.items():
            for start in range(0, len(items), sandbox_outbound.MAX_PER_MESSAGE):
                chunk = items[start : start + sandbox_outbound.MAX_PER_MESSAGE]
                for object_name in dict.fromkeys(obj for _, obj, _ in chunk):
                    same = [item for item in chunk if item[1] == object_name]
                    acknowledged += await self._send(
                        client, endpoint, same, fields_of[(object_name, endpoint)], instance_url
                    )
        return acknowledged

    async def _send(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        items: list[tuple[str, str, str]],
        fields: list[str],
        instance_url: str,
    ) -> int:
        notes = []
        for nid, object_name, record_id in items:
            record = self.store.get(object_name, record_id)
            notes.append(
                sandbox_outbound.Notification(nid, object_name, {f: record.get(f) for f in fields})
            )
        body = sandbox_outbound.envelope(
            self.organization_id, "04k5g000000AbCdAAK", instance_url, "59.0", notes
        )
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        response = await client.post(endpoint, content=body, headers=headers)
        acked = sandbox_outbound.is_ack(response.status_code, response.content)
        self.deliveries.append((response.status_code, acked))
        if acked:
            with self._lock:
                self._pending[endpoint] = [i for i in self._pending[endpoint] if i not in items]
                self.delivered += notes
        return len(items) if acked else 0

    # -------------------------------------------------------------------- REST

    def _usage(self) -> str:
        return f"api-usage={self.api_used}/{self.api_limit}"

    async def _rest(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            if scheme.lower() != "bearer" or not self.oauth.valid(token):
                return _errors(
                    SfError(401, "INVALID_SESSION_ID", "Session expired or invalid"), self._usage()
                )
            self.api_used += 1
            self.requests.append((request.method, request.url.path))
            over = self.api_used > self.api_limit
            fault = next((f for f in self._faults if request.method in f.methods), None)
            if fault is not None:
                self._faults.remove(fault)
        if over:
            error = SfError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            return _errors(error, self._usage())
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status != 200:
                return _errors(SfError(fault.status, fault.code, fault.message), self._usage())
        from connectors.salesforce.sandbox_rest import handle

        try:
            status, body = handle(
                self,
                request.method,
                request.path_params["version"],
                request.path_params["rest"],
                dict(request.query_params),
                await request.body(),
                {k.lower(): v for k, v in request.headers.items()},
            )
        except SfError as error:
            return _errors(error, self._usage())
        headers = {"Sforce-Limit-Info": self._usage()}
        if status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(body, status, headers=headers)

    def wrote(self, object_name: str, record_id: str, values: Mapping[str, Any]) -> None:
        """Note a save the REST API applied (``writes``)."""
        with self._lock:
            self.writes.append((object_name, record_id, dict(values)))

    def take_lock(self, record_id: str) -> None:
        with self._lock:
            if self._locked.get(record_id, 0) > 0:
                self._locked[record_id] -= 1
                raise SfError(400, "UNABLE_TO_LOCK_ROW", _FAULTS["UNABLE_TO_LOCK_ROW"][1])

    def page(
        self,
        version: str,
        object_name: str,
        rows: list[dict[str, Any]],
        start: int,
        locator: str | None = None,
    ) -> dict[str, Any]:
        """One page of query results; the rest stays behind a ``nextRecordsUrl``."""
        shown = [
            {
                "attributes": {
                    "type": object_name,
                    "url": f"/services/data/{version}/sobjects/{object_name}/{r['Id']}",
                },
                **r,
            }
            for r in rows[start : start + self.page_size]
        ]
        answer: dict[str, Any] = {"totalSize": len(rows), "done": True, "records": shown}
        end = start + self.page_size
        if end < len(rows):
            locator = locator or f"01g5g{secrets.token_hex(5)}"
            with self._lock:
                self._cursors[locator] = rows
            answer["done"] = False
            answer["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return answer

    def cursor(self, locator: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._cursors.get(locator)
        if rows is None:
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return rows


def http_date(value: str) -> datetime:
    try:
        return parsedate_to_datetime(unquote(value))
    except (TypeError, ValueError):
        raise SfError(400, "BAD_REQUEST", f"invalid If-Unmodified-Since: {value}") from None


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise SfError(400, "JSON_PARSER_ERROR", "Unexpected character in JSON body") from None
