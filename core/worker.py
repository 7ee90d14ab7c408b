"""The worker: claims jobs, runs them with bounded concurrency, keeps their leases alive.

One asyncio loop per process runs

* the claim loop: lease up to the number of free slots, only for kinds this worker has
  handlers for, then sleep ``worker_poll_seconds`` or until :meth:`Worker.wake`;
* one task per job: the handler runs in its own task inside the job's log context, then
  the outcome is recorded, fenced by the lease;
* the renewer: extends every in-flight lease each ``lease/3``; a lease that could not be
  extended belongs to someone else now (the job was cancelled, or recovered after a stall),
  so that handler is cancelled and its result would be refused anyway;
* recovery (every ``lease/2``): jobs whose worker vanished go back to the queue;
* the polling scheduler (every ``scheduler_tick_seconds``), see :mod:`core.scheduler`;
* housekeeping (every ``housekeeping_seconds``), see :mod:`core.housekeeping`.

Shutdown (``stop`` set, e.g. by SIGTERM): stop claiming, let in-flight jobs finish for up to
``shutdown_grace_seconds``, then cancel the rest and release them unrun (the attempt does
not count), so nothing this worker owned is left ``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from core.db.models import JobStatus
from core.db.types import utcnow
from core.errors import TerminalError
from core.gateway.message_batches import MessageBatches
from core.handlers import Handlers, JobContext, JobKind, Outcome
from core.housekeeping import housekeep
from core.logging import get_logger
from core.queue import ClaimedJob, FinishListener, JobQueue
from core.scheduler import POLL_JOB, poll_job_kind, schedule_due_polls
from core.services import Services

log = get_logger("switchyard.worker")

OUTCOME_STATUSES = (JobStatus.DONE, JobStatus.AWAITING_REVIEW, JobStatus.AWAITING_BATCH)
MAX_CLAIM_BACKOFF = 30.0


class UnsupportedOutcome(TerminalError):
    problem_type = "unsupported-outcome"
    title = "A handler reported a status a job cannot finish with"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _InFlight:
    """A job whose handler is running (not yet recording its outcome)."""

    job: ClaimedJob
    handler: asyncio.Task[Outcome | None]
    lost: bool = False  # the lease went to someone else: drop the result
    releasing: bool = False  # shutdown grace expired: give the job back


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds``; True when it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class Worker:
    def __init__(
        self,
        services: Services,
        handlers: Handlers,
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        run_scheduler: bool = True,
        listeners: Sequence[FinishListener] = (),
    ) -> None:
        settings = services.settings
        if run_scheduler and POLL_JOB not in handlers:
            handlers = Handlers([*handlers, poll_job_kind()])
        self.services = services
        self.handlers = handlers
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency or settings.worker_concurrency
        self.run_scheduler = run_scheduler
        self.queue = JobQueue(
            services.sessions,
            worker_id=self.worker_id,
            lease_seconds=settings.lease_seconds,
            listeners=listeners,
        )
        self._lease = settings.lease_seconds
        self._refill = max(1, self.concurrency // 4)
        self._wakeup = asyncio.Event()
        self._slots: set[asyncio.Task[None]] = set()
        self._inflight: dict[int, _InFlight] = {}
        self._message_batches = MessageBatches(
            services.gateway, services.sessions, services.keyring, settings.gateway
        )

    def wake(self) -> None:
        """Claim now instead of at the next poll (an in-process enqueue just committed)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.services.settings
        kinds = self.handlers.names()
        log.info(
            "worker started", worker_id=self.worker_id, concurrency=self.concurrency, kinds=kinds
        )
        drained = asyncio.Event()
        forward = asyncio.create_task(self._forward(stop))
        renewer = asyncio.create_task(self._periodically(drained, self._lease / 3, self._renew))
        periodic = [
            asyncio.create_task(
                self._periodically(stop, self._lease / 2, self._recover, at_start=True)
            )
        ]
        if self.run_scheduler:
            tick = settings.scheduler_tick_seconds
            periodic.append(
                asyncio.create_task(self._periodically(stop, tick, self._schedule, at_start=True))
            )
            chores = settings.housekeeping_seconds
            periodic.append(asyncio.create_task(self._periodically(stop, chores, self._housekeep)))
            every = self._message_batches.interval
            periodic.append(asyncio.create_task(self._periodically(stop, every, self._batches)))
        try:
            await self._claim_loop(stop, kinds)
            await asyncio.gather(*periodic)
            await self._drain(settings.shutdown_grace_seconds)
            drained.set()
            await renewer
        finally:
            # Normally only `forward` is left; after an error or an outside cancel, everything
            # is: cancelled jobs keep their leases until expiry, then recovery requeues them.
            drained.set()
            leftovers = [t for t in (forward, renewer, *periodic, *self._slots) if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:  # bounded: a handler may swallow cancellation
                await asyncio.wait(leftovers, timeout=5.0)
        log.info("worker stopped", worker_id=self.worker_id)

    async def _forward(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _claim_loop(self, stop: asyncio.Event, kinds: list[str]) -> None:
        poll = self.services.settings.worker_poll_seconds
        failures = 0
        while not stop.is_set():
            free = self.concurrency - len(self._slots)
            claimed: list[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self.queue.claim(kinds, free)
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("claiming jobs failed; backing off", failures=failures)
            for job in claimed:
                self._start(job)
            if free > 0 and len(claimed) == free:
                continue  # the queue may hold more; wait for a free slot next round
            # While the database is unreachable, back off instead of hammering it.
            await _wait(self._wakeup, min(poll * 2**failures, max(poll, MAX_CLAIM_BACKOFF)))
            self._wakeup.clear()

    def _start(self, job: ClaimedJob) -> None:
        slot = asyncio.create_task(
            self._run_job(self.handlers[job.kind], job), name=f"job-{job.id}"
        )
        self._slots.add(slot)
        slot.add_done_callback(self._slot_done)

    def _slot_done(self, slot: asyncio.Task[None]) -> None:
        self._slots.discard(slot)
        # Refill in small batches rather than one claim per finished job: fewer claim
        # transactions, which matters most on SQLite's single write lock.
        if self.concurrency - len(self._slots) >= self._refill:
            self._wakeup.set()
        if not slot.cancelled() and (exc := slot.exception()) is not None:
            log.error("job task crashed", task=slot.get_name(), exc_info=exc)

    async def _run_job(self, kind: JobKind, job: ClaimedJob) -> None:
        with structlog.contextvars.bound_contextvars(
            trace_id=job.trace_id, tenant=job.tenant_id, job_id=job.id, kind=job.kind
        ):
            context = JobContext(job=job, services=self.services)

            async def call() -> Outcome | None:
                return await kind.handler(context)

            entry = _InFlight(job, asyncio.create_task(call(), name=f"handler-{job.id}"))
            self._inflight[job.id] = entry
            waited = (utcnow() - job.run_at).total_seconds()
            self.services.metrics.job_wait.labels(kind.name).observe(max(0.0, waited))
            started = time.monotonic()
            outcome: Outcome | None = None
            error: BaseException | None = None
            try:
                outcome = await entry.handler
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the worker itself is being torn down
                error = exc
            except Exception as exc:
                error = exc
            finally:
                # From here on the renewer leaves the job alone; recording the outcome is
                # one short fenced transaction.
                self._inflight.pop(job.id, None)
            self._observe(kind, started)
            if isinstance(error, asyncio.CancelledError):
                await self._after_cancel(kind, entry, error)
            elif error is not None:
                await self._failed(kind, job, error)
            else:
                await self._finished(kind, job, Outcome() if outcome is None else outcome)

    def _observe(self, kind: JobKind, started: float) -> None:
        self.services.metrics.job_latency.labels(kind.name).observe(time.monotonic() - started)

    def _count(self, kind: JobKind, outcome: str) -> None:
        self.services.metrics.jobs_finished.labels(kind.name, outcome).inc()

    async def _finished(self, kind: JobKind, job: ClaimedJob, outcome: object) -> None:
        if not isinstance(outcome, Outcome) or outcome.status not in OUTCOME_STATUSES:
            shown = outcome.status.value if isinstance(outcome, Outcome) else type(outcome)
            error = UnsupportedOutcome(f"handler returned {shown!r}, not a finished Outcome")
            await self._failed(kind, job, error)
            return
        try:
            recorded = await self.queue.complete(
                job, outcome.result, status=outcome.status, notify=kind.notify
            )
        except Exception:
            log.exception("recording the outcome failed; the job runs again after its lease")
            self._count(kind, "error")
            return
        if not recorded:
            self._count(kind, "lost")
            log.warning("outcome dropped: the lease was lost or the job cancelled meanwhile")
            return
        self._count(kind, outcome.status.value)
        log.debug("job finished", status=outcome.status.value)

    async def _failed(self, kind: JobKind, job: ClaimedJob, error: BaseException) -> None:
        try:
            status = await self.queue.fail(job, error, kind.retry, notify=kind.notify)
        except Exception:
            log.exception("recording the failure failed; the job runs again after its lease")
            self._count(kind, "error")
            return
        metrics = self.services.metrics
        if status is None:
            self._count(kind, "lost")
            log.warning("failure dropped: the lease was lost or the job cancelled meanwhile")
        elif status is JobStatus.QUEUED:
            metrics.job_retries.labels(kind.name).inc()
            self._count(kind, "retry")
            log.warning("job failed; retry scheduled", attempt=job.attempts, exc_info=error)
        else:
            metrics.dead_letters.labels(kind.name).inc()
            self._count(kind, "dead")
            log.error("job failed; moved to dead letters", attempt=job.attempts, exc_info=error)

    async def _after_cancel(
        self, kind: JobKind, entry: _InFlight, error: asyncio.CancelledError
    ) -> None:
        if entry.lost:
            self._count(kind, "lost")
        elif entry.releasing:
            try:
                released = await self.queue.release(entry.job)
            except Exception:
                log.exception("releasing the job failed; it runs again after its lease")
                return
            log.info("job released at shutdown", released=released)
            self._count(kind, "released")
        else:  # the handler raised CancelledError on its own: an ordinary failure
            await self._failed(kind, entry.job, error)

    async def _drain(self, grace: float) -> None:
        if not self._slots:
            return
        log.info("stopping: waiting for in-flight jobs", jobs=len(self._slots), grace=grace)
        pending = set(self._slots)
        if grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if not pending:
            return
        await asyncio.sleep(0)  # jobs claimed just before the stop register their handlers
        for entry in list(self._inflight.values()):
            entry.releasing = True
            entry.handler.cancel()
        # A handler that swallows cancellation cannot hold the process forever: its lease
        # expires and recovery requeues the job.
        _, stuck = await asyncio.wait(pending, timeout=max(self._lease, 5.0))
        if stuck:
            log.error(
                "handlers ignored cancellation; leaving them to lease expiry", jobs=len(stuck)
            )

    async def _periodically(
        self,
        stop: asyncio.Event,
        interval: float,
        action: Callable[[], Awaitable[None]],
        *,
        at_start: bool = False,
    ) -> None:
        if at_start or not await _wait(stop, interval):
            while True:
                try:
                    await action()
                except Exception:
                    log.exception("periodic worker task failed", task=action.__name__)
                if await _wait(stop, interval):
                    return

    async def _renew(self) -> None:
        entries = [entry for entry in self._inflight.values() if not entry.lost]
        if not entries:
            return
        started = time.monotonic()
        held = await self.queue.renew([entry.job for entry in entries])
        if (took := time.monotonic() - started) > self._lease / 3:
            # Leases are at risk: the database is too slow (or locked) for this lease length.
            log.warning("lease renewal was slow", seconds=round(took, 2), lease=self._lease)
        for entry in entries:
            job = entry.job
            if job.id in held or self._inflight.get(job.id) is not entry or entry.handler.done():
                continue
            entry.lost = True
            entry.handler.cancel()
            log.warning(
                "lease lost; cancelling the handler (job cancelled or taken over)",
                job_id=job.id,
                trace_id=job.trace_id,
                kind=job.kind,
            )

    async def _recover(self) -> None:
        recovered = await self.queue.recover_expired()
        if recovered:
            self.services.metrics.leases_recovered.inc(recovered)
            log.warning("recovered jobs whose worker stopped renewing", jobs=recovered)
            self.wake()

    async def _schedule(self) -> None:
        if await schedule_due_polls(self.services):
            self.wake()

    async def _housekeep(self) -> None:
        await housekeep(self.services)

    async def _batches(self) -> None:  # submit, poll, resolve (core.gateway.message_batches)
        if (await self._message_batches.tick()).requeued:
            self.wake()


async def run_worker(
    services: Services,
    handlers: Handlers,
    *,
    worker_id: str | None = None,
    concurrency: int | None = None,
    run_scheduler: bool = True,
    listeners: Sequence[FinishListener] = (),
) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    try:
        worker = Worker(
            services,
            handlers,
            worker_id=worker_id,
            concurrency=concurrency,
            run_scheduler=run_scheduler,
            listeners=listeners,
        )
        await worker.run(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    log.info("shutdown requested", signal=signal.Signals(signum).name)
    stop.set()
