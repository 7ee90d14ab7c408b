"""Durable ingestion: store change events and enqueue their flow jobs in ONE transaction.

Webhook ingress and polling both end here. An event is unique per connection and platform
event id, so a redelivery (or 20 concurrent copies of one delivery) stores one event and
enqueues one job per matching enabled flow; the copies are counted as duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import ChangeEvent, IngestResult
from core.db.dialect import insert_ignoring_conflicts
from core.db.models import Connection, Event, FlowEnablement
from core.db.types import utcnow
from core.flows.catalog import FlowCatalog
from core.queue import NewJob, enqueue

FLOW_JOB = "flow.run"


async def enabled_flows(session: AsyncSession, connection_id: str) -> dict[str, bool]:
    rows = await session.execute(
        select(FlowEnablement.flow, FlowEnablement.enabled).where(
            FlowEnablement.connection_id == connection_id
        )
    )
    return dict(rows.tuples().all())


async def store_events(
    session: AsyncSession,
    connection: Connection,
    events: Sequence[ChangeEvent],
    flows: FlowCatalog,
    *,
    trace_id: str,
) -> IngestResult:
    """Insert new events and their jobs in the caller's transaction (the caller commits)."""
    if not events:
        return IngestResult(accepted=0, duplicates=0, jobs=[])
    # The same event twice in one body is one event.
    unique = list({event.platform_event_id: event for event in events}.values())
    now = utcnow()
    rows = [
        {
            "tenant_id": connection.tenant_id,
            "connection_id": connection.id,
            "platform_event_id": event.platform_event_id,
            "object": event.object,
            "record_id": event.record_id,
            "change_type": event.change_type.value,
            "changed_fields": list(event.changed_fields),
            "data": event.data,
            "occurred_at": event.occurred_at,
            "received_at": now,
            "trace_id": trace_id,
        }
        for event in unique
    ]
    statement = insert_ignoring_conflicts(
        session,
        Event.__table__,  # type: ignore[arg-type]
        ["connection_id", "platform_event_id"],
    ).returning(Event.id, Event.platform_event_id)
    inserted = dict((await session.execute(statement, rows)).tuples().all())
    new_ids = {platform_id: event_id for event_id, platform_id in inserted.items()}

    enabled = await enabled_flows(session, connection.id)
    jobs = [
        NewJob(
            kind=FLOW_JOB,
            tenant_id=connection.tenant_id,
            connection_id=connection.id,
            flow=flow,
            event_id=new_ids[event.platform_event_id],
            payload={"object": event.object, "record_id": event.record_id},
            trace_id=trace_id,
        )
        for event in unique
        if event.platform_event_id in new_ids
        for flow in flows.matching(connection.connector, event, enabled)
    ]
    job_ids = await enqueue(session, jobs)
    return IngestResult(accepted=len(new_ids), duplicates=len(events) - len(new_ids), jobs=job_ids)
