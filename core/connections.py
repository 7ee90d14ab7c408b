"""Connections: validated config, secrets encrypted at rest, live connector instances."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.base import Connector, ConnectorContext, ConnectorFactory
from connectors.registry import ConnectorRegistry
from core import netguard
from core.connector_state import DatabaseStateStore
from core.crypto import DecryptionFailed, KeyRing
from core.db.models import Connection
from core.db.types import new_id, utcnow
from core.errors import (
    ConnectorConfigInvalid,
    DestinationRefused,
    IngressUnavailable,
    NotFound,
    UnknownConnector,
)
from core.settings import Settings


def _validated(model: type[BaseModel], data: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        parsed = model.model_validate(dict(data))
    except ValidationError as exc:
        # Never echo input values: for secrets they are the secret.
        problems = [
            f"{what}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        raise ConnectorConfigInvalid("; ".join(problems), errors=problems) from None
    # JSON mode masks SecretStr fields as "**********"; put the real values back.
    dumped = parsed.model_dump(mode="json", exclude_none=True)
    for key in dumped:
        value = getattr(parsed, key)
        if isinstance(value, SecretStr):
            dumped[key] = value.get_secret_value()
    return dumped


async def check_outbound_urls(
    factory: ConnectorFactory, config: Mapping[str, Any], allow_networks: Sequence[str]
) -> None:
    """Refuse config URLs that point into private, loopback or link-local networks (cloud
    metadata, the database, other tenants' services) unless the operator allowed them.

    Connections are created by tenant admins, and a job's result and errors show what the
    URL answered, so an unchecked URL would let a tenant read the server's network.
    """
    for field in getattr(factory, "outbound_url_fields", ()):
        url = config.get(field)
        if isinstance(url, str) and url:
            try:
                await netguard.check_destination(url, allow_networks, setting=CONNECTOR_SETTING)
            except DestinationRefused as exc:
                raise DestinationRefused(f"config.{field}: {exc.detail}") from None


def seal_secrets(keyring: KeyRing, connection_id: str, secrets: Mapping[str, Any]) -> str:
    return keyring.encrypt(json.dumps(dict(secrets)).encode(), connection_id.encode())


def open_secrets(keyring: KeyRing, connection: Connection) -> dict[str, Any]:
    if not connection.secrets_encrypted:
        return {}
    plain = keyring.decrypt(connection.secrets_encrypted, connection.id.encode())
    data: dict[str, Any] = json.loads(plain)
    return data


async def create_connection(
    session: AsyncSession,
    *,
    tenant_id: str,
    factory: ConnectorFactory,
    name: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    keyring: KeyRing,
    poll_interval_seconds: float | None = None,
    allow_unreviewed_writes: bool = False,
) -> Connection:
    clean_config = _validated(factory.config_model, config, "config")
    clean_secrets = _validated(factory.secrets_model, secrets, "secrets")
    connection_id = new_id("con")
    connection = Connection(
        id=connection_id,
        tenant_id=tenant_id,
        connector=factory.name,
        name=name,
        config=clean_config,
        secrets_encrypted=seal_secrets(keyring, connection_id, clean_secrets),
        poll_interval_seconds=poll_interval_seconds if factory.supports_polling else None,
        next_poll_at=utcnow() if factory.supports_polling and poll_interval_seconds else None,
        allow_unreviewed_writes=allow_unreviewed_writes,
    )
    session.add(connection)
    await session.flush()
    return connection


async def get_connection(
    session: AsyncSession, connection_id: str, tenant_id: str | None
) -> Connection:
    connection = await session.get(Connection, connection_id)
    if connection is None or (tenant_id is not None and connection.tenant_id != tenant_id):
        raise NotFound(f"no connection {connection_id}")
    return connection


async def rotate_secrets(session: AsyncSession, keyring: KeyRing) -> int:
    """Re-encrypt every connection's secrets under the active key; returns how many changed."""
    changed = 0
    for connection in (await session.execute(select(Connection))).scalars():
        if not connection.secrets_encrypted:
            continue
        rewrapped = keyring.rewrap(connection.secrets_encrypted, connection.id.encode())
        if rewrapped is not None:
            connection.secrets_encrypted = rewrapped
            changed += 1
    await session.flush()
    return changed


def public_hook_url(settings: Settings, connection_id: str) -> str | None:
    """Where the platform delivers this connection's webhooks, as it sees it."""
    if not settings.public_url:
        return None
    return f"{settings.public_url.rstrip('/')}/hooks/{connection_id}"


CONNECTOR_SETTING = "SWITCHYARD_CONNECTOR_ALLOW_NETWORKS"

# Webhook ingress reads a connection at most this often: a changed secret or a deleted
# connection takes effect within this time, and a burst of deliveries costs one read.
INGRESS_ROW_SECONDS = 1.0


class ConnectorPool:
    """One live connector per connection, rebuilt when the connection row changes."""

    def __init__(
        self,
        registry: ConnectorRegistry,
        keyring: KeyRing,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.registry = registry
        self._keyring = keyring
        self._settings = settings
        self._sessions = sessions  # for connector state; None: connectors get no store
        self._live: dict[str, tuple[datetime, Connector]] = {}
        self._rows: dict[str, tuple[float, Connection]] = {}
        self._retired: list[Connector] = []

    async def for_ingress(
        self, sessions: async_sessionmaker[AsyncSession], connection_id: str
    ) -> tuple[Connection, Connector]:
        """The connection (re-read at most every INGRESS_ROW_SECONDS) and its connector."""
        now = time.monotonic()
        cached = self._rows.get(connection_id)
        if cached is not None and now - cached[0] < INGRESS_ROW_SECONDS:
            connection = cached[1]
        else:
            async with sessions() as session:
                found = await session.get(Connection, connection_id)
            if found is None:
                self._rows.pop(connection_id, None)
                raise NotFound(f"no connection {connection_id}")
            connection = found
            self._rows[connection_id] = (now, connection)
        try:
            return connection, await self.get(connection)
        except (UnknownConnector, DecryptionFailed) as exc:
            # Our fault, not the platform's: a 4xx would make it drop the events for good.
            raise IngressUnavailable(
                f"connection {connection_id} cannot be served by this server: {exc.detail}"
            ) from exc

    async def get(self, connection: Connection) -> Connector:
        cached = self._live.get(connection.id)
        # A row older than the live connector's (ingress caches rows briefly) keeps it.
        if cached is not None and cached[0] >= connection.updated_at:
            return cached[1]
        factory = self.registry.require(connection.connector)
        connector = factory.create(
            connection.config,
            open_secrets(self._keyring, connection),
            ConnectorContext(
                connection_id=connection.id,
                webhook_tolerance_seconds=self._settings.webhook_tolerance_seconds,
                state=(
                    DatabaseStateStore(self._sessions, self._keyring, connection.id)
                    if self._sessions is not None
                    else None
                ),
                public_hook_url=public_hook_url(self._settings, connection.id),
            ),
        )
        self._live[connection.id] = (connection.updated_at, connector)
        if cached is not None:
            # Another task may be mid-request on it: close it with the pool, not now.
            self._retired.append(cached[1])
        return connector

    async def aclose(self) -> None:
        live, self._live = self._live, {}
        retired, self._retired = self._retired, []
        for connector in [*retired, *(connector for _, connector in live.values())]:
            await connector.aclose()
