"""Durable ingestion: store change events and enqueue their flow jobs in ONE transaction.

Webhook ingress and polling both end here. An event is unique per connection and platform
event id, so a redelivery (or 20 concurrent copies of one delivery) stores one event and
enqueues one job per matching enabled flow; the copies are counted as duplicates.

:func:`store_batch` stores the events of several deliveries in one transaction with a
handful of statements, whatever the batch size; :class:`core.ingest_writer.IngestWriter`
uses it to group-commit concurrent webhook requests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import ChangeEvent, IngestResult
from core.db.dialect import insert_ignoring_conflicts
from core.db.models import Connection, Event, FlowEnablement
from core.db.types import utcnow
from core.flows.catalog import FlowCatalog
from core.queue import NewJob, enqueue

FLOW_JOB = "flow.run"


@dataclass(frozen=True)
class Delivery:
    """One delivery's parsed events, ready to store."""

    connection_id: str
    tenant_id: str
    connector: str
    events: Sequence[ChangeEvent]
    trace_id: str

    @classmethod
    def of(cls, connection: Connection, events: Sequence[ChangeEvent], trace_id: str) -> Delivery:
        return cls(connection.id, connection.tenant_id, connection.connector, events, trace_id)


async def enabled_flows(
    session: AsyncSession, connection_ids: Sequence[str]
) -> dict[str, dict[str, bool]]:
    rows = await session.execute(
        select(FlowEnablement.connection_id, FlowEnablement.flow, FlowEnablement.enabled).where(
            FlowEnablement.connection_id.in_(set(connection_ids))
        )
    )
    by_connection: dict[str, dict[str, bool]] = defaultdict(dict)
    for connection_id, flow, enabled in rows:
        by_connection[connection_id][flow] = enabled
    return by_connection


async def store_batch(
    session: AsyncSession, deliveries: Sequence[Delivery], flows: FlowCatalog
) -> list[IngestResult]:
    """Insert the deliveries' new events and their jobs in the caller's transaction.

    The first delivery (in order) to carry an event owns it; later copies, in this batch
    or already stored, count as duplicates.
    """
    now = utcnow()
    owner: dict[tuple[str, str], int] = {}
    rows = []
    for index, delivery in enumerate(deliveries):
        for event in delivery.events:
            key = (delivery.connection_id, event.platform_event_id)
            if key in owner:
                continue
            owner[key] = index
            rows.append(
                {
                    "tenant_id": delivery.tenant_id,
                    "connection_id": delivery.connection_id,
                    "platform_event_id": event.platform_event_id,
                    "object": event.object,
                    "record_id": event.record_id,
                    "change_type": event.change_type.value,
                    "changed_fields": list(event.changed_fields),
                    "data": event.data,
                    "occurred_at": event.occurred_at,
                    "received_at": now,
                    "trace_id": delivery.trace_id,
                }
            )
    inserted: dict[tuple[str, str], int] = {}
    if rows:
        statement = insert_ignoring_conflicts(
            session,
            Event.__table__,  # type: ignore[arg-type]
            ["connection_id", "platform_event_id"],
        ).returning(Event.id, Event.connection_id, Event.platform_event_id)
        for event_id, connection_id, platform_id in await session.execute(statement, rows):
            inserted[(connection_id, platform_id)] = event_id

    enabled = (
        await enabled_flows(session, [d.connection_id for d in deliveries]) if inserted else {}
    )
    jobs: list[NewJob] = []
    job_owner: list[int] = []
    accepted = [0] * len(deliveries)
    for index, delivery in enumerate(deliveries):
        for event in delivery.events:
            key = (delivery.connection_id, event.platform_event_id)
            event_id = inserted.get(key)
            if event_id is None or owner[key] != index:
                continue
            accepted[index] += 1
            for flow in flows.matching(delivery.connector, event, enabled[delivery.connection_id]):
                jobs.append(
                    NewJob(
                        kind=FLOW_JOB,
                        tenant_id=delivery.tenant_id,
                        connection_id=delivery.connection_id,
                        flow=flow,
                        event_id=event_id,
                        payload={"object": event.object, "record_id": event.record_id},
                        trace_id=delivery.trace_id,
                    )
                )
                job_owner.append(index)
            # An event counted once: a second copy in the same delivery is a duplicate.
            inserted.pop(key)
    job_ids: list[list[int]] = [[] for _ in deliveries]
    for index, job_id in zip(job_owner, await enqueue(session, jobs), strict=True):
        job_ids[index].append(job_id)
    return [
        IngestResult(accepted=accepted[i], duplicates=len(d.events) - accepted[i], jobs=job_ids[i])
        for i, d in enumerate(deliveries)
    ]


async def store_events(
    session: AsyncSession,
    connection: Connection,
    events: Sequence[ChangeEvent],
    flows: FlowCatalog,
    *,
    trace_id: str,
) -> IngestResult:
    """One delivery's events, in the caller's transaction (the caller commits)."""
    [result] = await store_batch(session, [Delivery.of(connection, events, trace_id)], flows)
    return result
