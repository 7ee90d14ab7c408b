"""The process's shared services, built once at start and passed explicitly.

The web app keeps one on ``app.state.services``; the worker gets the same object. Nothing
here is a module global.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connectors.registry import ConnectorRegistry
from core.auth import KeyCache
from core.connections import ConnectorPool
from core.crypto import KeyRing
from core.db.engine import make_engine, make_read_sessionmaker, make_sessionmaker
from core.flows.catalog import FlowCatalog
from core.gateway.factory import build_gateway
from core.gateway.gateway import Gateway
from core.gateway.rollouts import PromptVersions, RolloutProvider, load_provider_factory
from core.ingest_writer import IngestWriter
from core.metrics import Metrics
from core.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    connectors: ConnectorPool
    metrics: Metrics
    flows: FlowCatalog
    ingest: IngestWriter  # group commit for webhook ingress
    http: httpx.AsyncClient  # outbound callbacks; follows no redirects
    gateway: Gateway  # every Claude call
    keys: KeyCache  # API keys verified recently (hot paths skip the lookup)
    prompt_versions: PromptVersions  # which prompt version answers a call (rollouts)

    async def aclose(self) -> None:
        await self.gateway.aclose()  # flushes call records, so before the engine goes
        await self.ingest.aclose()
        await self.connectors.aclose()
        await self.http.aclose()
        await self.engine.dispose()


def load_keyring(settings: Settings) -> KeyRing:
    """Keys from settings; in embedded mode a generated key file keeps `make run` zero-setup."""
    if settings.encryption_keys:
        return KeyRing.parse([key.get_secret_value() for key in settings.encryption_keys])
    return KeyRing.from_file(settings.encryption_key_file, create=settings.is_embedded)


def build_services(
    settings: Settings,
    *,
    registry: ConnectorRegistry | None = None,
    metrics: Metrics | None = None,
    flows: FlowCatalog | None = None,
    gateway: Gateway | None = None,
) -> Services:
    engine = make_engine(settings.database_url, pool_size=max(5, settings.worker_concurrency))
    keyring = load_keyring(settings)
    sessions = make_sessionmaker(engine)
    reads = make_read_sessionmaker(engine)  # lookups on hot paths: no write lock on SQLite
    catalog = flows if flows is not None else FlowCatalog.load(settings.mappings_dir)
    metrics = metrics or Metrics()
    custom_provider = settings.gateway.prompt_flag_provider
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keyring=keyring,
        connectors=ConnectorPool(
            registry if registry is not None else ConnectorRegistry.from_entry_points(),
            keyring,
            settings,
            sessions,
        ),
        metrics=metrics,
        flows=catalog,
        # SQLite has one writer, so one transaction at a time; PostgreSQL overlaps two.
        ingest=IngestWriter(sessions, catalog, flushers=1 if settings.is_embedded else 2),
        http=httpx.AsyncClient(timeout=settings.callback_timeout_seconds, follow_redirects=False),
        gateway=gateway
        or build_gateway(settings, sessions, metrics, keyring=keyring, read_sessions=reads),
        keys=KeyCache(reads, settings.gateway.auth_cache_seconds),
        prompt_versions=PromptVersions(
            catalog.prompts,
            sessions=sessions,
            read_sessions=reads,
            provider=(
                load_provider_factory(custom_provider)()
                if custom_provider
                else RolloutProvider(reads)
            ),
        ),
    )
