"""Asking a flow's question through Message Batches (flows with ``batch: true``).

The engine calls :func:`asker`'s function exactly where it would call
:func:`core.flows.question.ask`, with the same arguments. It never returns while the answer
is pending: it stores the request (:meth:`MessageBatches.enqueue`) and raises
:class:`AwaitingBatch`, which the engine turns into the ``awaiting_batch`` job status. When
the request resolves, the batch loop re-queues the job; the job runs again from the top
(fetch, condition, inputs) and this time finds its answer:

* the job's newest request asked the same question (same prompt, schema and inputs, by
  sha256): its stored answer is used — no second call; a pending one parks the job again
  (a job re-run after a crash never enqueues twice);
* the record changed while the job waited (a different question): the old answer is
  stale and the new question is enqueued (an in-flight old request is waited for first,
  so what it costs is still recorded);
* the request failed for good (errored, expired, canceled): the job fails with
  :class:`BatchRequestFailed`, a terminal error naming the cause. A replay asks afresh.

An answer that fails the flow's output schema gets its one repair turn in real time
(:mod:`core.flows.question`'s rule); only that turn leaves the batch price.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from core.db.models import BatchRequest, BatchRequestStatus, MessageBatch
from core.errors import TerminalError
from core.flows.answers import extract_answer, repair_messages
from core.flows.inputs import PromptInputs
from core.flows.prompts import Prompt
from core.flows.question import Answer, AnswerInvalid, build_request, call_options
from core.flows.spec import FlowSpec
from core.gateway.admission import Priority
from core.gateway.calls import CallOptions
from core.gateway.gateway import Gateway
from core.gateway.message_batches import MessageBatches
from core.queue import ClaimedJob

if TYPE_CHECKING:
    from core.services import Services

IN_FLIGHT = (BatchRequestStatus.SUBMITTING, BatchRequestStatus.SUBMITTED)


class AwaitingBatch(Exception):
    """The job waits for its batch request; ``step`` goes on the job's result."""

    def __init__(self, step: dict[str, Any]) -> None:
        super().__init__(f"waiting for batch request {step.get('request_id')}")
        self.step = step


class BatchRequestFailed(TerminalError):
    problem_type = "flow-batch-request-failed"
    title = "The flow's Message Batches request failed (errored, expired or canceled)"
    status = 502


def batches_for(services: Services) -> MessageBatches:
    return MessageBatches(
        services.gateway, services.sessions, services.keyring, services.settings.gateway
    )


def question_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def asker(services: Services, job: ClaimedJob) -> Callable[..., Awaitable[Answer]]:
    """A function with :func:`~core.flows.question.ask`'s signature for ``job``."""

    async def ask_in_batch(
        gateway: Gateway,
        spec: FlowSpec,
        prompt: Prompt,
        inputs: PromptInputs,
        *,
        tenant_id: str,
        trace_id: str,
        feature: str,
        priority: Priority = Priority.BACKGROUND,
        **_more: Any,  # what ask() gains later (rollout details) does not change a batch
    ) -> Answer:
        options = call_options(
            spec,
            prompt,
            tenant_id=tenant_id,
            trace_id=trace_id,
            feature=feature,
            priority=priority,
        )
        body = build_request(spec, prompt, inputs)
        digest = question_sha256(body)
        batches = batches_for(services)
        latest = await batches.latest_for_job(job.id)
        if latest is not None:
            row, batch = latest
            status = BatchRequestStatus(row.status)
            if row.question_sha256 == digest:
                if status is BatchRequestStatus.SUCCEEDED:
                    return await _answered(batches, gateway, spec, body, options, row, batch)
                if status is BatchRequestStatus.FAILED:
                    await batches.retire(row.id)
                    raise BatchRequestFailed(
                        f"batch request {row.id} failed: {row.error_message}",
                        batch_request=row.id,
                        error_type=row.error_type,
                    )
                raise AwaitingBatch(parked_step(row, batch, again=True))
            if status in IN_FLIGHT:  # its answer is stale, but what it costs must be recorded
                raise AwaitingBatch(parked_step(row, batch, again=True) | {"stale": True})
        row = await batches.enqueue(
            job_id=job.id,
            body=body,
            options=options,
            question_sha256=digest,
            supersedes=latest[0].id if latest else None,
        )
        raise AwaitingBatch(parked_step(row, None, again=False))

    return ask_in_batch


def parked_step(row: BatchRequest, batch: MessageBatch | None, *, again: bool) -> dict[str, Any]:
    return {
        "step": "batch",
        "request_id": row.id,
        "status": row.status,
        "batch_id": batch.anthropic_id if batch else None,
        "model": row.model,
        "queued_at": row.created_at.isoformat(),
        "parked_again": again,
    }


def batch_call(row: BatchRequest, batch: MessageBatch | None) -> dict[str, Any]:
    """The call summary of an answered batch request (as question.ask lists its calls)."""
    call = row.call
    waited = (row.resolved_at - row.created_at).total_seconds() if row.resolved_at else None
    return {
        "request_id": row.gateway_request_id,
        "model": call.get("model", row.model),
        "input_tokens": call.get("input_tokens", 0),
        "output_tokens": call.get("output_tokens", 0),
        "cache_read_tokens": call.get("cache_read_tokens", 0),
        "cost_usd": row.cost_picodollars / 10**12,
        "stop_reason": call.get("stop_reason"),
        "batch": {
            "batch_id": batch.anthropic_id if batch else None,
            "request_id": row.id,
            "waited_seconds": round(waited, 3) if waited is not None else None,
            "submissions": row.submissions,
            "price": "batch",
        },
    }


async def _answered(
    batches: MessageBatches,
    gateway: Gateway,
    spec: FlowSpec,
    body: dict[str, Any],
    options: CallOptions,
    row: BatchRequest,
    batch: MessageBatch | None,
) -> Answer:
    calls = [batch_call(row, batch)]
    message = batches.answer_of(row)
    check = extract_answer(message, spec.output)
    if check.ok and check.answer is not None:
        return Answer(check.answer, row.model, repaired=False, calls=calls)
    # The one repair turn, in real time: waiting for another batch would double the wait.
    repair = {**body, "messages": repair_messages(body["messages"], message, check)}
    completion = await gateway.complete(repair, options)
    record = completion.record
    calls.append(
        {
            "request_id": record.id,
            "model": record.model,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cache_read_tokens": record.cache_read_tokens,
            "cost_usd": record.cost_picodollars / 10**12,
            "stop_reason": record.stop_reason,
        }
    )
    second = extract_answer(completion.message(), spec.output)
    if second.ok and second.answer is not None:
        return Answer(second.answer, record.model, repaired=True, calls=calls)
    raise AnswerInvalid(
        "the answer failed the output schema twice (one repair attempted): "
        + "; ".join(second.errors),
        first_errors=check.errors,
        errors=second.errors,
        calls=calls,
    )
