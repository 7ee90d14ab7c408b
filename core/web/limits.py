"""Request body limits, as pure ASGI middleware (no per-request task or body buffering).

``/hooks/…`` gets ``settings.hook_max_body_bytes``, the Anthropic-compatible
``/v1/messages…`` ``settings.gateway.max_body_bytes`` (answered in the Anthropic error
shape), everything else ``settings.api_max_body_bytes``.

* A declared ``Content-Length`` over the limit is answered 413 ``payload-too-large`` at
  once, before a byte of the body is read.
* A body without one (chunked) is counted while the app reads it; the read that crosses
  the limit raises :class:`~core.errors.PayloadTooLarge`. Whatever the app makes of that
  (FastAPI turns body-read failures into a 400, for instance) is discarded and the 413
  problem is sent instead, so the answer does not depend on who was reading.

Either way the request fails before the handler's transaction commits, so nothing is
stored.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import PayloadTooLarge
from core.web.anthropic_errors import error_response
from core.web.problems import problem_response

HOOKS_PREFIX = "/hooks/"
MESSAGES_PREFIX = "/v1/messages"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _too_large(scope: Scope, limit: int, size: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is {size} bytes; at most {limit} are accepted on {scope['path']}",
        limit=limit,
    )


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        hook_max_bytes: int,
        api_max_bytes: int,
        gateway_max_bytes: int = 32 * 2**20,  # the Messages API's own limit
    ) -> None:
        self.app = app
        self.hook_max_bytes = hook_max_bytes
        self.api_max_bytes = api_max_bytes
        self.gateway_max_bytes = gateway_max_bytes

    def _limit(self, path: str) -> int:
        if path.startswith(HOOKS_PREFIX):
            return self.hook_max_bytes
        if path.startswith(MESSAGES_PREFIX):
            return self.gateway_max_bytes
        return self.api_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self._limit(path)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._reject(scope, receive, send, _too_large(scope, limit, str(declared)))
            return

        received = 0
        exceeded: PayloadTooLarge | None = None
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = _too_large(scope, limit, f"more than {limit}")
                    raise exceeded
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded is not None:
                return  # our 413 replaces whatever the app answers to the failed read
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if exceeded is None:
                raise
        if exceeded is not None and not response_started:
            await self._reject(scope, receive, send, exceeded)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge) -> None:
        state: dict[str, Any] = scope.get("state", {})
        if scope["path"].startswith(MESSAGES_PREFIX):
            reply = error_response(error, state.get("trace_id") or "")
            reply.headers["connection"] = "close"
            await reply(scope, receive, send)
            return
        response = problem_response(
            error,
            instance=scope["path"],
            trace_id=state.get("trace_id"),
            # The rest of the body is not read, so the connection cannot be reused.
            headers={"connection": "close"},
        )
        await response(scope, receive, send)
