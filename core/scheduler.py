"""Polling connections: schedule ``connection.poll`` jobs and run them.

Platforms that cannot push changes are polled from a stored cursor. The worker calls
:func:`schedule_due_polls` every ``scheduler_tick_seconds``; any number of workers may do so
at once, because a connection's ``next_poll_at`` is advanced with a compare-and-set in the
same transaction that enqueues its job (and a live ``poll:<connection>`` dedupe key keeps a
second job out even if two ticks race past that).

A poll job stores each page's events and the cursor that covers them in ONE transaction, so
a crash or a failed page leaves the cursor where the last stored events end: the next poll
asks the platform again from there, and the event table's uniqueness turns the overlap into
duplicates rather than double work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.connections import get_connection
from core.db.models import Connection
from core.db.types import utcnow
from core.errors import ConnectorTerminalError, TerminalError, UnknownConnector
from core.handlers import JobContext, JobKind, Outcome
from core.ingest import store_events
from core.logging import get_logger
from core.queue import NewJob, enqueue
from core.retry import RetryPolicy

if TYPE_CHECKING:
    from core.services import Services

POLL_JOB = "connection.poll"
MAX_PAGES_PER_JOB = 20  # a busy platform cannot pin one job forever; the next tick goes on
POLL_RETRY = RetryPolicy(max_attempts=5)

log = get_logger("switchyard.scheduler")


def poll_job_kind() -> JobKind:
    return JobKind(POLL_JOB, handle_poll, retry=POLL_RETRY, notify=False)


def _dedupe_key(connection_id: str) -> str:
    return f"poll:{connection_id}"


async def schedule_due_polls(services: Services) -> int:
    """Enqueue one poll job per due polling connection; returns how many were enqueued."""
    now = utcnow()
    async with services.sessions() as session:
        due = (
            await session.execute(
                select(
                    Connection.id,
                    Connection.tenant_id,
                    Connection.connector,
                    Connection.poll_interval_seconds,
                ).where(
                    Connection.poll_interval_seconds.is_not(None),
                    Connection.next_poll_at.is_not(None),
                    Connection.next_poll_at <= now,
                )
            )
        ).all()
    scheduled = 0
    for connection_id, tenant_id, connector, interval in due:
        try:
            factory = services.connectors.registry.require(connector)
        except UnknownConnector:
            log.warning("polling connection's connector is not installed", connection=connection_id)
            continue
        if not factory.supports_polling or interval is None:
            continue
        async with services.sessions.begin() as session:
            if not await _advance(session, connection_id, now, now + timedelta(seconds=interval)):
                continue  # another worker scheduled it since we looked
            scheduled += len(
                await enqueue(
                    session,
                    [
                        NewJob(
                            kind=POLL_JOB,
                            tenant_id=tenant_id,
                            connection_id=connection_id,
                            dedupe_key=_dedupe_key(connection_id),
                            max_attempts=POLL_RETRY.max_attempts,
                        )
                    ],
                )
            )
    return scheduled


async def _advance(
    session: AsyncSession, connection_id: str, now: datetime, next_at: datetime
) -> bool:
    """Compare-and-set ``next_poll_at``: True only for the one transaction that moved it."""
    result = await session.execute(
        update(Connection)
        .where(Connection.id == connection_id, Connection.next_poll_at <= now)
        # Keeping updated_at keeps the pooled connector: the cursor and schedule are not config.
        .values(next_poll_at=next_at, updated_at=Connection.updated_at)
        .returning(Connection.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


class CursorMoved(TerminalError):
    problem_type = "poll-cursor-moved"
    title = "Another poll advanced the connection's cursor meanwhile"
    status = 409


async def handle_poll(ctx: JobContext) -> Outcome:
    """Poll one connection page by page; each page commits with the cursor that covers it."""
    services, job = ctx.services, ctx.job
    if job.connection_id is None:
        raise TerminalError(f"poll job {job.id} has no connection")
    totals = {"pages": 0, "accepted": 0, "duplicates": 0, "jobs": 0}
    for _ in range(MAX_PAGES_PER_JOB):
        async with services.sessions() as session:
            connection = await get_connection(session, job.connection_id, None)
        connector = await services.connectors.get(connection)
        try:
            page = await connector.poll(connection.cursor)
        except NotImplementedError as exc:
            raise ConnectorTerminalError(
                f"connector {connection.connector!r} does not support polling"
            ) from exc
        async with services.sessions.begin() as session:
            # Lock the row and re-check the cursor: if it moved (a lost lease let another
            # poll run), this page was fetched from a stale position and is not ours to store.
            current = (
                await session.execute(
                    select(Connection).where(Connection.id == connection.id).with_for_update()
                )
            ).scalar_one()
            if current.cursor != connection.cursor:
                raise CursorMoved(f"cursor of {connection.id} moved while polling")
            result = await store_events(
                session, current, page.events, services.flows, trace_id=job.trace_id
            )
            await session.execute(
                update(Connection)
                .where(Connection.id == connection.id)
                .values(cursor=_plain(page.cursor), updated_at=Connection.updated_at)
                .execution_options(synchronize_session=False)
            )
        totals["pages"] += 1
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        totals["jobs"] += len(result.jobs)
        if not page.more:
            break
    log.debug("connection polled", connection=job.connection_id, **totals)
    return Outcome(result=totals)


def _plain(cursor: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if cursor is None else dict(cursor)
