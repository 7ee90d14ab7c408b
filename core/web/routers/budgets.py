"""Spending budgets of the Claude gateway (tenant-scoped).

Role policy: any role reads (``GET /v1/budgets``); only admins create, change
(``PUT /v1/budgets``, keyed by scope, scope value and period) or delete them, and each change
is audited with the settings before and after. Another tenant's ids answer 404, never 403.
The reservation logic lives in :mod:`core.gateway.budgets`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from core import audit
from core.auth import Principal
from core.db.models import BudgetPeriod, BudgetScope, Role
from core.gateway import budget_store
from core.gateway.budget_store import PICO, BudgetStatus, usd
from core.web.deps import ANY_ROLE, ServicesDep, SessionDep, require

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])

AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]
MAX_LIMIT_USD = Decimal(9_000_000)  # picodollars are stored in a signed 64-bit integer


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: BudgetScope
    scope_value: str | None = Field(
        default=None,
        max_length=100,
        description="The feature name or API key id; omitted for a tenant budget.",
    )
    period: BudgetPeriod = Field(description="Calendar `day` or `month`, in UTC.")
    limit_usd: Decimal = Field(ge=0, le=MAX_LIMIT_USD, decimal_places=12)
    soft_thresholds: list[float] | None = Field(
        default=None,
        max_length=budget_store.MAX_THRESHOLDS,
        description="Fractions of the limit announced once per period; default [0.8] for a "
        "new budget, unchanged for an existing one.",
    )


class BudgetOut(BaseModel):
    id: str
    scope: str
    scope_value: str | None
    period: str
    limit_usd: float
    limit_picodollars: int
    soft_thresholds: list[float]
    period_start: datetime
    resets_at: datetime
    spent_picodollars: int
    reserved_picodollars: int
    remaining_picodollars: int
    remaining_usd: float
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetOut:
        row = status.budget
        return cls(
            id=row.id,
            scope=row.scope,
            scope_value=row.scope_value,
            period=row.period,
            limit_usd=float(usd(row.limit_picodollars)),
            limit_picodollars=row.limit_picodollars,
            soft_thresholds=list(row.soft_thresholds),
            period_start=status.period_start,
            resets_at=status.resets_at,
            spent_picodollars=status.spent_picodollars,
            reserved_picodollars=status.reserved_picodollars,
            remaining_picodollars=status.remaining_picodollars,
            remaining_usd=float(usd(status.remaining_picodollars)),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class BudgetList(BaseModel):
    data: list[BudgetOut]


@router.get("", response_model=BudgetList, summary="Budgets and their current-period spend")
async def list_budgets(principal: Reader, session: SessionDep) -> BudgetList:
    statuses = await budget_store.list_budgets(session, principal.tenant_id, now=datetime.now(UTC))
    return BudgetList(data=[BudgetOut.of(status) for status in statuses])


@router.put("", response_model=BudgetOut, summary="Create or change a budget")
async def put_budget(
    body: BudgetIn, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> BudgetOut:
    services.gateway.governance.forget_budgets(principal.tenant_id)  # enforced from now on
    row, before = await budget_store.put_budget(
        session,
        tenant_id=principal.tenant_id,
        scope=body.scope,
        scope_value=body.scope_value,
        period=body.period,
        limit_picodollars=int(body.limit_usd * PICO),
        soft_thresholds=body.soft_thresholds,
    )
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="budget.create" if before is None else "budget.update",
        object_type="budget",
        object_id=row.id,
        before=before,
        after=budget_store.snapshot(row),
    )
    statuses = await budget_store.list_budgets(session, principal.tenant_id, now=datetime.now(UTC))
    return next(BudgetOut.of(status) for status in statuses if status.budget.id == row.id)


@router.delete("/{budget_id}", status_code=204, summary="Delete a budget")
async def delete_budget(
    budget_id: str, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> Response:
    row = await budget_store.delete_budget(session, budget_id, principal.tenant_id)
    services.gateway.governance.forget_budgets(principal.tenant_id)
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="budget.delete",
        object_type="budget",
        object_id=row.id,
        before=budget_store.snapshot(row),
    )
    return Response(status_code=204)
