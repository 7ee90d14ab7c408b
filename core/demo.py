"""``switchyard serve --demo``: sandboxes, a demo tenant, connections and flows.

Every connector package that ships a demo sandbox (a factory with ``start_demo_sandbox``)
gets a ``demo-<connector>`` connection pointing at it, with every flow for that connector
enabled. The sandboxes then make changes and deliver them to the running server, so events
flow, jobs run and results appear within a minute. Everything here is labelled SANDBOX.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import uvicorn
from pydantic import SecretStr
from sqlalchemy import select

from connectors.base import DemoCapable, DemoSandbox
from core import audit
from core.auth import create_api_key, create_tenant
from core.connections import create_connection, seal_secrets
from core.db.models import Connection, FlowEnablement, Role, Tenant
from core.sandbox import SandboxServer
from core.services import Services
from core.settings import Settings

DEMO_TENANT = "demo"
SANDBOX_API_KEY = "sk-ant-sandbox"


def start_claude_sandbox(settings: Settings) -> tuple[Settings, SandboxServer | None]:
    """Demo mode without a real Anthropic key: the gateway's upstream is the local SANDBOX.

    With ``SWITCHYARD_ANTHROPIC_API_KEY`` set, the demo calls the real API instead.
    """
    if settings.anthropic_api_key is not None:
        return settings, None
    from core.sandbox.anthropic import AnthropicSandbox

    server = SandboxServer(AnthropicSandbox(api_keys=(SANDBOX_API_KEY,)).app)
    server.start()
    return (
        settings.model_copy(
            update={
                "anthropic_base_url": server.url,
                "anthropic_api_key": SecretStr(SANDBOX_API_KEY),
            }
        ),
        server,
    )


def _sandbox_label(services: Services) -> str:
    key = services.settings.anthropic_api_key
    return " (SANDBOX)" if key is not None and key.get_secret_value() == SANDBOX_API_KEY else ""


async def _tenant(services: Services) -> tuple[Tenant, str]:
    async with services.sessions.begin() as session:
        tenant = await session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT))
        if tenant is None:
            tenant = await create_tenant(session, DEMO_TENANT)
        # A fresh key each start: keys are stored hashed, so an old one cannot be shown.
        key, plaintext = await create_api_key(session, tenant.id, Role.ADMIN, "demo")
        await audit.record(
            session,
            tenant_id=tenant.id,
            actor="demo",
            action="api_key.create",
            object_type="api_key",
            object_id=key.id,
        )
        return tenant, plaintext


async def _connect(services: Services, tenant: Tenant, name: str, sandbox: DemoSandbox) -> str:
    """Create (or re-point, since sandbox ports change per start) the demo connection."""
    factory = services.connectors.registry.require(name)
    connection_name = f"demo-{name}"
    async with services.sessions.begin() as session:
        connection = await session.scalar(
            select(Connection).where(
                Connection.tenant_id == tenant.id, Connection.name == connection_name
            )
        )
        if connection is None:
            connection = await create_connection(
                session,
                tenant_id=tenant.id,
                factory=factory,
                name=connection_name,
                config=sandbox.config,
                secrets=sandbox.secrets,
                keyring=services.keyring,
            )
        else:
            connection.config = dict(sandbox.config)
            connection.secrets_encrypted = seal_secrets(
                services.keyring, connection.id, sandbox.secrets
            )
        enabled = {
            row.flow: row
            for row in await session.scalars(
                select(FlowEnablement).where(FlowEnablement.connection_id == connection.id)
            )
        }
        for flow in services.flows.for_connector(name):
            entry = services.flows.get(flow)
            if flow in enabled or entry is None or not entry.ok:
                continue  # an invalid flow is listed by `switchyard flows validate`
            session.add(
                FlowEnablement(
                    connection_id=connection.id, flow=flow, tenant_id=tenant.id, enabled=True
                )
            )
        return connection.id


async def run_demo(services: Services, server: uvicorn.Server, stop: asyncio.Event) -> None:
    while not server.started:
        if stop.is_set():
            return
        await asyncio.sleep(0.05)
    config = server.config
    base = f"http://{config.host}:{config.port}"
    tenant, key = await _tenant(services)
    sandboxes: list[DemoSandbox] = []
    activities: list[asyncio.Task[None]] = []
    lines = [
        "",
        "Switchyard demo — every external system below is a local SANDBOX.",
        f"  API docs:      {base}/docs",
        f"  demo admin key (shown once): {key}",
        f'  try:           curl -s -H "Authorization: Bearer {key}" {base}/v1/jobs',
        f"  Claude API:    {services.settings.anthropic_base_url}{_sandbox_label(services)}",
        f"  try:           curl -s {base}/v1/messages -H 'x-api-key: {key}' "
        "-H 'x-switchyard-task: summarize' -H 'content-type: application/json' "
        """-d '{"model":"auto","messages":[{"role":"user","content":"Summarize: hello"}]}'""",
    ]
    try:
        for name, factory in sorted(services.connectors.registry.items()):
            if not isinstance(factory, DemoCapable):
                continue
            sandbox = await factory.start_demo_sandbox()
            sandboxes.append(sandbox)
            connection_id = await _connect(services, tenant, name, sandbox)
            hook_url = f"{base}/hooks/{connection_id}"
            lines.append(f"  {sandbox.label}: {sandbox.config} → {hook_url}")
            activities.append(asyncio.create_task(sandbox.activity(hook_url)))
        print("\n".join(lines) + "\n", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for task in activities:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sandbox in sandboxes:
            await sandbox.aclose()
