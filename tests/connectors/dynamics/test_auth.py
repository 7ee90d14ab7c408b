"""Client credentials through MSAL against the SANDBOX authority: one token fetch shared
through the state store, refresh after the Web API refuses an expired token, clear
errors for wrong credentials, and config that refuses embedded credentials."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.base import RecordRef
from connectors.dynamics.config import DynamicsConfig
from connectors.dynamics.sandbox import DataverseSandbox
from core.errors import ConnectorTerminalError
from tests.connectors.dynamics.conftest import SECRETS, MakeConnector
from tests.connectors.support import MemoryState


async def test_msal_gets_one_token_and_every_worker_shares_it(
    make: MakeConnector, environment: DataverseSandbox, state: MemoryState
) -> None:
    first, second = make(), make()
    account = environment.ids("account")[0]
    await first.fetch(RecordRef("account", account), ["name"])
    await first.fetch(RecordRef("account", account), ["name"])
    await second.fetch(RecordRef("account", account), ["name"])
    assert environment.token_requests == 1  # the second worker read the shared MSAL cache
    assert "cache" in (state.values.get("msal") or {})


async def test_an_expired_token_is_replaced_once_and_the_call_replayed(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make()
    account = environment.ids("account")[0]
    await connector.fetch(RecordRef("account", account), ["name"])
    environment.expire_tokens()
    record = await connector.fetch(RecordRef("account", account), ["name"])
    assert record.fields["name"] == "Kestrel Precision Parts AG"
    assert environment.token_requests == 2


async def test_a_wrong_client_secret_is_a_terminal_error_naming_azure_ad(
    make: MakeConnector, environment: DataverseSandbox
) -> None:
    connector = make(secrets=SECRETS | {"client_secret": "not-the-secret"})
    with pytest.raises(ConnectorTerminalError, match="invalid_client"):
        await connector.fetch(RecordRef("account", environment.ids("account")[0]))


def test_urls_with_credentials_or_plain_http_are_refused() -> None:
    base = {"tenant_id": "contoso.onmicrosoft.com"}
    with pytest.raises(ValidationError, match="user:password"):
        DynamicsConfig.model_validate(base | {"environment_url": "https://u:p@x.crm.dynamics.com"})
    with pytest.raises(ValidationError, match="https"):
        DynamicsConfig.model_validate(base | {"environment_url": "http://x.crm.dynamics.com"})
    config = DynamicsConfig.model_validate(
        base | {"environment_url": "https://x.crm4.dynamics.com/"}
    )
    assert config.scope == "https://x.crm4.dynamics.com/.default"
    assert config.api_root == "https://x.crm4.dynamics.com/api/data/v9.2"
