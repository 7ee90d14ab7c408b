"""A worker process whose ``flow.run`` handler does nothing: measures the queue itself.

Usage: python -m tests.bench.noop_worker DATABASE_URL CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from core.handlers import Handlers, JobContext, JobKind, Outcome
from core.ingest import FLOW_JOB
from core.logging import configure_logging
from core.server import tune_gc
from core.services import build_services
from core.settings import load_settings
from core.worker import run_worker


async def _noop(ctx: JobContext) -> Outcome:
    return Outcome()


async def main(database_url: str, concurrency: int) -> None:
    settings = load_settings(
        database_url=database_url,
        worker_concurrency=concurrency,
        worker_poll_seconds=0.02,
        log_level="warning",
    )
    configure_logging(settings.log_level, settings.log_format)
    services = build_services(settings)
    tune_gc()
    try:
        handlers = Handlers([JobKind(FLOW_JOB, _noop, notify=False)])
        await run_worker(services, handlers, run_scheduler=False)
    finally:
        await services.aclose()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2])))
