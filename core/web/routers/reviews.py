"""The review queue: proposed writes waiting for a person, and their decisions.

Role policy: reviewers and admins only (``service`` keys are the integrations whose writes
are being reviewed). A tenant sees only its own items; another tenant's id answers 404.
Decisions are audited; the logic (four eyes, edits, stale records, resuming the job) lives
in :mod:`core.review_decisions`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from core import review_decisions
from core.auth import Principal
from core.db.models import Job, ReviewItem, ReviewStatus, Role
from core.web.deps import ServicesDep, SessionDep, require, require_outside_transaction, wake_worker
from core.web.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])

Reviewer = Annotated[Principal, Depends(require(Role.REVIEWER, Role.ADMIN))]
# Decisions ask the platform for the record's current version: no request transaction.
Decider = Annotated[Principal, Depends(require_outside_transaction(Role.REVIEWER, Role.ADMIN))]
DEFAULT_PAGE = 50
MAX_PAGE = 200
_CURSOR_KIND = "review"


class FieldChange(BaseModel):
    field: str
    before: Any = Field(description="The record's value when proposed (or refreshed).")
    after: Any = Field(description="What the write puts there.")


class ReviewOut(BaseModel):
    id: str
    status: ReviewStatus
    flow: str
    connection_id: str
    object: str
    record_id: str | None = Field(description="null: the write creates a record.")
    reasons: list[str] = Field(description="Why the write waits for a person.")
    changes: list[FieldChange] = Field(description="Field by field, before and after.")
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    decided_by: str | None
    job_id: int
    trace_id: str


class ReviewDetail(ReviewOut):
    before: dict[str, Any]
    patch: dict[str, Any] = Field(description="The write as proposed.")
    approved_patch: dict[str, Any] | None = Field(description="As approved (with edits).")
    output: dict[str, Any] = Field(description="The model's whole answer: its rationale.")
    expected_version: str | None = Field(description="The record version the write expects.")
    prompt_ref: str | None
    triggered_by: str | None = Field(description="Who made the change; cannot approve it.")
    decision_note: str | None
    cost_usd: float = Field(description="What the Claude calls behind the proposal cost.")
    job_status: str


class ReviewPage(BaseModel):
    data: list[ReviewOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch: dict[str, Any] | None = Field(
        None, description="Edited values for some of the proposed fields; the rest stay."
    )
    note: str | None = Field(None, max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)


def _out(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "status": ReviewStatus(item.status),
        "flow": item.flow,
        "connection_id": item.connection_id,
        "object": item.object,
        "record_id": item.record_id,
        "reasons": list(item.reasons),
        "changes": [FieldChange(**change) for change in review_decisions.diff(item)],
        "created_at": item.created_at,
        "expires_at": item.expires_at,
        "decided_at": item.decided_at,
        "decided_by": item.decided_by,
        "job_id": item.job_id,
        "trace_id": item.trace_id,
    }


def _cost(result: dict[str, Any] | None) -> float:
    steps = (result or {}).get("steps", [])
    return round(sum(float(s.get("cost_usd") or 0) for s in steps if s.get("step") == "claude"), 8)


async def _detail(session: Any, item: ReviewItem) -> ReviewDetail:
    job = await session.get(Job, item.job_id)
    return ReviewDetail(
        **_out(item),
        before=item.before,
        patch=item.patch,
        approved_patch=item.approved_patch,
        output=item.output,
        expected_version=item.expected_version,
        prompt_ref=item.prompt_ref,
        triggered_by=item.triggered_by,
        decision_note=item.decision_note,
        cost_usd=_cost(job.result if job is not None else None),
        job_status=job.status if job is not None else "deleted",
    )


@router.get("", summary="The review queue, oldest first")
async def list_reviews(
    session: SessionDep,
    principal: Reviewer,
    status: ReviewStatus | None = ReviewStatus.PENDING,
    flow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> ReviewPage:
    statement = select(ReviewItem).where(ReviewItem.tenant_id == principal.tenant_id)
    if status is not None:
        statement = statement.where(ReviewItem.status == status.value)
    if flow is not None:
        statement = statement.where(ReviewItem.flow == flow)
    if cursor is not None:  # one item per job, so the job id orders and pages them
        statement = statement.where(ReviewItem.job_id > decode_cursor(_CURSOR_KIND, cursor))
    rows = (await session.scalars(statement.order_by(ReviewItem.job_id).limit(limit + 1))).all()
    page = rows[:limit]
    next_cursor = encode_cursor(_CURSOR_KIND, page[-1].job_id) if len(rows) > limit else None
    return ReviewPage(data=[ReviewOut(**_out(item)) for item in page], next_cursor=next_cursor)


@router.get("/{review_id}", summary="One review item with its diff, rationale and cost")
async def get_review(review_id: str, session: SessionDep, principal: Reviewer) -> ReviewDetail:
    item = await review_decisions.get_item(session, review_id, principal.tenant_id)
    return await _detail(session, item)


@router.post("/{review_id}/approve", summary="Approve (optionally with edits): the write runs")
async def approve_review(
    review_id: str,
    body: ApproveIn,
    principal: Decider,
    services: ServicesDep,
    request: Request,
    background: BackgroundTasks,
) -> ReviewDetail:
    item = await review_decisions.approve(
        services, review_id, principal, edits=body.patch, note=body.note
    )
    background.add_task(wake_worker, request)
    async with services.sessions() as session:
        return await _detail(session, item)


@router.post("/{review_id}/reject", summary="Reject with a reason: nothing is written")
async def reject_review(
    review_id: str,
    body: RejectIn,
    principal: Decider,
    services: ServicesDep,
    request: Request,
    background: BackgroundTasks,
) -> ReviewDetail:
    item = await review_decisions.reject(services, review_id, principal, body.reason)
    background.add_task(wake_worker, request)
    async with services.sessions() as session:
        return await _detail(session, item)
