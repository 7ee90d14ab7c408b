"""The ``flow.run`` job: one change event through one flow, end to end.

The steps of "The path of one change" (ARCHITECTURE.md), each recorded on the job's result
so one job's story reads top to bottom with its trace id:

1. ``fetch`` — the current record from the source connector (the event may be stale);
2. ``condition`` — the flow's source condition over the fetched record;
3. ``inputs`` — the allow-listed fields only, transformed, truncated and redacted (recorded
   as a hash and the field names, never the values);
4. ``claude`` — the gateway call (task kind, prompt version, output tool), with at most one
   repair of an answer that fails the schema (:mod:`core.flows.question`); a ``batch: true``
   flow asks through Message Batches instead (:mod:`core.flows.batched`): its first run
   parks the job (``awaiting_batch``, a ``batch`` step) and the run after the answer
   arrived uses it;
5. ``patch`` — the answer mapped onto the target record; unchanged fields are dropped, and
   a patch that changes nothing is not written at all;
6. ``review`` or ``write`` — a review item when the flow's rule fires or the target is an
   ERP (the job waits), else the write with the job's idempotency key and the record's
   version for optimistic concurrency. A conflict (the record changed since it was read)
   retries the job, which reads and decides again.

A job whose flow was disabled after it was queued finishes without doing anything: disabling
stops new work, and a job already past this check runs to its end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from connectors.base import ChangeType, Connector, ConnectorKind, RecordRef, WriteStatus
from core import reviews
from core.connections import get_connection
from core.db.models import Connection, Event, FlowEnablement, JobStatus, ReviewStatus
from core.db.types import utcnow
from core.errors import ConnectorTransientError, TerminalError
from core.flows import approved, batched
from core.flows.catalog import FlowEntry
from core.flows.expressions import evaluate, truthy
from core.flows.inputs import build_inputs
from core.flows.patches import PatchPlan, build_patch
from core.flows.question import ask
from core.flows.spec import FlowSpec, ReviewMode, ReviewWhen, WritebackAction
from core.handlers import JobContext, JobKind, Outcome
from core.ingest import FLOW_JOB
from core.queue import ClaimedJob
from core.retry import RetryPolicy

if TYPE_CHECKING:
    from core.services import Services


class FlowUnavailable(TerminalError):
    problem_type = "flow-unavailable"
    title = "The job's flow, prompt or event is missing or invalid"
    status = 422


class WriteConflict(ConnectorTransientError):
    problem_type = "flow-write-conflict"
    title = "The record changed after it was read; the job runs again on the new version"


def runnable_flow(services: Services, name: str | None) -> tuple[FlowEntry, FlowSpec]:
    entry = services.flows.get(name) if name else None
    if entry is None or entry.spec is None or not entry.ok:
        problems = "; ".join(str(p) for p in entry.problems) if entry else "not installed"
        raise FlowUnavailable(f"flow {name!r} cannot run: {problems}")
    return entry, entry.spec


async def _enabled(services: Services, connection_id: str, flow: str) -> bool:
    async with services.sessions() as session:
        enabled = await session.scalar(
            select(FlowEnablement.enabled).where(
                FlowEnablement.connection_id == connection_id, FlowEnablement.flow == flow
            )
        )
    return bool(enabled)


async def run_flow(ctx: JobContext) -> Outcome:
    job, services = ctx.job, ctx.services
    if job.connection_id is None or job.event_id is None or job.tenant_id is None:
        raise FlowUnavailable(f"job {job.id} names no connection, event or tenant")
    _, spec = runnable_flow(services, job.flow)
    assert job.flow is not None  # runnable_flow refused a job without one
    steps: list[dict[str, Any]] = []

    def done(**extra: Any) -> Outcome:
        return Outcome({"flow": job.flow, "prompt": spec.prompt, "steps": steps, **extra})

    try:
        return await _run_steps(job, services, spec, steps, done)
    except batched.AwaitingBatch as parked:  # the job waits for its Message Batches answer
        steps.append(parked.step)
        return Outcome(done().result, status=JobStatus.AWAITING_BATCH)
    except Exception as exc:
        # The story up to the failure, stored on the job beside last_error (the queue reads
        # this attribute): which record, what was sent (hashed), what Claude answered.
        exc.job_result = {  # type: ignore[attr-defined]
            "flow": job.flow,
            "prompt": spec.prompt,
            "steps": steps,
            "failed_at": type(exc).__name__,
        }
        raise


async def _run_steps(
    job: ClaimedJob,
    services: Services,
    spec: FlowSpec,
    steps: list[dict[str, Any]],
    done: Callable[..., Outcome],
) -> Outcome:
    assert job.connection_id is not None  # run_flow checked these
    assert job.event_id is not None
    assert job.flow is not None
    assert job.tenant_id is not None
    reviewed = await approved.review_of(services, job.id)
    if reviewed is not None and reviewed.status != ReviewStatus.PENDING.value:
        return await approved.carry_out(services, job, reviewed)
    if reviewed is not None:  # run again while it waits (a replay): nothing to redo
        steps.append({"step": "review", "review_item": reviewed.id, "waiting": True})
        return Outcome(done().result, status=JobStatus.AWAITING_REVIEW)
    if not await _enabled(services, job.connection_id, job.flow):
        steps.append({"step": "enabled", "skipped": "the flow was disabled on this connection"})
        return done()
    async with services.sessions() as session:
        connection = await get_connection(session, job.connection_id, job.tenant_id)
        event = await session.get(Event, job.event_id)
    if event is None:
        raise FlowUnavailable(f"event {job.event_id} was deleted")
    if event.change_type == ChangeType.DELETED:
        steps.append({"step": "fetch", "skipped": "the record was deleted"})
        return done()
    source = await services.connectors.get(connection)
    record = await source.fetch(RecordRef(event.object, event.record_id))
    steps.append(
        {"step": "fetch", "object": record.object, "record_id": record.record_id}
        | {"version": record.version}
    )
    if spec.source.condition is not None:
        data = {"record": dict(record.fields), "event": {"changed_fields": event.changed_fields}}
        if not truthy(evaluate(spec.source.condition, data)):
            steps.append({"step": "condition", "skipped": spec.source.condition})
            return done()
    inputs = build_inputs(
        spec, record, pseudonym_key=services.keyring.derive_key(f"pseudonym:{job.tenant_id}")
    )
    steps.append(
        {
            "step": "inputs",
            "sha256": inputs.sha256,
            "fields": list(inputs.fields_used),
            "redacted": inputs.redacted,
            "truncated": list(inputs.truncated),
        }
    )
    if inputs.missing_required:
        steps[-1]["skipped"] = f"required inputs are empty: {', '.join(inputs.missing_required)}"
        return done()
    pinned = services.flows.prompts.get(spec.prompt)
    if pinned is None:
        raise FlowUnavailable(f"prompt {spec.prompt} is not installed")
    # A rollout may answer this record with a candidate version (sticky per record).
    choice = await services.prompt_versions.choose(
        job.tenant_id,
        pinned,
        f"{connection.id}/{record.object}/{record.record_id}",
        fillable=spec.inputs.keys(),
    )
    prompt = choice.prompt
    answer = await (batched.asker(services, job) if spec.batch else ask)(
        services.gateway,
        spec,
        prompt,
        inputs,
        tenant_id=job.tenant_id,
        trace_id=job.trace_id,
        feature=job.flow,
    )
    steps.append(
        {
            "step": "claude",
            **choice.step(),
            "task": spec.task,
            "model": answer.model,
            "repaired": answer.repaired,
            "cost_usd": answer.cost_usd,
            "calls": answer.calls,
        }
    )
    if spec.writeback is None:
        return done(output=answer.output)
    target, target_connection = await _target(services, spec, connection)
    target_object = spec.writeback.object or record.object
    # The source record is the target: its fetched fields are the "before", its version
    # guards the write. Any other target is written blind (its connector may still check).
    same_record = (
        spec.writeback.action is WritebackAction.UPDATE
        and spec.writeback.record_id is None
        and target_object == record.object
        and target_connection.id == connection.id
    )
    described = await target.describe(target_object)
    plan = build_patch(
        spec.writeback,
        output=answer.output,
        record=record,
        default_object=record.object,
        target_fields=described or None,
        current=dict(record.fields) if same_record else None,
    )
    expected_version = record.version if same_record else None
    steps.append(
        {
            "step": "patch",
            "object": plan.object,
            "record_id": plan.record_id,
            "fields": plan.fields,
            "unchanged": list(plan.unchanged),
            "skipped_null": list(plan.skipped_null),
        }
    )
    if plan.empty:
        steps.append({"step": "write", "skipped": "the answer changes nothing on the record"})
        return done(output=answer.output)
    reasons = _review_reasons(spec, target, target_connection, answer.output, record, plan)
    if reasons:
        async with services.sessions.begin() as session:
            item = await reviews.propose(
                session,
                tenant_id=job.tenant_id,
                job_id=job.id,
                flow=job.flow,
                connection_id=target_connection.id,
                object_name=plan.object,
                record_id=plan.record_id,
                expected_version=expected_version,
                before=plan.before,
                patch=plan.fields,
                output=answer.output,
                reasons=reasons,
                trace_id=job.trace_id,
                prompt_ref=prompt.ref,
                triggered_by=_triggered_by(event, connection.connector),
                expires_at=utcnow() + timedelta(hours=services.settings.review_expiry_hours),
            )
        steps.append({"step": "review", "review_item": item.id, "reasons": reasons})
        return Outcome(done(output=answer.output).result, status=JobStatus.AWAITING_REVIEW)
    result = await target.write(plan.to_patch(expected_version), job.idempotency_key)
    if result.status is WriteStatus.CONFLICT:
        raise WriteConflict(
            f"{plan.object} {plan.record_id} changed since it was read ({result.detail}); "
            "the job will read it again"
        )
    steps.append(
        {"step": "write", "status": result.status.value, "version": result.version}
        | ({"detail": result.detail} if result.detail else {})
    )
    return done(output=answer.output)


async def _target(
    services: Services, spec: FlowSpec, source: Connection
) -> tuple[Connector, Connection]:
    """The connector and connection a flow writes to: the source's, or another by name."""
    name = spec.writeback.connection if spec.writeback else None
    if name is None or name == source.name:
        return await services.connectors.get(source), source
    async with services.sessions() as session:
        other = await session.scalar(
            select(Connection).where(
                Connection.tenant_id == source.tenant_id, Connection.name == name
            )
        )
    if other is None:
        raise FlowUnavailable(f"the flow writes to connection {name!r}, which does not exist")
    return await services.connectors.get(other), other


