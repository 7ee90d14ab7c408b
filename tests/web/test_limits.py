"""The body-limit middleware on its own: which limit applies, 413 before reading a declared
oversize body, and a streamed body cut off where it crosses the limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from core.web.limits import BodyLimitMiddleware

HOOK_LIMIT, API_LIMIT = 100, 10


class EchoApp:
    """Reads the whole body and answers its length; records what it saw."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def _client(app: EchoApp) -> httpx.AsyncClient:
    limited = BodyLimitMiddleware(app, hook_max_bytes=HOOK_LIMIT, api_max_bytes=API_LIMIT)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t")


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(
    ("path", "limit"), [("/hooks/con_1", HOOK_LIMIT), ("/v1/connections", API_LIMIT)]
)
async def test_each_path_gets_its_limit(path: str, limit: int) -> None:
    app = EchoApp()
    async with _client(app) as client:
        at_limit = await client.post(path, content=b"x" * limit)
        over = await client.post(path, content=b"x" * (limit + 1))
    assert (at_limit.status_code, at_limit.text) == (200, str(limit))
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/problem+json"
    assert json.loads(over.text)["type"] == "/problems/payload-too-large"


async def test_declared_oversize_is_answered_before_the_body_is_read() -> None:
    app = EchoApp()
    received: list[Message] = []

    async def receive() -> Message:
        received.append({})
        raise AssertionError("the body must not be read")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    limited = BodyLimitMiddleware(app, hook_max_bytes=HOOK_LIMIT, api_max_bytes=API_LIMIT)
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/hooks/con_1",
        "headers": [(b"content-length", b"101")],
    }
    await limited(scope, receive, send)

    assert app.calls == 0
    assert received == []
    assert sent[0]["status"] == 413


async def test_streamed_body_is_cut_off_where_it_crosses_the_limit() -> None:
    app = EchoApp()
    async with _client(app) as client:
        under = await client.post("/v1/x", content=_stream(b"x" * 5, b"x" * 5))
        over = await client.post("/v1/x", content=_stream(b"x" * 6, b"x" * 6, b"x" * 6))
    assert (under.status_code, under.text) == (200, "10")
    assert over.status_code == 413
    assert json.loads(over.text)["detail"].startswith("the body is more than 10 bytes")


async def test_the_apps_own_answer_to_the_failed_read_is_replaced() -> None:
    """Frameworks turn a failing body read into their own error (FastAPI: a 400)."""

    async def swallowing_app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receive()
            await receive()
        except Exception:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad body"})

    limited = BodyLimitMiddleware(swallowing_app, hook_max_bytes=1, api_max_bytes=1)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/v1/x", content=_stream(b"ab", b"cd"))
    assert response.status_code == 413
