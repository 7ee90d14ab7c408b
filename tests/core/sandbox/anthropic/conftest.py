"""Fixtures for the Anthropic sandbox tests.

One uvicorn server for the whole session (starting one costs ~0.5 s) serves an
:class:`AppSlot`; each test installs a fresh :class:`AnthropicSandbox` in the slot, so tests
never share sandbox state. Time is a :class:`FakeClock` the test moves by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient
from starlette.types import ASGIApp, Receive, Scope, Send

from core.gateway.catalog import Catalog
from core.sandbox.anthropic import AnthropicSandbox, SandboxServer

KEY = "sk-ant-sandbox"
VERSION = "2023-06-01"
MODEL = "claude-sonnet-5-5"  # min_cacheable_tokens 1024, 3.0 chars per token
HEADERS = {"x-api-key": KEY, "anthropic-version": VERSION}


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AppSlot:
    """An ASGI app that forwards to whichever app the current test installed."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no sandbox installed"
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def served() -> Iterator[tuple[AppSlot, SandboxServer]]:
    slot = AppSlot()
    with SandboxServer(slot) as server:
        yield slot, server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sandbox(
    catalog: Catalog, clock: FakeClock, served: tuple[AppSlot, SandboxServer]
) -> Callable[..., AnthropicSandbox]:
    """Build a sandbox (latency 0, fake clock unless given) and put it behind the server."""

    def make(**options: Any) -> AnthropicSandbox:
        options.setdefault("latency_scale", 0)
        options.setdefault("clock", clock)
        sandbox = AnthropicSandbox(catalog, **options)
        served[0].app = sandbox.app
        return sandbox

    return make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., AnthropicSandbox]) -> AnthropicSandbox:
    return make_sandbox()


@pytest.fixture
def url(served: tuple[AppSlot, SandboxServer]) -> str:
    return served[1].url


def sdk(url: str, api_key: str = KEY) -> AsyncAnthropic:
    """The official client, no retries; plain HTTP, so no TLS context (that costs ~0.1 s)."""
    return AsyncAnthropic(
        base_url=url,
        api_key=api_key,
        max_retries=0,
        http_client=DefaultAsyncHttpxClient(verify=False),
    )


def raw_http(url: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers=HEADERS if headers is None else headers, timeout=30, verify=False
    )


@pytest.fixture
async def client(sandbox: AnthropicSandbox, url: str) -> AsyncIterator[AsyncAnthropic]:
    async with sdk(url) as anthropic:
        yield anthropic


@pytest.fixture
async def http(sandbox: AnthropicSandbox, url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with raw_http(url) as raw:
        yield raw


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of an SSE body, checking the wire format on the way."""
    import json

    events = []
    assert raw.endswith(b"\n\n")
    for chunk in raw.decode().split("\n\n")[:-1]:
        lines = chunk.split("\n")
        assert len(lines) == 2, chunk
        assert lines[0].startswith("event: "), chunk
        assert lines[1].startswith("data: "), chunk
        events.append((lines[0][7:], json.loads(lines[1][6:])))
    return events
