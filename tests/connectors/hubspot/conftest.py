"""HubSpot fixtures: the SANDBOX portal on a real socket and connectors built by the
factory against it (a private-app token unless a test asks for OAuth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from connectors.base import ConnectorContext, StateStore
from connectors.hubspot import HubSpotConnector, HubSpotConnectorFactory
from connectors.hubspot.sandbox import HubSpotSandbox, SandboxServer

TOKEN = "pat-na1-sandbox-test-token"
REFRESH = "sbx-rt-initial"
CLIENT_ID = "client-123"
CLIENT_SECRET = "client-secret-for-tests"
APP_ID = 2_931_120
PORTAL_ID = 62515

MakeConnector = Callable[..., HubSpotConnector]


@pytest.fixture
def portal() -> HubSpotSandbox:
    return HubSpotSandbox(
        portal_id=PORTAL_ID,
        app_id=APP_ID,
        private_tokens=(TOKEN,),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_tokens=(REFRESH,),
        window_ms=200,
    )


@pytest.fixture
def server(portal: HubSpotSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(portal.app) as running:
        yield running


def config_for(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "app_id": APP_ID,
        "portal_id": PORTAL_ID,
        "base_url": url,
        "search_interval_seconds": 0,
        "max_rate_wait_seconds": 1,
        **overrides,
    }


def oauth_secrets() -> dict[str, Any]:
    return {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH, "client_id": CLIENT_ID}


@pytest.fixture
async def make_connector(server: SandboxServer) -> AsyncIterator[MakeConnector]:
    built: list[HubSpotConnector] = []

    def make(
        *, secrets: dict[str, Any] | None = None, state: StateStore | None = None, **config: Any
    ) -> HubSpotConnector:
        connector = HubSpotConnectorFactory().create(
            config_for(server.url, **config),
            secrets or {"client_secret": CLIENT_SECRET, "access_token": TOKEN},
            ConnectorContext("con_hubspot", state=state),
        )
        built.append(connector)
        return connector

    yield make
    for connector in built:
        await connector.aclose()
