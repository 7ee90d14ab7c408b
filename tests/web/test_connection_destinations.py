"""Connection URLs the server will call are checked like callback URLs: a tenant admin
cannot point a connection at cloud metadata, loopback or private networks unless the
operator allowed them, nor hide credentials in a URL every role can read."""

from __future__ import annotations

import httpx
import pytest

from core.services import Services
from core.settings import Settings
from tests.web.support import SIGNING_SECRET, TenantKeys, assert_problem, row_counts


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"connector_allow_networks": []})


async def _create(client: httpx.AsyncClient, tenant: TenantKeys, base_url: str) -> httpx.Response:
    return await client.post(
        "/v1/connections",
        json={
            "connector": "webhook",
            "name": "tool",
            "config": {"base_url": base_url},
            "secrets": {"signing_secret": SIGNING_SECRET},
        },
        headers=tenant.headers(),
    )


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5432/",
        "http://10.1.2.3/api",
        "http://[::1]/api",
    ],
)
async def test_private_targets_are_refused(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, base_url: str
) -> None:
    before = await row_counts(services)
    response = await _create(client, tenant_a, base_url)
    body = assert_problem(response, 422, "destination-refused")
    assert "SWITCHYARD_CONNECTOR_ALLOW_NETWORKS" in body["detail"]
    assert await row_counts(services) == before


async def test_allowed_networks_pass(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    services.settings = services.settings.model_copy(
        update={"connector_allow_networks": ["10.0.0.0/8"]}
    )
    response = await _create(client, tenant_a, "http://10.1.2.3/api")
    assert response.status_code == 201, response.text


async def test_credentials_in_the_url_are_refused(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await _create(client, tenant_a, "http://admin:hunter2@10.1.2.3/api")
    body = assert_problem(response, 422, "connector-config-invalid")
    assert "hunter2" not in response.text
    assert "secrets.api_token" in body["detail"]
