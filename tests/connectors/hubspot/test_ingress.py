"""HubSpot deliveries through Switchyard's real ``POST /hooks/{connection_id}``: a signed
batch is stored (once, however often HubSpot redelivers it); a tampered body, the wrong
secret and a stale timestamp are refused with nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.hubspot.sandbox_hooks import signed_headers
from core.auth import create_tenant
from core.connections import create_connection
from core.db.models import Event
from core.services import Services
from core.settings import Settings
from core.web.app import create_app
from tests.connectors.hubspot.conftest import CLIENT_SECRET, TOKEN, config_for
from tests.connectors.hubspot.test_webhooks import EVENTS

PUBLIC = "https://switchyard.example.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_url": PUBLIC})


@pytest.fixture
async def hook(services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client for the app and the public URL of a HubSpot connection's hook."""
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        connection = await create_connection(
            session,
            tenant_id=tenant.id,
            factory=services.connectors.registry.require("hubspot"),
            name="hubspot",
            config=config_for("https://api.hubapi.com"),
            secrets={"client_secret": CLIENT_SECRET, "access_token": TOKEN},
            keyring=services.keyring,
        )
    transport = httpx.ASGITransport(app=create_app(services))
    # Behind the proxy the app is reached on an internal host; v3 signs the public URL.
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as client:
        yield client, f"{PUBLIC}/hooks/{connection.id}"


async def _deliver(
    client: httpx.AsyncClient,
    public_url: str,
    body: bytes,
    *,
    signed_body: bytes | None = None,
    secret: str = CLIENT_SECRET,
    timestamp_ms: int | None = None,
) -> httpx.Response:
    headers = signed_headers(
        secret, public_url, signed_body or body, versions=("v3",), timestamp_ms=timestamp_ms
    )
    return await client.post(public_url.removeprefix(PUBLIC), content=body, headers=headers)


async def _events(services: Services) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


async def test_a_signed_batch_is_stored_once(
    services: Services, hook: tuple[httpx.AsyncClient, str]
) -> None:
    client, url = hook
    body = json.dumps(EVENTS).encode()

    first = await _deliver(client, url, body)
    again = await _deliver(client, url, body)  # HubSpot retries what it thinks failed

    assert first.status_code == 202, first.text
    assert first.json()["accepted"] == len(EVENTS)
    assert again.json() == {"accepted": 0, "duplicates": len(EVENTS), "jobs": []}
    assert await _events(services) == len(EVENTS)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signed_body": b"[]"}, "does not match"),
        ({"secret": "another-apps-secret"}, "does not match"),
        ({"timestamp_ms": int((time.time() - 600) * 1000)}, "timestamp"),
    ],
    ids=["tampered-body", "wrong-secret", "stale-timestamp"],
)
async def test_a_bad_signature_is_refused_and_nothing_is_stored(
    services: Services,
    hook: tuple[httpx.AsyncClient, str],
    change: dict[str, Any],
    reason: str,
) -> None:
    client, url = hook

    response = await _deliver(client, url, json.dumps(EVENTS).encode(), **change)

    assert response.status_code == 401, response.text
    assert response.json()["type"] == "/problems/signature-invalid"
    assert reason in response.json()["detail"]
    assert await _events(services) == 0
