"""A worker process whose ``flow.run`` handler does nothing: measures the queue itself.

Usage: python -m tests.bench.noop_worker DATABASE_URL CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys

from core.handlers import Handlers, JobContext, JobKind, Outcome
from core.ingest import FLOW_JOB
from core.services import build_services
from core.settings import load_settings
from core.worker import run_worker


async def _noop(ctx: JobContext) -> Outcome:
    return Outcome()


async def main(database_url: str, concurrency: int) -> None:
    settings = load_settings(
        database_url=database_url, worker_concurrency=concurrency, worker_poll_seconds=0.02
    )
    services = build_services(settings)
    try:
        handlers = Handlers([JobKind(FLOW_JOB, _noop, notify=False)])
        await run_worker(services, handlers, run_scheduler=False)
    finally:
        await services.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
