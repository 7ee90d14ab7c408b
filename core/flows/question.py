"""Asking Claude a flow's question through the gateway, with one repair of a bad answer.

The request names no model: the flow's task kind picks the tier (the gateway's routing), the
prompt's system text goes first as its own block so the gateway's cache breakpoints cover it
for every record, and the output schema becomes the one tool Claude must call. An answer that
fails the schema gets exactly one repair turn (the validation errors as a tool_result with
``is_error``); a second bad answer fails the job, and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import TerminalError
from core.flows.answers import extract_answer, repair_messages, tool_choice_for, tool_for
from core.flows.inputs import PromptInputs
from core.flows.prompts import Prompt
from core.flows.spec import FlowSpec
from core.gateway.admission import Priority
from core.gateway.calls import CallOptions
from core.gateway.gateway import Gateway

DEFAULT_MAX_TOKENS = 1024


class AnswerInvalid(TerminalError):
    problem_type = "flow-answer-invalid"
    title = "Claude's answer did not match the flow's output schema, even after one repair"


@dataclass
class Answer:
    output: dict[str, Any]
    model: str
    repaired: bool
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per gateway call

    @property
    def cost_usd(self) -> float:
        return float(sum(call["cost_usd"] for call in self.calls))


def build_request(spec: FlowSpec, prompt: Prompt, inputs: PromptInputs) -> dict[str, Any]:
    return {
        "model": "auto",
        "max_tokens": spec.max_tokens or DEFAULT_MAX_TOKENS,
        "system": [{"type": "text", "text": prompt.system}],
        "messages": [{"role": "user", "content": prompt.render(inputs.values)}],
        "tools": [tool_for(spec.output)],
        "tool_choice": tool_choice_for(spec.output),
    }


def _call_summary(completion: Any) -> dict[str, Any]:
    record = completion.record
    return {
        "request_id": record.id,
        "model": record.model,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cost_usd": record.cost_picodollars / 10**12,
        "stop_reason": record.stop_reason,
    }


def call_options(
    spec: FlowSpec,
    prompt: Prompt,
    *,
    tenant_id: str,
    trace_id: str,
    feature: str,
    priority: Priority = Priority.BACKGROUND,
) -> CallOptions:
    """How a flow's question goes through the gateway (real time or in a batch)."""
    return CallOptions(
        tenant_id=tenant_id,
        trace_id=trace_id,
        feature=feature,
        task=spec.task,
        priority=priority,
        data_policy=spec.data_policy,
        prompt_ref=prompt.ref,
        # Counted on the call record; the one repair turn replaces escalation.
        validate=lambda message: extract_answer(message, spec.output).ok,
        escalate=False,
    )


async def ask(
    gateway: Gateway,
    spec: FlowSpec,
    prompt: Prompt,
    inputs: PromptInputs,
    *,
    tenant_id: str,
    trace_id: str,
    feature: str,
    priority: Priority = Priority.BACKGROUND,
) -> Answer:
    options = call_options(
        spec, prompt, tenant_id=tenant_id, trace_id=trace_id, feature=feature, priority=priority
    )
    body = build_request(spec, prompt, inputs)
    completion = await gateway.complete(body, options)
    calls = [_call_summary(completion)]
    message = completion.message()
    check = extract_answer(message, spec.output)
    if check.ok and check.answer is not None:
        return Answer(check.answer, completion.record.model, repaired=False, calls=calls)
    repair = {**body, "messages": repair_messages(body["messages"], message, check)}
    completion = await gateway.complete(repair, options)
    calls.append(_call_summary(completion))
    second = extract_answer(completion.message(), spec.output)
    if second.ok and second.answer is not None:
        return Answer(second.answer, completion.record.model, repaired=True, calls=calls)
    raise AnswerInvalid(
        "the answer failed the output schema twice (one repair attempted): "
        + "; ".join(second.errors),
        first_errors=check.errors,
        errors=second.errors,
        calls=calls,
    )
