"""SAP fixtures: the SANDBOX system on a real socket, a clock the tests can stop, and
connectors built by the factory against it (Basic auth unless a test asks for OAuth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import ConnectorContext
from connectors.sap import SapConnector, SapConnectorFactory
from connectors.sap.demo import demo_config
from connectors.sap.sandbox import SandboxServer, SapSandbox
from connectors.sap.sandbox_rfc import FakeSapSystem

USER = "SWITCHYARD"
PASSWORD = "sandbox-password-for-tests"
CLIENT_ID = "sb-switchyard-client"
CLIENT_SECRET = "client-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"

MakeConnector = Callable[..., SapConnector]


class Clock:
    """SANDBOX time: moves 1 ms per reading unless frozen, so changes get new ETags."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self.step = timedelta(milliseconds=1)

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current

    def freeze(self) -> None:
        self.step = timedelta(0)

    def resume(self, jump: timedelta = timedelta(seconds=1)) -> None:
        self.now += jump
        self.step = timedelta(milliseconds=1)


def basic_secrets() -> dict[str, Any]:
    return {"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET}


def oauth_secrets() -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def system(clock: Clock) -> SapSandbox:
    return SapSandbox(users={USER: PASSWORD}, oauth_clients={CLIENT_ID: CLIENT_SECRET}, clock=clock)


@pytest.fixture
def server(system: SapSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(system.app) as running:
        yield running


@pytest.fixture
async def make_connector(server: SandboxServer) -> AsyncIterator[MakeConnector]:
    built: list[SapConnector] = []

    def make(*, secrets: dict[str, Any] | None = None, **config: Any) -> SapConnector:
        connector = SapConnectorFactory().create(
            demo_config(server.url) | config,
            secrets or basic_secrets(),
            ConnectorContext("con_sap"),
        )
        built.append(connector)
        return connector

    yield make
    for connector in built:
        await connector.aclose()


@pytest.fixture
def erp() -> FakeSapSystem:
    return FakeSapSystem(user=USER, password=PASSWORD)


def rfc_config(**overrides: Any) -> dict[str, Any]:
    return {
        "transport": "rfc",
        "client": "100",
        "rfc": {"ashost": "sap.example.test", "sysnr": "00", "pool_size": 2},
        **overrides,
    }
