"""OAuth through the SANDBOX token endpoint: refresh on first use, rotation persisted in the
connection's sealed state, a 401 for an expired token refreshes once and replays, and
concurrent jobs on two connectors (two workers) refresh once. Also the state on the
database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio

import pytest

from connectors.base import RecordRef
from connectors.hubspot.auth import STATE_KEY
from connectors.hubspot.sandbox import HubSpotSandbox
from core.auth import create_tenant
from core.connections import create_connection
from core.connector_state import DatabaseStateStore
from core.errors import ConnectorTerminalError
from core.services import Services
from tests.connectors.hubspot.conftest import (
    REFRESH,
    MakeConnector,
    config_for,
    oauth_secrets,
)
from tests.connectors.support import MemoryState


async def test_the_first_call_refreshes_and_the_rotated_token_is_stored(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    state = MemoryState()
    connector = make_connector(secrets=oauth_secrets(), state=state)
    record = await connector.fetch(RecordRef("contacts", "1004"), ["email"])
    assert record.fields["email"]
    stored = await state.get(STATE_KEY)
    assert stored is not None
    assert stored["refresh_token"] != REFRESH  # rotated, and the old one no longer works
    assert portal.token_requests == 1
    # A new connector (a restart, another worker) uses the stored pair: no refresh.
    again = make_connector(secrets=oauth_secrets(), state=state)
    await again.fetch(RecordRef("contacts", "1004"), ["email"])
    assert portal.token_requests == 1


async def test_an_expired_token_is_refreshed_once_and_the_request_replayed(
    make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    state = MemoryState()
    connector = make_connector(secrets=oauth_secrets(), state=state)
    await connector.fetch(RecordRef("contacts", "1004"), ["email"])
    first = (await state.get(STATE_KEY) or {})["refresh_token"]
    portal.expire_tokens()  # HubSpot says 401 EXPIRED_AUTHENTICATION before our clock does
    record = await connector.fetch(RecordRef("contacts", "1004"), ["email"])
    assert record.fields["email"]
    assert portal.token_requests == 2
    assert (await state.get(STATE_KEY) or {})["refresh_token"] != first


async def test_a_revoked_refresh_token_is_terminal(
    make_connector: MakeConnector,
) -> None:
    secrets = oauth_secrets() | {"refresh_token": "sbx-rt-revoked"}
    with pytest.raises(ConnectorTerminalError, match=r"BAD_REFRESH_TOKEN|refresh token"):
        await make_connector(secrets=secrets).fetch(RecordRef("contacts", "1004"), ["email"])


async def test_two_workers_with_expired_tokens_refresh_once(
    services: Services, make_connector: MakeConnector, portal: HubSpotSandbox
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
        connection = await create_connection(
            session,
            tenant_id=tenant.id,
            factory=services.connectors.registry.require("webhook"),
            name="hubspot",
            config={"base_url": "http://127.0.0.1:9"},
            secrets={"signing_secret": "s" * 24},
            keyring=services.keyring,
        )

    def worker() -> DatabaseStateStore:
        return DatabaseStateStore(services.sessions, services.keyring, connection.id)

    one = make_connector(secrets=oauth_secrets(), state=worker())
    two = make_connector(secrets=oauth_secrets(), state=worker())
    jobs = [c.fetch(RecordRef("contacts", "1004"), ["email"]) for c in (one, two) * 4]
    assert all(r.fields["email"] for r in await asyncio.gather(*jobs))
    assert portal.token_requests == 1
    portal.expire_tokens()
    jobs = [c.fetch(RecordRef("contacts", "1005"), ["email"]) for c in (one, two) * 4]
    assert all(r.fields["email"] for r in await asyncio.gather(*jobs))
    assert portal.token_requests == 2  # one refresh for both workers, not one each
    stored = await worker().get(STATE_KEY)
    assert stored is not None
    assert stored["refresh_token"].startswith("sbx-rt-")


def test_secrets_need_one_way_to_authenticate() -> None:
    from connectors.hubspot.config import HubSpotSecrets

    with pytest.raises(ValueError, match="access_token, or refresh_token"):
        HubSpotSecrets.model_validate({"client_secret": "x"})
    with pytest.raises(ValueError, match="or refresh_token"):
        HubSpotSecrets.model_validate(
            {"client_secret": "x", "access_token": "t", "refresh_token": "r", "client_id": "c"}
        )
    assert config_for("http://x")["app_id"]
