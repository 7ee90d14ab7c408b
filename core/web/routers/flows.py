"""Flows: what is installed, whether each validates, and dry runs.

Role policy:

* read (``GET /v1/flows``, ``GET /v1/flows/{flow}``): any role;
* dry run (``POST /v1/flows/{flow}/test``): admin — it sends the pasted record's
  allow-listed fields to Claude (and costs a call), so it is an admin's decision.

Enabling a flow on a connection is ``PUT /v1/connections/{id}/flows/{flow}``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from core.auth import Principal
from core.db.models import Role
from core.errors import NotFound
from core.flows.catalog import FlowEntry
from core.flows.dryrun import dry_run
from core.flows.spec import ReviewWhen
from core.web.deps import ANY_ROLE, ServicesDep, require, require_without_transaction

router = APIRouter(prefix="/v1/flows", tags=["flows"])

Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]
# A dry run waits for Claude: authenticated without holding a request transaction.
DryRunner = Annotated[Principal, Depends(require_without_transaction(Role.ADMIN))]


class ProblemOut(BaseModel):
    file: str
    line: int
    column: int
    severity: str
    code: str
    message: str
    hint: str


class FlowOut(BaseModel):
    name: str
    description: str
    connector: str | None
    object: str | None
    task: str | None
    prompt: str | None
    review: str | None = Field(description="never, always, a rule, or null (default).")
    valid: bool = Field(description="Only valid flows can be enabled and get jobs.")
    problems: list[ProblemOut]


class FlowList(BaseModel):
    data: list[FlowOut]


class DryRunIn(BaseModel):
    record: dict[str, Any] = Field(description="The record's fields, as the connector reads them.")
    record_id: str = Field("dry-run", min_length=1, max_length=255)


class DryRunOut(BaseModel):
    flow: str
    prompt: str
    task: str
    system: str
    user: str = Field(description="The user turn exactly as sent (allow-listed, redacted).")
    fields_sent: list[str]
    redacted: dict[str, int]
    skipped: str | None
    model: str | None
    output: dict[str, Any] | None
    repaired: bool
    patch: dict[str, Any]
    review: str | None
    cost_usd: float
    trace_id: str


def _review(entry: FlowEntry) -> str | None:
    rule = entry.spec.review if entry.spec is not None else None
    if rule is None:
        return None
    return f"when {rule.when}" if isinstance(rule, ReviewWhen) else rule.value


def _out(entry: FlowEntry) -> FlowOut:
    spec = entry.spec
    source = spec.source if spec is not None else None
    return FlowOut(
        name=entry.name,
        description=spec.description if spec is not None else "",
        connector=source.connector if source is not None else None,
        object=source.object if source is not None else None,
        task=spec.task if spec is not None else None,
        prompt=spec.prompt if spec is not None else None,
        review=_review(entry),
        valid=entry.ok,
        problems=[ProblemOut(**asdict(problem)) for problem in entry.problems],
    )


def _entry(services: ServicesDep, flow: str) -> FlowEntry:
    entry = services.flows.get(flow)
    if entry is None:
        raise NotFound(f"no flow {flow!r}; installed: {', '.join(services.flows.names())}")
    return entry


@router.get("", summary="Installed flows and whether each validates")
async def list_flows(services: ServicesDep, principal: Reader) -> FlowList:
    return FlowList(data=[_out(_entry(services, name)) for name in services.flows.names()])


@router.post("/{flow:path}/test", summary="Dry run: one record through a flow, nothing written")
async def test_flow(
    flow: str, body: DryRunIn, services: ServicesDep, principal: DryRunner
) -> DryRunOut:
    _entry(services, flow)
    run = await dry_run(
        services, flow, body.record, tenant_id=principal.tenant_id, record_id=body.record_id
    )
    return DryRunOut(**run.as_dict())


@router.get("/{flow:path}", summary="One flow")
async def get_flow(flow: str, services: ServicesDep, principal: Reader) -> FlowOut:
    return _out(_entry(services, flow))
