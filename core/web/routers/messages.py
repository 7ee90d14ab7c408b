"""Anthropic-compatible ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Point the official SDK at Switchyard (``base_url``) with a tenant key in ``x-api-key`` (or
``Authorization: Bearer``): same request and response bodies, streaming with the same event
sequence. Switchyard adds, as request headers:

* ``x-switchyard-task: classify|extract|summarize|reason|write|hard`` — routes ``model: "auto"``
  (or no model) to the smallest adequate tier, and picks a default ``max_tokens``;
* ``x-switchyard-feature: NAME`` — the feature costs are attributed to (default ``api``);
* ``x-switchyard-priority: interactive|background`` (default interactive);
* ``x-switchyard-cache: off`` (no dedup, no response cache) or ``on`` (response cache even
  without ``temperature: 0``); ``x-switchyard-compress: on`` to compress reference documents.

Every response carries ``x-switchyard-trace-id``; errors use the Anthropic error body
(:mod:`core.web.anthropic_errors`). The route reads the raw body (no pydantic model): the
gateway forwards unknown fields unchanged and validates only what it needs.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from core.auth import Principal
from core.db.models import Role
from core.errors import Forbidden, InvalidRequest, SwitchyardError, Unauthenticated
from core.gateway.admission import Priority
from core.gateway.calls import CallOptions
from core.gateway.gateway import Gateway
from core.gateway.records import CallRecord
from core.gateway.streaming import MEDIA_TYPE as SSE_MEDIA_TYPE
from core.gateway.streaming import GatewayStream
from core.logging import get_logger
from core.services import Services
from core.web.anthropic_errors import error_response
from core.web.deps import get_trace_id

router = APIRouter(tags=["messages"])
log = get_logger(__name__)

ALLOWED_ROLES = frozenset({Role.ADMIN, Role.SERVICE})
_PRIORITIES = {"interactive": Priority.INTERACTIVE, "background": Priority.BACKGROUND}
_REQUEST_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "An Anthropic Messages API request body; `model` may be "
                    '"auto" with an `x-switchyard-task` header.',
                }
            }
        },
    }
}


def _presented_key(request: Request) -> str:
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    raise Unauthenticated("send the API key as `x-api-key: KEY` or `Authorization: Bearer KEY`")


async def _caller(request: Request, services: Services) -> Principal:
    principal = await services.keys.authenticate(_presented_key(request))
    if principal.role not in ALLOWED_ROLES:
        raise Forbidden(f"the Messages API needs the admin or service role, not {principal.role}")
    return principal


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _options(request: Request, principal: Principal, trace_id: str) -> CallOptions:
    headers = request.headers
    priority = headers.get("x-switchyard-priority", "interactive").lower()
    if priority not in _PRIORITIES:
        raise InvalidRequest("x-switchyard-priority must be `interactive` or `background`")
    cache = headers.get("x-switchyard-cache", "").lower()
    if cache not in ("", "on", "off"):
        raise InvalidRequest("x-switchyard-cache must be `on` or `off`")
    compress = headers.get("x-switchyard-compress", "").lower()
    return CallOptions(
        tenant_id=principal.tenant_id,
        trace_id=trace_id,
        feature=headers.get("x-switchyard-feature", "api")[:100] or "api",
        api_key_id=principal.key_id,
        task=headers.get("x-switchyard-task") or None,
        priority=_PRIORITIES[priority],
        headers={k: v for k, v in headers.items() if k.startswith("anthropic-")},
        cache_response=cache == "on",
        no_cache=cache == "off",
        compress=True if compress == "on" else False if compress == "off" else None,
    )


@router.post(
    "/v1/messages",
    summary="Create a message (Anthropic-compatible, streaming with `stream: true`)",
    openapi_extra=_REQUEST_BODY_DOC,
)
async def create_message(request: Request) -> Response:
    trace_id = get_trace_id(request)
    services: Services = request.app.state.services
    gateway: Gateway = services.gateway
    try:
        principal = await _caller(request, services)
        body = await _body(request)
        options = _options(request, principal, trace_id)
        if body.get("stream"):
            stream = await gateway.stream(body, options)
            headers = _headers(trace_id, stream.record.model, stream.upstream_request_id)
            headers["x-switchyard-cache"] = _cache_state(stream.record)
            return _StreamedMessage(stream, headers)
        completion = await gateway.complete(body, options)
    except Exception as exc:
        return _failed(exc, trace_id)
    headers = _headers(trace_id, completion.record.model, completion.upstream_request_id)
    record = completion.record
    headers["x-switchyard-cache"] = _cache_state(record)
    headers["x-switchyard-cost-usd"] = f"{record.cost_picodollars / 10**12:.8f}"
    return Response(completion.body, 200, headers, media_type="application/json")


@router.post(
    "/v1/messages/count_tokens",
    summary="Count a request's input tokens (Anthropic-compatible)",
    openapi_extra=_REQUEST_BODY_DOC,
)
async def count_tokens(request: Request) -> Response:
    trace_id = get_trace_id(request)
    services: Services = request.app.state.services
    try:
        principal = await _caller(request, services)
        body = await _body(request)
        answer = await services.gateway.count_tokens(body, _options(request, principal, trace_id))
    except Exception as exc:
        return error_response(exc, trace_id)
    headers = _headers(trace_id, None, answer.request_id)
    return Response(answer.body, answer.status, headers, media_type="application/json")


class _StreamedMessage(StreamingResponse):
    """SSE passthrough that closes the upstream even if the body is never iterated."""

    def __init__(self, stream: GatewayStream, headers: dict[str, str]) -> None:
        super().__init__(aiter(stream), media_type=SSE_MEDIA_TYPE, headers=headers)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.abandon()


def _cache_state(record: CallRecord) -> str:
    return "hit" if record.cache_hit else "dedup" if record.dedup_hit else "miss"


def _failed(exc: Exception, trace_id: str) -> Response:
    """Every failure in the Anthropic error shape; only the unexpected ones are logged with
    a traceback (the expected ones are in the call record already)."""
    if not isinstance(exc, SwitchyardError):
        log.exception("unexpected error on the Messages API")
    return error_response(exc, trace_id)


def _headers(trace_id: str, model: str | None, upstream_request_id: str | None) -> dict[str, str]:
    headers = {"x-switchyard-trace-id": trace_id, "request-id": trace_id}
    if model:
        headers["x-switchyard-model"] = model
    if upstream_request_id:
        headers["x-switchyard-upstream-request-id"] = upstream_request_id
    return headers


# Served by core.web.direct ahead of the router (the gateway's hot path).
DIRECT_ROUTES = {
    ("POST", "/v1/messages"): create_message,
    ("POST", "/v1/messages/count_tokens"): count_tokens,
}
