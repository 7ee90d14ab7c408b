"""Connection settings and authentication: Basic, OAuth client credentials, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import ConnectorContext, RecordRef
from connectors.sap import SapConnectorFactory
from connectors.sap.auth import ClientCredentials
from connectors.sap.config import SapConfig, SapSecrets
from connectors.sap.errors import SapUnauthorized
from connectors.sap.sandbox import SandboxServer, SapSandbox
from core.errors import ConnectorConfigInvalid
from tests.connectors.sap.conftest import (
    PASSWORD,
    USER,
    WEBHOOK_SECRET,
    MakeConnector,
    oauth_secrets,
    rfc_config,
)


async def test_basic_auth_reads(make_connector: MakeConnector, system: SapSandbox) -> None:
    record = await make_connector().fetch(RecordRef("A_BusinessPartner", "0010100001"))
    assert record.fields["SearchTerm1"] == "FAHRRAD"


async def test_a_wrong_password_is_terminal(make_connector: MakeConnector) -> None:
    connector = make_connector(
        secrets={"user": USER, "password": "wrong", "webhook_secret": WEBHOOK_SECRET}
    )
    with pytest.raises(SapUnauthorized, match="401"):
        await connector.fetch(RecordRef("A_SalesOrder", "0000000001"))


async def test_oauth_client_credentials_and_renewal_after_a_401(
    make_connector: MakeConnector, system: SapSandbox, server: SandboxServer
) -> None:
    connector = make_connector(secrets=oauth_secrets(), token_url=f"{server.url}/oauth/token")
    await connector.fetch(RecordRef("A_SalesOrder", "0000000001"))
    await connector.fetch(RecordRef("A_SalesOrder", "0000000002"))
    assert system.token_requests == 1
    system.expire_tokens()
    await connector.fetch(RecordRef("A_SalesOrder", "0000000003"))
    assert system.token_requests == 2
    assert isinstance(connector.auth, ClientCredentials)


async def test_wrong_client_credentials_are_terminal(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    secrets = oauth_secrets() | {"client_secret": "nope"}
    connector = make_connector(secrets=secrets, token_url=f"{server.url}/oauth/token")
    with pytest.raises(SapUnauthorized, match="client credentials"):
        await connector.fetch(RecordRef("A_SalesOrder", "0000000001"))


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"client": "100", "base_url": "https://u:p@s4.example.com"}, "user:password"),
        ({"client": "100"}, "needs base_url"),
        ({"client": "1000", "base_url": "https://s4.example.com"}, "client"),
        ({"client": "100", "transport": "rfc"}, "needs rfc"),
        (rfc_config(rfc={"ashost": "h"}), "ashost needs sysnr"),
        ({"client": "100", "base_url": "https://s", "objects": {"X": "A/B/C"}}, "SERVICE"),
    ],
)
def test_config_is_checked(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SapConfig.model_validate(config)


def test_secrets_are_secret_and_one_way_to_log_on() -> None:
    parsed = SapSecrets.model_validate(
        {"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET}
    )
    assert PASSWORD not in repr(parsed)
    with pytest.raises(ValidationError, match="not both"):
        SapSecrets.model_validate(oauth_secrets() | {"user": USER, "password": PASSWORD})
    with pytest.raises(ValidationError, match="webhook_secret"):
        SapSecrets.model_validate({"user": USER, "password": PASSWORD})


def test_the_secrets_must_fit_the_chosen_auth() -> None:
    basic = {"user": USER, "password": PASSWORD, "webhook_secret": WEBHOOK_SECRET}
    with pytest.raises(ConnectorConfigInvalid, match="token_url"):
        SapConnectorFactory().create(
            {"client": "100", "base_url": "https://s4.example.com", "token_url": "https://t"},
            basic,
            ConnectorContext("con"),
        )
    with pytest.raises(ConnectorConfigInvalid, match="transport rfc"):
        SapConnectorFactory().create(rfc_config(), oauth_secrets(), ConnectorContext("con"))