def _review_reasons(
    spec: FlowSpec,
    target: Connector,
    connection: Connection,
    output: dict[str, Any],
    record: Any,
    plan: PatchPlan,
) -> list[str]:
    """Why this write waits for a person (empty: it does not)."""
    rule = spec.review
    erp = target.kind is ConnectorKind.ERP
    if rule is ReviewMode.ALWAYS:
        return ["the flow reviews every write"]
    if isinstance(rule, ReviewWhen):
        data = {"output": output, "record": dict(record.fields), "patch": plan.fields}
        if truthy(evaluate(rule.when, data)):
            return [f"review rule: {rule.when}"]
        return (
            ["ERP target: every write is reviewed"] if erp and not _unreviewed(connection) else []
        )
    if erp and not (rule is ReviewMode.NEVER and _unreviewed(connection)):
        return ["ERP target: every write is reviewed"]
    return []


def _triggered_by(event: Event, connector: str) -> str | None:
    """Who made the change, when the connector reported it (``data["changed_by"]``: the
    platform's user id, or an email), as ``<connector>:<who>``: they cannot approve the
    write (four eyes, :mod:`core.review_decisions`)."""
    changed_by = (event.data or {}).get("changed_by")
    if not isinstance(changed_by, str) or not changed_by.strip():
        return None
    return f"{connector}:{changed_by.strip()}"[:200]


def _unreviewed(connection: Connection) -> bool:
    return bool(connection.allow_unreviewed_writes)


def flow_job_kind() -> JobKind:
    return JobKind(FLOW_JOB, run_flow, RetryPolicy(max_attempts=5, initial=2, maximum=300))
