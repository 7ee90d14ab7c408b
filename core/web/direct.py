"""Routes served without FastAPI's router: the Messages API, the gateway's hot path.

FastAPI matches a request against every route in turn and resolves dependencies for the
endpoint; for ``POST /v1/messages`` that was ~0.1 ms of CPU a call (profiled), a large
share of what the gateway adds. The Messages endpoints take a plain ``Request`` and answer
every error themselves, so this wrapper — inside the request context and body-limit
middleware, so trace ids, access logs and the 32 MB limit still apply — calls them
directly. They stay registered on the router too, for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
