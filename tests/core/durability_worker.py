"""A real worker process for the durability and shutdown tests.

    python -m tests.core.durability_worker DATABASE_URL WORKER_ID [--concurrency N]
        [--lease SECONDS] [--sleep SECONDS] [--grace SECONDS]

It runs :func:`core.worker.run_worker` (SIGTERM/SIGINT stop it gracefully) with one job
kind, ``test.effect``, whose handler

1. appends ``(job id, worker)`` to ``invocations`` in its own transaction, so the log of
   every run survives even when the process is killed right after;
2. sleeps ``payload["sleep"]`` seconds (or ``--sleep``);
3. applies its effect keyed by job id: ``INSERT … ON CONFLICT (job_id) DO NOTHING`` into
   ``effects``, so a second run of the same job cannot apply it twice.

The test creates both tables (:data:`TABLES`) before starting workers.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.registry import ConnectorRegistry
from core.crypto import generate_key
from core.flows.catalog import FlowCatalog
from core.handlers import Handlers, JobContext, JobKind, Outcome
from core.logging import configure_logging
from core.retry import RetryPolicy
from core.services import build_services
from core.settings import load_settings
from core.worker import run_worker

KIND = "test.effect"
TABLES = (
    "CREATE TABLE effects (job_id BIGINT PRIMARY KEY, worker VARCHAR(100) NOT NULL)",
    "CREATE TABLE invocations (job_id BIGINT NOT NULL, worker VARCHAR(100) NOT NULL)",
)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for name in ("effects", "invocations"):
            await connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
        for statement in TABLES:
            await connection.execute(text(statement))


def effect_kind(
    worker_id: str, default_sleep: float = 0.0, max_sleep: float | None = None
) -> JobKind:
    """The job kind the durability tests run, usable in-process too."""

    async def handler(ctx: JobContext) -> Outcome:
        job_id = ctx.job.id
        async with ctx.services.sessions.begin() as session:
            await session.execute(
                text("INSERT INTO invocations (job_id, worker) VALUES (:job, :worker)"),
                {"job": job_id, "worker": worker_id},
            )
        pause = float(ctx.job.payload.get("sleep", default_sleep))
        await asyncio.sleep(pause if max_sleep is None else min(pause, max_sleep))
        async with ctx.services.sessions.begin() as session:
            await session.execute(
                text(
                    "INSERT INTO effects (job_id, worker) VALUES (:job, :worker) "
                    "ON CONFLICT (job_id) DO NOTHING"
                ),
                {"job": job_id, "worker": worker_id},
            )
        return Outcome(result={"worker": worker_id})

    return JobKind(KIND, handler, retry=RetryPolicy(max_attempts=5, initial=0.05, maximum=0.5))


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(
        database_url=args.database_url,
        encryption_keys=[f"test:{generate_key()}"],
        worker_concurrency=args.concurrency,
        lease_seconds=args.lease,
        shutdown_grace_seconds=args.grace,
        worker_poll_seconds=0.05,
        scheduler_tick_seconds=1.0,
        log_level="warning",
        log_format="console",
    )
    configure_logging(settings.log_level, settings.log_format)
    services = build_services(settings, registry=ConnectorRegistry([]), flows=FlowCatalog())
    try:
        handlers = Handlers([effect_kind(args.worker_id, args.sleep)])
        await run_worker(services, handlers, worker_id=args.worker_id)
    finally:
        await services.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("worker_id")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--sleep", type=float, default=0.005)
    parser.add_argument("--grace", type=float, default=10.0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
