"""Web fixtures: the app over real services (SQLite and PostgreSQL), a client, tenants.

Body limits are shrunk so oversize bodies stay small, and the flow catalog adds two flows
to the shared fixtures: a second webhook flow on created tickets (so one event can fan out
to two jobs) and a flow of another connector (which a webhook connection must refuse).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from connectors.registry import ConnectorRegistry
from core.flows.catalog import FlowCatalog, FlowEntry
from core.flows.prompts import PromptRegistry
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from tests.web.support import TenantKeys, create_webhook_connection, make_tenant

WEB_MAPPINGS = Path(__file__).parent / "fixtures" / "mappings"
HOOK_LIMIT = 64 * 1024
API_LIMIT = 16 * 1024


def _entries(catalog: FlowCatalog) -> list[FlowEntry]:
    return [entry for name in catalog.names() if (entry := catalog.get(name)) is not None]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"hook_max_body_bytes": HOOK_LIMIT, "api_max_body_bytes": API_LIMIT}
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    shared = FlowCatalog.load(settings.mappings_dir)
    extra = FlowCatalog.load(WEB_MAPPINGS)
    built = build_services(
        settings,
        registry=ConnectorRegistry.from_entry_points(),
        flows=FlowCatalog(
            [*_entries(shared), *_entries(extra)],
            PromptRegistry(
                {
                    ref: prompt
                    for registry in (shared.prompts, extra.prompts)
                    for ref in registry.refs()
                    if (prompt := registry.get(ref)) is not None
                }
            ),
        ),
    )
    yield built
    await built.aclose()


class WakeCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def app(services: Services) -> FastAPI:
    return create_app(services)


@pytest.fixture
def wakes(app: FastAPI) -> WakeCounter:
    counter = WakeCounter()
    app.state.wake_worker = counter
    return counter


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://switchyard.test") as c:
        yield c


@pytest.fixture
async def tenant_a(services: Services) -> TenantKeys:
    return await make_tenant(services, "acme")


@pytest.fixture
async def tenant_b(services: Services) -> TenantKeys:
    return await make_tenant(services, "globex")


@pytest.fixture
async def connection_a(client: httpx.AsyncClient, tenant_a: TenantKeys) -> str:
    """Tenant A's webhook connection (signing secret ``support.SIGNING_SECRET``); its id."""
    created = await create_webhook_connection(client, tenant_a)
    connection_id: str = created["id"]
    return connection_id
