"""SANDBOX — a local stand-in for "an internal tool", for demo mode, tests and benchmarks.

Nothing here talks to a real system. It plays both sides the ``webhook`` connector meets:

* :class:`RecordsSandbox` — the tool's JSON REST records API, in memory:

  - ``GET /{object}/{id}`` → 200 the record as a JSON object, with an ``ETag``
    (``?fields=a,b`` narrows it); 404 problem when absent.
  - ``PATCH /{object}/{id}`` with a JSON object → merges the fields, answers 200 with the
    record and its new ``ETag``. ``If-Match`` that is not the current ETag (or ``*``) →
    412. ``Idempotency-Key``: a key seen before answers the first result again without
    applying anything; the same key on a different request → 422.
  - optional bearer token (401 without it); :meth:`RecordsSandbox.fail_next` makes the
    next requests answer an error status (e.g. 503 with ``Retry-After``) to rehearse
    outages. Errors are ``application/problem+json``.

* the tool's event sender — :func:`make_event`, :func:`signed_delivery` (body bytes and the
  ``Switchyard-Signature`` header exactly as the connector verifies them) and
  :func:`send_events` (POSTs them to ``/hooks/{connection_id}``).

Serve it with :class:`core.sandbox.SandboxServer`::

    tool = RecordsSandbox({"ticket": {"T-1": {"status": "open"}}}, token="t0ken")
    with SandboxServer(tool.app) as server:
        config = {"base_url": server.url}   # a webhook connection's config
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import signing
from core.sandbox import SandboxServer

__all__ = [
    "DEMO_SEED",
    "RecordsSandbox",
    "SandboxServer",
    "make_event",
    "send_events",
    "signed_delivery",
]

IDEMPOTENCY_MEMORY = 10_000  # keys remembered; the oldest are forgotten first

DEMO_SEED: dict[str, dict[str, dict[str, Any]]] = {
    "ticket": {
        "T-1001": {
            "subject": "Invoice shows the wrong VAT rate",
            "body": "Our March invoice lists 19% VAT; we are registered in Austria (20%).",
            "status": "open",
            "priority": "normal",
            "category": None,
        },
        "T-1002": {
            "subject": "Cannot log in after password reset",
            "body": "The reset link works, but the new password is rejected at login.",
            "status": "open",
            "priority": "high",
            "category": None,
        },
    }
}


def _problem(status: int, title: str, detail: str, **headers: str) -> JSONResponse:
    slug = title.lower().replace(" ", "-")
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


@dataclass
class _Stored:
    fields: dict[str, Any]
    version: int

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'


@dataclass(frozen=True)
class _Remembered:
    fingerprint: str
    status: int
    body: bytes
    etag: str


class RecordsSandbox:
    """An in-memory records API (SANDBOX). Thread-safe: the server runs in its own thread."""

    def __init__(
        self,
        seed: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        *,
        token: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], _Stored] = {}
        self._remembered: OrderedDict[str, _Remembered] = OrderedDict()
        self._failures: list[tuple[int, float | None]] = []
        self._token = token
        self.applied: list[tuple[str, str, str | None]] = []  # (object, id, idempotency key)
        self.requests = 0
        for object_name, records in (seed or {}).items():
            for record_id, fields in records.items():
                self.put(object_name, record_id, fields)
        self.app: Starlette = Starlette(
            routes=[
                Route(
                    "/{object}/{record_id:path}",
                    self._endpoint,
                    methods=["GET", "PATCH"],
                )
            ]
        )

    # ----------------------------------------------------------- direct access

    def put(self, object_name: str, record_id: str, fields: Mapping[str, Any]) -> str:
        """Create or replace a record (as if changed inside the tool); returns its ETag."""
        with self._lock:
            old = self._records.get((object_name, record_id))
            stored = _Stored(dict(fields), old.version + 1 if old else 1)
            self._records[(object_name, record_id)] = stored
            return stored.etag

    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._records.get((object_name, record_id))
            return dict(stored.fields) if stored else None

    def etag(self, object_name: str, record_id: str) -> str | None:
        with self._lock:
            stored = self._records.get((object_name, record_id))
            return stored.etag if stored else None

    def fail_next(self, status: int, times: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (an outage rehearsal)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    # ------------------------------------------------------------------- HTTP

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self._token.encode()
        )

    async def _endpoint(self, request: Request) -> Response:
        object_name = request.path_params["object"]
        record_id = request.path_params["record_id"]
        body = await request.body()
        with self._lock:
            # Whole request under the lock: check-then-write must not interleave.
            self.requests += 1
            if not self._authorized(request):
                return _problem(
                    401, "Unauthorized", "send Authorization: Bearer <token>",
                    **{"WWW-Authenticate": 'Bearer realm="sandbox"'},
                )  # fmt: skip
            if self._failures:
                status, retry_after = self._failures.pop(0)
                extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
                return _problem(status, "Injected failure", "sandbox fail_next()", **extra)
            if request.method == "GET":
                return self._read(request, object_name, record_id)
            return self._patch(request, object_name, record_id, body)

    def _read(self, request: Request, object_name: str, record_id: str) -> Response:
        stored = self._records.get((object_name, record_id))
        if stored is None:
            return _problem(404, "Not found", f"no {object_name} {record_id}")
        wanted = [f for f in request.query_params.get("fields", "").split(",") if f]
        fields = {k: v for k, v in stored.fields.items() if not wanted or k in wanted}
        return JSONResponse(fields, headers={"ETag": stored.etag})

    def _patch(self, request: Request, object_name: str, record_id: str, body: bytes) -> Response:
        key = request.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(
            f"PATCH {object_name}/{record_id}\n".encode() + body
        ).hexdigest()
        if key is not None and key in self._remembered:
            seen = self._remembered[key]
            if seen.fingerprint != fingerprint:
                return _problem(
                    422, "Idempotency key reused", f"key {key!r} was used for another request"
                )
            return Response(
                seen.body,
                seen.status,
                headers={"ETag": seen.etag, "Idempotent-Replayed": "true"},
                media_type="application/json",
            )
        try:
            changes = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            changes = None
        if not isinstance(changes, dict):
            return _problem(400, "Bad request", "the body must be a JSON object")
        stored = self._records.get((object_name, record_id))
        if stored is None:
            return _problem(404, "Not found", f"no {object_name} {record_id}")
        if_match = request.headers.get("if-match")
        if if_match is not None and if_match.strip() not in ("*", stored.etag):
            return _problem(
                412,
                "Precondition failed",
                f"{object_name} {record_id} is at {stored.etag}, not {if_match}",
            )
        stored.fields.update(changes)
        stored.version += 1
        self.applied.append((object_name, record_id, key))
        answer = json.dumps(stored.fields).encode()
        if key is not None:
            self._remembered[key] = _Remembered(fingerprint, 200, answer, stored.etag)
            while len(self._remembered) > IDEMPOTENCY_MEMORY:
                self._remembered.popitem(last=False)
        return Response(answer, 200, headers={"ETag": stored.etag}, media_type="application/json")


# ------------------------------------------------------------------- sender


def make_event(
    object_name: str,
    record_id: str,
    change: str = "updated",
    *,
    changed_fields: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """One event in the webhook connector's body format (a fresh id unless given)."""
    return {
        "id": event_id or f"evt_{secrets.token_hex(8)}",
        "object": object_name,
        "record_id": record_id,
        "type": change,
        "changed_fields": list(changed_fields),
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "data": dict(data or {}),
    }


def signed_delivery(
    secret: str, events: list[dict[str, Any]], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers a tool sends: ``{"events": [...]}`` signed with ``secret``."""
    body = json.dumps({"events": events}, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        signing.HEADER: signing.sign(secret, body, timestamp),
    }
    return body, headers


async def send_events(
    client: httpx.AsyncClient, hook_url: str, secret: str, events: list[dict[str, Any]]
) -> httpx.Response:
    """POST ``events`` signed to ``hook_url`` (``…/hooks/{connection_id}``); the response."""
    body, headers = signed_delivery(secret, events)
    return await client.post(hook_url, content=body, headers=headers)
