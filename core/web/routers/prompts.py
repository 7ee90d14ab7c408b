"""The prompt registry and its rollouts (tenant-scoped rollouts over installed prompt files).

Role policy: any role reads (``GET /v1/prompts``, ``GET /v1/prompts/{name}``); only admins
start or change a rollout (``PUT .../rollout``), roll it back (``POST .../rollout/rollback``)
or end it (``DELETE .../rollout``). Each change is audited and applies to the next call in
every process (no restart). The comparison of versions is ``GET /v1/usage/prompts/{name}``.
The logic (history and audit included) lives in :mod:`core.gateway.rollout_store`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from core.auth import Principal
from core.db.models import PromptRollout, Role, RolloutSticky
from core.errors import NotFound
from core.flows.prompts import Prompt
from core.gateway import rollout_store
from core.gateway.rollout_store import basis_points, percent
from core.services import Services
from core.web.deps import ANY_ROLE, ServicesDep, SessionDep, require

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]


class PromptNotFound(NotFound):
    problem_type = "prompt-not-found"
    title = "No prompt of that name is installed"


class VersionOut(BaseModel):
    ref: str = Field(description="name@version, as flows and call records name it.")
    version: int
    description: str
    slots: list[str] = Field(description="The {{ slots }} its user template fills.")
    digest: str = Field(description="sha256 of the system and user texts.")
    used: bool = Field(description="A call has used this version: it may no longer change.")
    edited: bool = Field(
        description="The file differs from the text first used; calls with it are refused."
    )


class PromptUserOut(BaseModel):
    flow: str
    pinned_version: int


class RolloutOut(BaseModel):
    id: str = Field(description="Also the bucketing salt: a new candidate draws a new split.")
    prompt: str
    candidate_version: int
    share_percent: float
    sticky: RolloutSticky
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, row: PromptRollout) -> RolloutOut:
        return cls(
            id=row.id,
            prompt=row.prompt,
            candidate_version=row.candidate_version,
            share_percent=percent(row.share_basis_points) or 0.0,
            sticky=RolloutSticky(row.sticky),
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )


class ChangeOut(BaseModel):
    action: str = Field(description="start | change | rollback | end")
    candidate_version: int | None
    share_percent_before: float | None
    share_percent_after: float | None
    actor: str
    at: datetime


class PromptOut(BaseModel):
    name: str
    versions: list[VersionOut]
    flows: list[PromptUserOut] = Field(description="Installed flows using the prompt.")
    rollout: RolloutOut | None


class PromptDetail(PromptOut):
    history: list[ChangeOut] = Field(description="The rollout's changes, oldest first.")


class PromptList(BaseModel):
    data: list[PromptOut]


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate_version: int = Field(ge=1, description="An installed version of the prompt.")
    share_percent: Decimal = Field(
        ge=0, le=100, description="Share of calls answered by the candidate (0.01% steps)."
    )
    sticky: RolloutSticky | None = Field(
        None,
        description="`record` (default for a new rollout): each record keeps its version; "
        "`tenant`: all of the tenant's calls together. Unchanged when omitted.",
    )


def _version(prompt: Prompt, recorded: dict[str, str]) -> VersionOut:
    first = recorded.get(prompt.ref)
    return VersionOut(
        ref=prompt.ref,
        version=prompt.version,
        description=prompt.description,
        slots=sorted(prompt.slots),
        digest=prompt.digest,
        used=first is not None,
        edited=first is not None and first != prompt.digest,
    )


def _names(services: Services) -> list[str]:
    return sorted({ref.partition("@")[0] for ref in services.flows.prompts.refs()})


def _prompt(
    services: Services, name: str, recorded: dict[str, str], rollout: PromptRollout | None
) -> PromptOut:
    registry = services.flows.prompts
    versions = [registry.get(f"{name}@{v}") for v in registry.versions(name)]
    return PromptOut(
        name=name,
        versions=[_version(p, recorded) for p in versions if p is not None],
        flows=[
            PromptUserOut(flow=user.flow, pinned_version=user.pinned_version)
            for user in rollout_store.users_of(services.flows, name)
        ],
        rollout=RolloutOut.of(rollout) if rollout is not None else None,
    )


def _installed(services: Services, name: str) -> None:
    if not services.flows.prompts.versions(name):
        raise PromptNotFound(f"no prompt named {name[:100]!r} is installed", prompt=name[:100])


@router.get("", response_model=PromptList, summary="Installed prompts, versions and rollouts")
async def list_prompts(principal: Reader, session: SessionDep, services: ServicesDep) -> PromptList:
    recorded = await services.prompt_versions.recorded_digests()
    rollouts = await rollout_store.rollouts(session, principal.tenant_id)
    return PromptList(
        data=[_prompt(services, name, recorded, rollouts.get(name)) for name in _names(services)]
    )


@router.get("/{name}", response_model=PromptDetail, summary="One prompt with rollout history")
async def get_prompt(
    name: str, principal: Reader, session: SessionDep, services: ServicesDep
) -> PromptDetail:
    _installed(services, name)
    recorded = await services.prompt_versions.recorded_digests()
    rollouts = await rollout_store.rollouts(session, principal.tenant_id)
    changes = await rollout_store.history(session, principal.tenant_id, name)
    return PromptDetail(
        **_prompt(services, name, recorded, rollouts.get(name)).model_dump(),
        history=[
            ChangeOut(
                action=change.action,
                candidate_version=change.candidate_version,
                share_percent_before=percent(change.share_before),
                share_percent_after=percent(change.share_after),
                actor=change.actor,
                at=change.at,
            )
            for change in changes
        ],
    )


@router.put("/{name}/rollout", response_model=RolloutOut, summary="Start or change a rollout")
async def put_rollout(
    name: str, body: RolloutIn, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> RolloutOut:
    _installed(services, name)
    row, _ = await rollout_store.put_rollout(
        session,
        services.flows,
        tenant_id=principal.tenant_id,
        prompt=name,
        candidate_version=body.candidate_version,
        share_basis_points=basis_points(body.share_percent),
        sticky=body.sticky,
        actor=principal.actor,
    )
    return RolloutOut.of(row)


@router.post(
    "/{name}/rollout/rollback",
    response_model=RolloutOut,
    summary="Roll back: every call uses the pinned version again, from the next call",
)
async def rollback_rollout(
    name: str, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> RolloutOut:
    _installed(services, name)
    row, _ = await rollout_store.rollback(
        session, tenant_id=principal.tenant_id, prompt=name, actor=principal.actor
    )
    return RolloutOut.of(row)


@router.delete("/{name}/rollout", status_code=204, summary="End a rollout")
async def end_rollout(
    name: str, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> Response:
    _installed(services, name)
    await rollout_store.end_rollout(
        session, tenant_id=principal.tenant_id, prompt=name, actor=principal.actor
    )
    return Response(status_code=204)
