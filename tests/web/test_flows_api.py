"""The flows API: what is installed and whether it validates; dry runs through the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from core.db.models import Role
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.settings import Settings
from tests.web.support import TenantKeys, assert_problem

TICKET = {"subject": "Printer on fire", "body": "It burns.", "customer_email": "ada@example.com"}


@pytest.fixture
def claude() -> Iterator[SandboxServer]:
    with SandboxServer(AnthropicSandbox(latency_scale=0, seed=5).app) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, claude: SandboxServer) -> Settings:
    return settings.model_copy(
        update={"anthropic_base_url": claude.url, "anthropic_api_key": SecretStr("sk-ant-sandbox")}
    )


async def test_flows_are_listed_with_their_validation(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.get("/v1/flows", headers=tenant_a.headers(Role.REVIEWER))
    assert response.status_code == 200
    flows = {flow["name"]: flow for flow in response.json()["data"]}
    good = flows["webhook/ticket_updates"]
    assert good["valid"] is True
    assert (good["connector"], good["object"], good["task"]) == ("webhook", "ticket", "classify")
    assert good["prompt"] == "ticket_test@1"
    assert good["review"] == "when record.status == 'escalated'"
    broken = flows["webhook/ticket_broken"]
    assert broken["valid"] is False
    assert [p["code"] for p in broken["problems"]] == ["prompt-missing"]
    one = await client.get("/v1/flows/webhook/ticket_broken", headers=tenant_a.headers())
    assert one.json() == broken


async def test_an_unknown_flow_is_404(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    response = await client.get("/v1/flows/webhook/nope", headers=tenant_a.headers())
    assert_problem(response, 404, "not-found")


async def test_a_dry_run_through_the_api(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    response = await client.post(
        "/v1/flows/webhook/ticket_updates/test",
        json={"record": TICKET, "record_id": "T-9"},
        headers=tenant_a.headers(),
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert "ada@example.com" not in run["user"]
    assert run["model"].startswith("claude-")
    assert set(run["patch"]) == {"category", "summary"}
    assert run["cost_usd"] > 0


async def test_only_admins_dry_run(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    for role in (Role.REVIEWER, Role.SERVICE):
        response = await client.post(
            "/v1/flows/webhook/ticket_updates/test",
            json={"record": TICKET},
            headers=tenant_a.headers(role),
        )
        assert_problem(response, 403, "forbidden")


async def test_an_invalid_flow_cannot_be_dry_run(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.post(
        "/v1/flows/webhook/ticket_broken/test", json={"record": TICKET}, headers=tenant_a.headers()
    )
    body = assert_problem(response, 422, "flow-unavailable")
    assert "prompt-missing" in body["detail"]
