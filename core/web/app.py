"""The FastAPI app factory.

``create_app(services)`` builds the HTTP edge around services the caller owns (and
closes). Middleware, outermost first:

1. request context — a trace id per request (from a valid W3C ``traceparent``, else new),
   bound into structlog's contextvars with the tenant once known, returned as
   ``x-trace-id``; an exception no handler took becomes a logged 500 problem;
2. body limits (:mod:`core.web.limits`);
3. FastAPI's own exception middleware, where :mod:`core.web.problems` turns every
   error into an RFC 9457 problem.

``app.state.wake_worker`` is None unless the process runs a worker in-process; the CLI
sets it to the worker's wake so jobs created by a request start at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import structlog
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging import get_logger
from core.queue import new_trace_id
from core.services import Services
from core.web import problems
from core.web.direct import DirectRoutes
from core.web.docs import install_docs
from core.web.limits import BodyLimitMiddleware
from core.web.routers import (
    budgets,
    call_audit,
    connections,
    flows,
    health,
    hooks,
    jobs,
    messages,
    metrics,
    prompts,
    reviews,
    subscriptions,
    usage,
)

TRACE_HEADER = "x-trace-id"
DESCRIPTION = """\
Switchyard connects CRM and ERP systems to the Claude API.

* **Webhook ingress** — `POST /hooks/{connection_id}`: platforms deliver change events,
  authenticated by the platform's signature; acknowledged once durably stored.
* **API** — `/v1/...`, authenticated with a tenant API key sent as
  `Authorization: Bearer KEY` or `x-api-key: KEY`. Roles: `admin` does everything,
  `service` reads and replays jobs, `reviewer` reads.
* **Errors** — every error is `application/problem+json` (RFC 9457); `GET /problems`
  lists the types.
"""

# version-traceid-parentid-flags; version ff is invalid, all-zero ids are invalid.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")

log = get_logger(__name__)


def trace_id_from_traceparent(value: str | None) -> str | None:
    """The trace id of a valid W3C ``traceparent`` header, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    version_, trace_id, parent_id, _flags, rest = match.groups()
    if version_ == "ff" or (version_ == "00" and rest):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traceparent = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"traceparent"),
            None,
        )
        trace_id = trace_id_from_traceparent(traceparent) or new_trace_id()
        scope.setdefault("state", {})["trace_id"] = trace_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message).append(TRACE_HEADER, trace_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception:
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if response_started:
                raise  # too late to answer with a problem; the server drops the connection
            response = problems.internal_error_response(instance=scope["path"], trace_id=trace_id)
            await response(scope, receive, send_with_trace)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


def _version() -> str:
    try:
        return version("switchyard")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(services: Services) -> FastAPI:
    """The HTTP app around ``services``; the caller keeps ownership (and closes them)."""
    app = FastAPI(
        title="Switchyard",
        description=DESCRIPTION,
        version=_version(),
        docs_url=None,  # served by core.web.docs from bundled assets
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_docs(app)
    app.state.services = services
    wake: Callable[[], None] | None = None
    app.state.wake_worker = wake

    problems.install_problem_handlers(app)
    for module in (health, metrics, hooks, problems, messages):
        app.include_router(module.router)
    for module in (
        jobs,
        connections,
        flows,
        prompts,
        reviews,
        budgets,
        subscriptions,
        usage,
        call_audit,
    ):
        app.include_router(module.router, responses=problems.API_PROBLEMS)

    # Added innermost first: the request context must wrap the body limit's 413s, and
    # both must wrap the Messages API's direct routes.
    app.add_middleware(DirectRoutes, routes=messages.DIRECT_ROUTES)
    app.add_middleware(
        BodyLimitMiddleware,
        hook_max_bytes=services.settings.hook_max_body_bytes,
        api_max_bytes=services.settings.api_max_body_bytes,
        gateway_max_bytes=services.settings.gateway.max_body_bytes,
    )
    app.add_middleware(RequestContextMiddleware)
    return app
