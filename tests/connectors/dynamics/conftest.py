"""Dataverse fixtures: the SANDBOX environment (and its Azure AD) over TLS with a trustme
CA, and connectors built through the factory, sharing one in-memory state store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest

from connectors.base import ConnectorContext
from connectors.dynamics import DynamicsConnector, DynamicsConnectorFactory
from connectors.dynamics.sandbox import (
    APP_USER,
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT_ID,
    DataverseSandbox,
)
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from tests.connectors.support import MemoryState, trusted_tls

WEBHOOK_SECRET = "dv-webhook-key-0123456789"
SECRETS = {
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "webhook_secret": WEBHOOK_SECRET,
}

MakeConnector = Callable[..., DynamicsConnector]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return trusted_tls(tmp_path_factory.mktemp("dataverse-tls"))


@pytest.fixture
def environment() -> DataverseSandbox:
    return DataverseSandbox()


@pytest.fixture
def server(environment: DataverseSandbox, tls: TlsFiles) -> Iterator[TlsSandboxServer]:
    with TlsSandboxServer(environment.app, tls) as running:
        environment.base_url = running.url
        yield running


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


def dv_config(url: str, ca_file: str, **extra: Any) -> dict[str, Any]:
    return {
        "environment_url": url,
        "authority_host": url,
        "tenant_id": TENANT_ID,
        "ca_file": ca_file,
        "application_user_id": APP_USER,
        "webhook_auth": {"kind": "header", "name": "x-switchyard-key"},
        "max_retry_wait_seconds": 2,
        **extra,
    }


@pytest.fixture
async def make(
    server: TlsSandboxServer, tls: TlsFiles, state: MemoryState
) -> AsyncIterator[MakeConnector]:
    """Build a connector (config overrides as keywords); all share ``state``."""
    built: list[DynamicsConnector] = []

    def build(secrets: Mapping[str, Any] | None = None, **config: Any) -> DynamicsConnector:
        connector = DynamicsConnectorFactory().create(
            dv_config(server.url, tls.ca_file, **config),
            dict(secrets or SECRETS),
            ConnectorContext("con_dynamics", state=state, http_timeout_seconds=10),
        )
        built.append(connector)
        return connector

    yield build
    for connector in built:
        await connector.aclose()
