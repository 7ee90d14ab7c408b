"""The Salesforce sandbox over TLS (a trustme CA the client trusts) and connectors built
through the factory, each with an in-memory state store shared like the database one."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import ConnectorContext
from connectors.salesforce import SalesforceConnector, SalesforceConnectorFactory
from connectors.salesforce.sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    INTEGRATION_USER,
    ORG_ID,
    SalesforceSandbox,
)
from connectors.salesforce.sandbox_tls import TlsFiles, TlsSandboxServer
from tests.connectors.support import MemoryState, trusted_tls

RELAY_SECRET = "relay-secret-0123456789"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return trusted_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def rsa_key() -> tuple[str, str]:
    """(private key PEM, public key PEM) of the connected app's JWT certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def org(rsa_key: tuple[str, str]) -> SalesforceSandbox:
    return SalesforceSandbox(jwt_certificate=rsa_key[1])


@pytest.fixture
def server(org: SalesforceSandbox, tls: TlsFiles) -> Iterator[TlsSandboxServer]:
    with TlsSandboxServer(org.app, tls) as running:
        yield running


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


def sf_config(server: TlsSandboxServer, tls: TlsFiles, **extra: Any) -> dict[str, Any]:
    return {
        "login_url": server.url,
        "organization_id": ORG_ID,
        "auth_flow": "client_credentials",
        "integration_user_id": INTEGRATION_USER,
        "ca_file": tls.ca_file,
        "external_id_fields": {"Lead": "Switchyard_Key__c"},
        **extra,
    }


SECRETS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "relay_secret": RELAY_SECRET}


@pytest.fixture
def make(server: TlsSandboxServer, tls: TlsFiles, state: MemoryState) -> Iterator[Any]:
    """Build a connector (config overrides as keywords); all share ``state``."""
    built: list[SalesforceConnector] = []

    def build(secrets: Mapping[str, Any] | None = None, **config: Any) -> SalesforceConnector:
        connector = SalesforceConnectorFactory().create(
            sf_config(server, tls, **config),
            dict(secrets or SECRETS),
            ConnectorContext("con_sf", state=state, http_timeout_seconds=10),
        )
        built.append(connector)
        return connector

    yield build
    for connector in built:
        connector._http.close()
    # requests drops its pools on close, but a socket whose response is still referenced
    # (by a caught error's traceback) closes only when collected, and the sandbox's
    # server waits for it when it stops.
    gc.collect()


def lead_id(org: SalesforceSandbox, company: str = "Brightline Freight") -> str:
    return next(i for i in org.ids("Lead") if org.record("Lead", i)["Company"] == company)


def ca_path(tls: TlsFiles) -> Path:
    return Path(tls.ca_file)
