"""The SANDBOX's HTTP face: Starlette routes over an :class:`AnthropicSandbox`.

Every route goes through one wrapper that checks the API key (``x-api-key`` or
``Authorization: Bearer``; else 401) and the ``anthropic-version`` header (else 400),
turns an :class:`~core.sandbox.anthropic.errors.ApiError` into the API's error body, and
puts ``request-id`` and the ``anthropic-ratelimit-*`` headers (of the request's model, or the
sandbox's default model) on every response. Bodies over 32 MB (256 MB for batch create)
are answered 413 ``request_too_large``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from core.sandbox.anthropic.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
)
from core.sandbox.anthropic.listing import page
from core.sandbox.anthropic.messages import parse_json
from core.sandbox.anthropic.ratelimit import RawHeaders

if TYPE_CHECKING:
    from core.sandbox.anthropic.sandbox import AnthropicSandbox

MAX_BODY = 32 * 1024 * 1024
MAX_BATCH_BODY = 256 * 1024 * 1024
MODEL_LINES = frozenset({"haiku", "sonnet", "opus", "fable", "mythos"})


class Call:
    """One request as the handlers see it; ``model`` picks the rate-limit headers."""

    __slots__ = ("api_key", "model", "request")

    def __init__(self, request: Request, api_key: str) -> None:
        self.request = request
        self.api_key = api_key
        self.model: str | None = None


Handler = Callable[[Call], Awaitable[Response]]


def json_response(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 once it passes ``limit`` (the rest is read and dropped)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) <= limit:
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise RequestTooLarge(f"Request exceeds the maximum allowed size of {limit} bytes.")
    return b"".join(chunks)


def _api_key(request: Request, keys: frozenset[str]) -> str:
    headers = request.headers
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if key is None or key not in keys:
        raise AuthenticationFailed("invalid x-api-key")
    if "anthropic-version" not in headers:
        raise InvalidRequest("anthropic-version: header is required")
    return key


def _model_json(model_id: str, display_name: str, created: datetime, line: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "line": line if line in MODEL_LINES else None,
    }


def create_app(sandbox: AnthropicSandbox) -> Starlette:
    """The ASGI app serving ``sandbox`` (SANDBOX)."""
    models = sorted(
        (
            _model_json(
                m.id,
                m.display_name,
                datetime(m.created_at.year, m.created_at.month, m.created_at.day),
                m.family,
            )
            for m in sandbox.catalog
        ),
        key=lambda item: (item["created_at"], item["id"]),
        reverse=True,
    )
    models_by_id = {item["id"]: item for item in models}

    def finish(
        response: Response, request_id: str, extra: RawHeaders, model: str | None
    ) -> Response:
        headers = response.raw_headers
        headers.append((b"request-id", request_id.encode()))
        headers.extend(extra)
        headers.extend(sandbox.ratelimit_headers(model))
        sandbox.stats.responses[response.status_code] += 1
        return response

    def error_response(error: ApiError, request_id: str, model: str | None) -> Response:
        response = json_response(error.body(request_id), error.status)
        extra = [(k.encode(), v.encode()) for k, v in error.headers.items()]
        return finish(response, request_id, extra, model)

    def route(path: str, handler: Handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            sandbox.stats.requests += 1
            request_id = sandbox.new_id("req_")
            call: Call | None = None
            try:
                call = Call(request, _api_key(request, sandbox.api_keys))
                return finish(await handler(call), request_id, [], call.model)
            except ApiError as error:
                return error_response(error, request_id, call.model if call else None)

        return Route(path, endpoint, methods=[method])

    async def messages(call: Call) -> Response:
        body = parse_json(await read_body(call.request, MAX_BODY))
        model_id = body.get("model")
        if isinstance(model_id, str) and model_id in sandbox.limits:
            call.model = model_id
        if body.get("stream") is True:
            response = StreamingResponse(
                sandbox.stream(call.api_key, body), media_type="text/event-stream"
            )
            response.raw_headers.append((b"cache-control", b"no-cache"))
            return response
        return json_response(await sandbox.complete(call.api_key, body))

    async def count(call: Call) -> Response:
        body = parse_json(await read_body(call.request, MAX_BODY))
        model_id = body.get("model")
        if isinstance(model_id, str) and model_id in sandbox.limits:
            call.model = model_id
        return json_response(sandbox.count_tokens(body))

    async def list_models(call: Call) -> Response:
        return json_response(orjson.dumps(page(models, call.request.query_params)))

    async def get_model(call: Call) -> Response:
        model_id = call.request.path_params["model_id"]
        if model_id not in models_by_id:
            raise NotFound(f"model: {model_id}")
        call.model = model_id
        return json_response(orjson.dumps(models_by_id[model_id]))

    async def create_batch(call: Call) -> Response:
        body = parse_json(await read_body(call.request, MAX_BATCH_BODY))
        results_base = str(call.request.base_url).rstrip("/") + "/v1/messages/batches"
        batch = sandbox.batches.create(call.api_key, body, results_base)
        return json_response(orjson.dumps(batch.to_json()))

    async def list_batches(call: Call) -> Response:
        return json_response(orjson.dumps(sandbox.batches.listing(call.request.query_params)))

    async def get_batch(call: Call) -> Response:
        batch = sandbox.batches.get(call.request.path_params["batch_id"])
        return json_response(orjson.dumps(batch.to_json()))

    async def cancel_batch(call: Call) -> Response:
        batch = sandbox.batches.cancel(call.request.path_params["batch_id"])
        return json_response(orjson.dumps(batch.to_json()))

    async def delete_batch(call: Call) -> Response:
        deleted = sandbox.batches.delete(call.request.path_params["batch_id"])
        return json_response(orjson.dumps(deleted))

    async def batch_results(call: Call) -> Response:
        batch_id = call.request.path_params["batch_id"]
        lines = sandbox.batches.results(batch_id)
        disposition = f"attachment; filename*=utf-8''{batch_id}_results.jsonl"
        return Response(
            lines, media_type="application/x-jsonl", headers={"content-disposition": disposition}
        )

    async def unrouted(request: Request, exc: Exception) -> Response:
        sandbox.stats.requests += 1
        error: ApiError = NotFound(f"{request.method} {request.url.path} is not an endpoint")
        if getattr(exc, "status_code", 404) == 405:
            error = InvalidRequest(f"{request.method} is not allowed on {request.url.path}")
        return error_response(error, sandbox.new_id("req_"), None)

    batch = "/v1/messages/batches/{batch_id}"
    return Starlette(
        exception_handlers={404: unrouted, 405: unrouted},
        routes=[
            route("/v1/messages", messages, "POST"),
            route("/v1/messages/count_tokens", count, "POST"),
            route("/v1/messages/batches", create_batch, "POST"),
            route("/v1/messages/batches", list_batches, "GET"),
            route(batch, get_batch, "GET"),
            route(batch, delete_batch, "DELETE"),
            route(batch + "/cancel", cancel_batch, "POST"),
            route(batch + "/results", batch_results, "GET"),
            route("/v1/models", list_models, "GET"),
            route("/v1/models/{model_id:path}", get_model, "GET"),
        ],
    )
