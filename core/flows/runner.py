"""The ``flow.run`` job: one change event through one flow.

Today it performs the first step of "The path of one change" (step 2): load the event and
the connection, and fetch the current record through the connector, so a job's result shows
which record version the flow saw. The flow engine adds the steps after it (inputs from the
allow-list, the gateway call, validation, patch, write or review) without changing how the
job is enqueued, claimed, retried or reported.
"""

from __future__ import annotations

import hashlib
import json

from connectors.base import ChangeType, RecordRef
from core.connections import get_connection
from core.db.models import Event
from core.errors import TerminalError
from core.handlers import JobContext, JobKind, Outcome
from core.ingest import FLOW_JOB
from core.retry import RetryPolicy


class FlowUnavailable(TerminalError):
    problem_type = "flow-unavailable"
    title = "The job's flow or event no longer exists"


def _fingerprint(fields: object) -> str:
    canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def run_flow(ctx: JobContext) -> Outcome:
    job = ctx.job
    services = ctx.services
    if job.flow is None or job.connection_id is None or job.event_id is None:
        raise FlowUnavailable(f"job {job.id} names no flow, connection or event")
    if job.flow not in services.flows:
        raise FlowUnavailable(f"flow {job.flow} is not in the catalog any more")
    async with services.sessions() as session:
        connection = await get_connection(session, job.connection_id, job.tenant_id)
        event = await session.get(Event, job.event_id)
    if event is None:
        raise FlowUnavailable(f"event {job.event_id} was deleted")
    steps: list[dict[str, object]] = []
    if event.change_type == ChangeType.DELETED:
        steps.append({"step": "fetch", "skipped": "the record was deleted"})
        return Outcome({"flow": job.flow, "steps": steps})
    connector = await services.connectors.get(connection)
    record = await connector.fetch(RecordRef(event.object, event.record_id))
    steps.append(
        {
            "step": "fetch",
            "object": record.object,
            "record_id": record.record_id,
            "version": record.version,
            "fields": sorted(record.fields),
            "fields_sha256": _fingerprint(dict(record.fields)),
        }
    )
    return Outcome({"flow": job.flow, "steps": steps})


def flow_job_kind() -> JobKind:
    return JobKind(FLOW_JOB, run_flow, RetryPolicy(max_attempts=5, initial=2, maximum=300))
