"""Test doubles and files the connector suites share, and Switchyard as their end-to-end
tests run it."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme
from pydantic import SecretStr
from sqlalchemy import select

from connectors.base import MemoryStateStore
from connectors.registry import ConnectorRegistry
from connectors.salesforce.sandbox_tls import TlsFiles
from core.auth import Principal, create_api_key, create_tenant
from core.connections import create_connection
from core.db.models import FINISHED, Job, JobStatus, ReviewItem, Role
from core.flows.catalog import FlowCatalog
from core.jobkinds import builtin_handlers
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker

# The connectors' own in-process store; tests share one between the connectors they build,
# as workers share the database store.
MemoryState = MemoryStateStore


def trusted_tls(folder: Path) -> TlsFiles:
    """A throwaway CA (which the client under test trusts) and a certificate for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(files.ca_file)
    cert.cert_chain_pems[0].write_to_path(files.cert_file)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(files.cert_file, append=True)
    cert.private_key_pem.write_to_path(files.key_file)
    return files


# ------------------------------------------------------------------ end to end

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
PUBLIC = "http://switchyard.test"


def settled(jobs: list[Job], expected: int) -> bool:
    """At least ``expected`` flow jobs exist, and each has finished or waits for a reviewer."""
    waiting = (*FINISHED, JobStatus.AWAITING_REVIEW)
    return len(jobs) >= expected and all(j.status in waiting for j in jobs)


@dataclass
class Switchyard:
    """Switchyard as an end-to-end test drives it: its API (``client``), a running worker,
    and one tenant with one connection to the platform's SANDBOX."""

    services: Services
    client: httpx.AsyncClient
    worker: Worker
    tenant_id: str
    connection_id: str

    @property
    def hook_url(self) -> str:
        """Where the platform sends the connection's webhooks."""
        return f"{PUBLIC}/hooks/{self.connection_id}"

    async def jobs(self) -> list[Job]:
        async with self.services.sessions() as session:
            query = select(Job).where(Job.kind == "flow.run").order_by(Job.id)
            return list(await session.scalars(query))

    async def settle(
        self,
        deliver: Callable[[httpx.AsyncClient], Awaitable[object]],
        done: Callable[[list[Job]], bool],
        timeout: float = 30,
    ) -> list[Job]:
        """``deliver`` what the platform has to send to Switchyard, round after round, until
        ``done(jobs)`` holds for the flow jobs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await deliver(self.client)
            jobs = await self.jobs()
            if done(jobs):
                return jobs
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"jobs did not settle: {[(j.id, j.status, j.last_error) for j in await self.jobs()]}"
        )

    async def review_item(self, job_id: int) -> ReviewItem:
        async with self.services.sessions() as session:
            item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job_id))
        assert item is not None
        return item

    async def reviewer(self) -> Principal:
        async with self.services.sessions.begin() as session:
            row, _ = await create_api_key(session, self.tenant_id, Role.REVIEWER, name="rev")
        return Principal(self.tenant_id, row.id, Role.REVIEWER)


@asynccontextmanager
async def start_switchyard(
    settings: Settings,
    claude_url: str,
    connector: str,
    *,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    flows: Iterable[str],
    concurrency: int = 4,
) -> AsyncIterator[Switchyard]:
    """Switchyard with the sample flows, talking to the Anthropic SANDBOX at ``claude_url``:
    tenant "acme" has a ``connector`` connection (named after it) with ``flows`` enabled, and
    a worker runs the jobs until the block ends."""
    services = build_services(
        settings.model_copy(
            update={
                "anthropic_base_url": claude_url,
                "anthropic_api_key": SecretStr("sk-ant-sandbox"),
                "mappings_dir": MAPPINGS,
                "public_url": PUBLIC,
            }
        ),
        registry=ConnectorRegistry.from_entry_points(),
        flows=FlowCatalog.load(MAPPINGS),
    )
    try:
        async with services.sessions.begin() as session:
            tenant = await create_tenant(session, "acme")
            _, admin_key = await create_api_key(session, tenant.id, Role.ADMIN, name="admin")
            connection = await create_connection(
                session,
                tenant_id=tenant.id,
                factory=services.connectors.registry.require(connector),
                name=connector,
                config=config,
                secrets=secrets,
                keyring=services.keyring,
            )
        worker = Worker(services, builtin_handlers(), run_scheduler=False, concurrency=concurrency)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            # As an admin enables them: refused unless the platform's metadata has every
            # field the flow reads and writes, writable, with the values its answers use.
            for flow in flows:
                enabled = await client.put(
                    f"/v1/connections/{connection.id}/flows/{flow}",
                    json={"enabled": True},
                    headers={"authorization": f"Bearer {admin_key}"},
                )
                assert enabled.status_code == 200, enabled.text
            yield Switchyard(services, client, worker, tenant.id, connection.id)
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await services.aclose()
        # Closing a requests session only drops its pools (urllib3 2): their sockets close
        # when collected, and a SANDBOX's TLS server waits for them when it stops.
        gc.collect()
