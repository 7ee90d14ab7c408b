"""Process assembly: the API server (with an in-process worker in embedded mode) and the
standalone worker. This is the only place that wires web, worker and callbacks together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys

import uvicorn
from prometheus_client import start_http_server

from core.callbacks import make_finish_listener
from core.db.migrate import assert_migrated
from core.handlers import Handlers
from core.jobkinds import builtin_handlers
from core.logging import get_logger
from core.queue import FinishListener
from core.services import build_services
from core.settings import Settings
from core.web.app import create_app
from core.worker import Worker, run_worker

log = get_logger(__name__)


def tune_gc() -> None:
    """Make the cyclic GC's pauses short and rare in a long-running server.

    By default a generation-0 collection runs every 700 net allocations and each one walks
    every young object; under webhook load that meant a pause every few requests and an ack
    p99 of ~170 ms at 1,000 deliveries/s (PostgreSQL, 2 cores). Freezing what start-up
    allocated (it lives as long as the process) and collecting less often brought that
    experiment's p99 to ~40 ms (tests/bench; what remains is mostly commit fsync).
    Reference counting still frees almost everything at once; only cyclic garbage waits.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def tune_switch_interval() -> None:
    """Let the event loop take the GIL back within 1 ms instead of CPython's 5 ms.

    Background threads do CPU work while holding the GIL (the call audit's sealing, SQLite
    binding rows in aiosqlite's thread); with the default interval a request arriving
    meanwhile could wait up to 5 ms for the loop, which is what the gateway's p99 at
    concurrency 1 was made of. The cost is more frequent switching when threads contend.
    """
    sys.setswitchinterval(0.001)


def _callbacks_listener(handlers: Handlers) -> FinishListener:
    """Deliveries for finished jobs, except kinds registered as silent (notify=False)."""
    return make_finish_listener(kind.name for kind in handlers if not kind.notify)


async def serve(
    settings: Settings,
    *,
    demo: bool = False,
    host: str | None = None,
    port: int | None = None,
    worker: bool | None = None,
) -> None:
    claude_sandbox = None
    if demo:
        from core.demo import start_claude_sandbox

        settings, claude_sandbox = start_claude_sandbox(settings)
    services = build_services(settings)
    try:
        await assert_migrated(services.engine)
        app = create_app(services)
        config = uvicorn.Config(
            app,
            host=host or settings.host,
            port=port or settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        )
        server = uvicorn.Server(config)
        tune_gc()
        tune_switch_interval()
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if settings.is_embedded if worker is None else worker:
            handlers = builtin_handlers()
            in_process = Worker(services, handlers, listeners=[_callbacks_listener(handlers)])
            app.state.wake_worker = in_process.wake
            tasks.append(asyncio.create_task(in_process.run(stop), name="worker"))
        if demo:
            from core.demo import run_demo

            tasks.append(asyncio.create_task(run_demo(services, server, stop), name="demo"))
        tasks.append(asyncio.create_task(_stop_with(server, stop), name="stop-watch"))
        try:
            await server.serve()
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await services.aclose()
        if claude_sandbox is not None:
            claude_sandbox.stop()


async def _stop_with(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Start draining the in-process worker as soon as uvicorn starts its shutdown (it owns
    SIGTERM/SIGINT), so HTTP and jobs drain together within one grace period."""
    # uvicorn exposes its shutdown only as a flag, not an event: poll it.
    while not server.should_exit and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    stop.set()


async def run_standalone_worker(settings: Settings) -> None:
    services = build_services(settings)
    try:
        await assert_migrated(services.engine)
        if settings.worker_metrics_port is not None:
            # A worker has no API: its job metrics get their own scrape endpoint.
            start_http_server(
                settings.worker_metrics_port,
                addr=settings.host,
                registry=services.metrics.registry,
            )
        tune_gc()
        handlers = builtin_handlers()
        await run_worker(services, handlers, listeners=[_callbacks_listener(handlers)])
    finally:
        await services.aclose()
