"""Fixtures for gateway tests that run calls against the Anthropic sandbox on a real socket,
with every request body the sandbox received kept (``recording.bodies``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from core.auth import create_tenant
from core.gateway.batching import LoopShare
from core.gateway.calls import CallOptions
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.services import Services, build_services
from core.settings import Settings
from tests.core.flows.conftest import Recording

EMAIL = "ada.lovelace@example.com"
# The sandbox fills a tool's input from its schema: an enum of one placeholder makes the
# "model" answer with the placeholder, as a real model quoting the redacted text would.
PICK = {
    "name": "pick",
    "input_schema": {
        "type": "object",
        "properties": {"who": {"type": "string", "enum": ["<EMAIL_1>"]}},
        "required": ["who"],
    },
}


def options(tenant_id: str, **extra: Any) -> CallOptions:
    return CallOptions(tenant_id=tenant_id, trace_id="t" * 32, task="classify", **extra)


def asking(text: str, **extra: Any) -> dict[str, Any]:
    """A call that makes the sandbox answer with the first email placeholder."""
    return {
        "model": "auto",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": text}],
        "tools": [PICK],
        "tool_choice": {"type": "tool", "name": "pick"},
        **extra,
    }


@pytest.fixture
def claude() -> AnthropicSandbox:
    return AnthropicSandbox(latency_scale=0, seed=4)


@pytest.fixture
def recording(claude: AnthropicSandbox) -> Recording:
    return Recording(claude.app)


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    """``GatewaySettings`` fields a test module changes (override this fixture)."""
    return {}


@pytest.fixture
async def claude_services(
    settings: Settings, recording: Recording, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Services]:
    with SandboxServer(recording) as upstream:
        built = build_services(
            settings.model_copy(
                update={
                    "anthropic_base_url": upstream.url,
                    "anthropic_api_key": SecretStr("sk-ant-sandbox"),
                    "gateway": settings.gateway.model_copy(update=gateway_overrides),
                }
            )
        )
        try:
            yield built
        finally:
            await built.aclose()


@pytest.fixture
async def acme(claude_services: Services) -> str:
    """A tenant's id."""
    async with claude_services.sessions.begin() as session:
        return (await create_tenant(session, "acme")).id


async def yield_every_time(self: LoopShare) -> None:
    """LoopShare's checkpoint with a zero slice: other tasks run after every item."""
    await asyncio.sleep(0)
