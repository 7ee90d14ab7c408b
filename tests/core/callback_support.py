"""Helpers for the callback tests: a real HTTP receiver on 127.0.0.1, a signature check
written from ``hmac``/``hashlib`` alone (so a bug in ``core.signing`` cannot hide itself),
and the queue steps a worker takes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select, update

from core import callbacks
from core.callbacks import DELIVER_KIND, deliver_job_kind, on_job_finished
from core.db.models import Delivery, Job, JobStatus, Subscription
from core.db.types import utcnow
from core.errors import TerminalError
from core.handlers import JobContext
from core.queue import FinishListener, JobQueue, NewJob, enqueue
from core.services import Services

TOLERANCE = 300


# ------------------------------------------------------------------ receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Answers POSTs with scripted statuses (then 200) and records every request."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                        )
                    )
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                answer = b'{"ok": true}' if status < 300 else b"receiver says no"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/switchyard"
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(0.05), daemon=True
        )

    def answer(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.script.extend([(status, headers or {})] * times)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def verify_independently(secret: str, received: Received) -> dict[str, Any]:
    """What a subscriber would write: parse the header, recompute the HMAC, check age."""
    fields: dict[str, list[str]] = {}
    for part in received.headers["switchyard-signature"].split(","):
        key, _, value = part.partition("=")
        fields.setdefault(key.strip(), []).append(value.strip())
    timestamp = int(fields["t"][0])
    assert abs(received.at - timestamp) <= TOLERANCE, "stale or future timestamp"
    message = str(timestamp).encode() + b"." + received.body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert any(hmac.compare_digest(expected, sig) for sig in fields["v1"]), "bad signature"
    parsed: dict[str, Any] = json.loads(received.body)
    return parsed


def make_queue(services: Services, *listeners: FinishListener) -> JobQueue:
    return JobQueue(
        services.sessions,
        worker_id="test-worker",
        lease_seconds=30,
        listeners=listeners or [on_job_finished],
    )


async def subscribe(
    services: Services, tenant_id: str, url: str, events: list[str] | None = None
) -> tuple[Subscription, str]:
    async with services.sessions.begin() as session:
        return await callbacks.create_subscription(
            session,
            tenant_id=tenant_id,
            url=url,
            events=events or ["job.done", "job.dead"],
            services=services,
        )


async def finish_job(
    services: Services,
    queue: JobQueue,
    tenant_id: str | None,
    *,
    status: JobStatus = JobStatus.DONE,
    kind: str = "flow.run",
) -> int:
    """Enqueue, claim and finish one job of ``kind`` the way a worker does."""
    async with services.sessions.begin() as session:
        [job_id] = await enqueue(
            session, [NewJob(kind=kind, tenant_id=tenant_id, payload={"n": 1}, flow="f")]
        )
    [claimed] = await queue.claim([kind], 1)
    assert claimed.id == job_id
    if status is JobStatus.DEAD:
        assert await queue.fail(claimed, TerminalError("nope"), callbacks.DELIVERY_RETRY)
    else:
        assert await queue.complete(claimed, {"answer": 42}, status=status)
    return job_id


async def run_delivery(services: Services, queue: JobQueue) -> JobStatus | None:
    """Claim one callback.deliver job and run it as the worker would; its new status."""
    kind = deliver_job_kind()
    # Retries are scheduled in the future; make the next one due now instead of waiting.
    async with services.sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.kind == DELIVER_KIND, Job.status == JobStatus.QUEUED.value)
            .values(run_at=utcnow())
        )
    [job] = await queue.claim([DELIVER_KIND], 1)
    try:
        outcome = await kind.handler(JobContext(job=job, services=services))
    except Exception as exc:
        return await queue.fail(job, exc, kind.retry, notify=kind.notify)
    assert await queue.complete(job, outcome.result if outcome else None, notify=kind.notify)
    return JobStatus.DONE


async def deliveries(services: Services) -> list[Delivery]:
    async with services.sessions() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


async def deliver_jobs(services: Services) -> list[Job]:
    async with services.sessions() as session:
        query = select(Job).where(Job.kind == DELIVER_KIND).order_by(Job.id)
        return list(await session.scalars(query))


def callback_count(services: Services, outcome: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "switchyard_callback_deliveries_total", {"outcome": outcome}
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def keep_alive_server(
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, list[list[str]]]]:
    """An HTTP/1.1 server (HTTPS with ``tls``) on 127.0.0.1 that keeps connections open
    until the client closes them. Yields its port and, per connection, the Host of each
    request it carried."""
    connections: list[list[str]] = []
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        handlers.add(handler)
        writers.append(writer)
        hosts: list[str] = []
        connections.append(hosts)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                fields = dict(
                    line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if line
                )
                await reader.readexactly(int(fields.get("content-length", "0")))
                hosts.append(fields["host"])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()
        for writer in writers:  # a connection a client left open ends here
            writer.close()
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        await server.wait_closed()
