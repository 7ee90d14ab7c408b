"""Comparing the versions of one prompt: what each cost, how fast, how often it failed.

Per version used in the range: the gateway's usage figures (cost, tokens, latency
percentiles, errors, answers failing the flow's schema — :mod:`core.gateway.usage`, filtered
to the prompt and grouped by version) beside the review outcomes of the writes it proposed
(review items carry the version that answered). Together they answer the question a
rollout asks: is the candidate at least as good as the pinned version, and at what cost?
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import ReviewItem, ReviewStatus
from core.gateway.rollout_store import percent
from core.gateway.rollouts import load_rollout
from core.gateway.usage import UsageMetrics, resolve_range, usage_report

_APPROVED = (ReviewStatus.APPROVED.value, ReviewStatus.WRITTEN.value)


class ReviewCounts(BaseModel):
    proposed: int = 0
    pending: int = 0
    approved: int = Field(0, description="Approved, written or queued to be written.")
    rejected: int = 0
    other: int = Field(0, description="Conflicts and failed writes.")
    rejection_rate: float = Field(0.0, description="rejected / (approved + rejected).")


class VersionComparison(BaseModel):
    prompt: str = Field(description="name@version")
    version: int
    arm: str | None = Field(
        description="`candidate` or `pinned` in the current rollout; null without one, or "
        "for a version that is neither."
    )
    validation_failure_rate: float = Field(description="validation_failures / requests.")
    usage: UsageMetrics
    reviews: ReviewCounts


class RolloutSummary(BaseModel):
    id: str
    candidate_version: int
    share_percent: float
    sticky: str


class PromptComparison(BaseModel):
    prompt: str
    since: datetime
    until: datetime
    rollout: RolloutSummary | None
    versions: list[VersionComparison]


async def _reviews(
    session: AsyncSession, tenant_id: str, prompt: str, since: datetime, until: datetime
) -> dict[str, ReviewCounts]:
    rows = await session.execute(
        select(ReviewItem.prompt_ref, ReviewItem.status, func.count())
        .where(
            ReviewItem.tenant_id == tenant_id,
            ReviewItem.created_at >= since,
            ReviewItem.created_at < until,
            ReviewItem.prompt_ref.startswith(f"{prompt}@", autoescape=True),
        )
        .group_by(ReviewItem.prompt_ref, ReviewItem.status)
    )
    counts: dict[str, ReviewCounts] = {}
    for ref, status, count in rows:
        if ref is None:
            continue
        tally = counts.setdefault(ref, ReviewCounts())
        tally.proposed += count
        if status == ReviewStatus.PENDING.value:
            tally.pending += count
        elif status in _APPROVED:
            tally.approved += count
        elif status == ReviewStatus.REJECTED.value:
            tally.rejected += count
        else:
            tally.other += count
    for tally in counts.values():
        decided = tally.approved + tally.rejected
        tally.rejection_rate = round(tally.rejected / decided, 6) if decided else 0.0
    return counts


async def compare_versions(
    session: AsyncSession,
    tenant_id: str,
    prompt: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    pinned: frozenset[int] = frozenset(),
) -> PromptComparison:
    """``pinned``: the versions installed flows pin (labelled ``pinned`` beside a rollout)."""
    start, end = resolve_range(since, until, now=now)
    report = await usage_report(
        session, tenant_id, since=start, until=end, group_by="prompt", prompt=prompt
    )
    reviews = await _reviews(session, tenant_id, prompt, start, end)
    rollout = await load_rollout(session, tenant_id, prompt)
    refs = {row.prompt for row in report.rows if row.prompt} | set(reviews)
    usage = {row.prompt: row for row in report.rows}
    versions = []
    for ref in sorted(refs, key=lambda r: int(r.rpartition("@")[2])):
        version = int(ref.rpartition("@")[2])
        row = usage.get(ref)
        metrics = (
            UsageMetrics.model_validate(row.model_dump(include=set(UsageMetrics.model_fields)))
            if row is not None
            else _empty()
        )
        arm = None
        if rollout is not None and version == rollout.candidate_version:
            arm = "candidate"
        elif rollout is not None and version in pinned:
            arm = "pinned"
        versions.append(
            VersionComparison(
                prompt=ref,
                version=version,
                arm=arm,
                validation_failure_rate=(
                    round(metrics.validation_failures / metrics.requests, 6)
                    if metrics.requests
                    else 0.0
                ),
                usage=metrics,
                reviews=reviews.get(ref, ReviewCounts()),
            )
        )
    summary = None
    if rollout is not None:
        summary = RolloutSummary(
            id=rollout.id,
            candidate_version=rollout.candidate_version,
            share_percent=percent(rollout.share_basis_points) or 0.0,
            sticky=rollout.sticky,
        )
    return PromptComparison(
        prompt=prompt, since=start, until=end, rollout=summary, versions=versions
    )


def _empty() -> UsageMetrics:
    zero: dict[str, Any] = dict.fromkeys(UsageMetrics.model_fields, 0)
    zero.update(latency_ms=None, ttft_ms=None, queue_ms=None)
    return UsageMetrics.model_validate(zero)
