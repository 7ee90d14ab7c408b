"""Dry run: one record through a flow, showing everything and writing nothing.

An admin tries a flow (``switchyard flows test`` or ``POST /v1/flows/{flow}/test``) on a
record they paste in before enabling it: the prompt exactly as Claude would see it (after
the allow-list and redaction), the model the gateway chose, the answer (validated, with the
repair if one was needed), the patch it would write and what the call cost. The call is a
real gateway call (sandbox or API, by settings), recorded and costed like any other under
the feature ``dry-run:<flow>``; nothing is fetched from or written to a platform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.base import ConnectorKind, Record
from core.flows.engine import FlowUnavailable, runnable_flow
from core.flows.expressions import evaluate, truthy
from core.flows.inputs import build_inputs
from core.flows.patches import build_patch
from core.flows.question import ask, build_request
from core.flows.spec import ReviewMode, ReviewWhen
from core.gateway.admission import Priority
from core.queue import new_trace_id

if TYPE_CHECKING:
    from core.services import Services


@dataclass
class DryRun:
    flow: str
    prompt: str
    task: str
    system: str
    user: str  # the user turn as sent: allow-listed, truncated and redacted
    fields_sent: list[str]
    redacted: dict[str, int]
    skipped: str | None = None  # why the engine would stop before calling Claude
    model: str | None = None
    output: dict[str, Any] | None = None
    repaired: bool = False
    patch: dict[str, Any] = field(default_factory=dict)
    review: str | None = None  # why the write would wait for a reviewer
    cost_usd: float = 0.0
    trace_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def dry_run(
    services: Services, flow: str, fields: dict[str, Any], *, tenant_id: str, record_id: str
) -> DryRun:
    _, spec = runnable_flow(services, flow)
    prompt = services.flows.prompts.get(spec.prompt)
    if prompt is None:
        raise FlowUnavailable(f"prompt {spec.prompt} is not installed")
    record = Record(spec.source.object, record_id, fields)
    inputs = build_inputs(
        spec, record, pseudonym_key=services.keyring.derive_key(f"pseudonym:{tenant_id}")
    )
    request = build_request(spec, prompt, inputs)
    run = DryRun(
        flow=flow,
        prompt=prompt.ref,
        task=spec.task,
        system=prompt.system,
        user=request["messages"][0]["content"],
        fields_sent=list(inputs.fields_used),
        redacted=dict(inputs.redacted),
        trace_id=new_trace_id(),
    )
    condition = spec.source.condition
    if condition is not None and not truthy(
        evaluate(condition, {"record": fields, "event": {"changed_fields": []}})
    ):
        run.skipped = f"the source condition is false: {condition}"
        return run
    if inputs.missing_required:
        run.skipped = f"required inputs are empty: {', '.join(inputs.missing_required)}"
        return run
    answer = await ask(
        services.gateway,
        spec,
        prompt,
        inputs,
        tenant_id=tenant_id,
        trace_id=run.trace_id,
        feature=f"dry-run:{flow}",
        priority=Priority.INTERACTIVE,  # a person is waiting for it
    )
    run.model, run.output, run.repaired = answer.model, answer.output, answer.repaired
    run.cost_usd = answer.cost_usd
    if spec.writeback is not None:
        plan = build_patch(
            spec.writeback,
            output=answer.output,
            record=record,
            default_object=record.object,
            current=fields,
        )
        run.patch = dict(plan.fields)
        factory = services.connectors.registry.get(spec.source.connector)
        erp = factory is not None and factory.kind is ConnectorKind.ERP
        if spec.review is ReviewMode.ALWAYS:
            run.review = "the flow reviews every write"
        elif isinstance(spec.review, ReviewWhen):
            data = {"output": answer.output, "record": fields, "patch": run.patch}
            if truthy(evaluate(spec.review.when, data)):
                run.review = f"review rule: {spec.review.when}"
        if run.review is None and erp and spec.review is not ReviewMode.NEVER:
            run.review = "ERP target: every write is reviewed"
    return run
