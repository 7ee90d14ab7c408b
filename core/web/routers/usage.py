"""Usage: what a tenant's Claude gateway requests did, cost and saved.

Role policy: read (``GET /v1/usage``, ``GET /v1/usage/prompts/{name}``) by any role —
admin, service, reviewer. Always the caller's own tenant. The aggregation lives in
:mod:`core.gateway.usage` (shared with the CLI); this module only maps query parameters
onto it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from core.auth import Principal
from core.gateway.prompt_usage import PromptComparison, compare_versions
from core.gateway.rollout_store import users_of
from core.gateway.usage import MAX_RANGE, Bucket, GroupKey, UsageReport, usage_report
from core.web.deps import ANY_ROLE, ServicesDep, SessionDep, require

router = APIRouter(prefix="/v1/usage", tags=["usage"])

Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]

_KEYS = ", ".join(key.value for key in GroupKey)
Since = Annotated[
    datetime | None,
    Query(description="ISO 8601 with a timezone; inclusive. Default: until - 24 h."),
]
Until = Annotated[
    datetime | None,
    Query(
        description=f"ISO 8601 with a timezone; exclusive. Default: now. "
        f"At most {MAX_RANGE.days} days after since."
    ),
]


@router.get(
    "",
    summary="Gateway usage, cost and savings over a time range",
    response_model=UsageReport,
    response_model_exclude_unset=True,  # a row shows only the keys it was grouped by
)
async def get_usage(
    session: SessionDep,
    principal: Reader,
    since: Since = None,
    until: Until = None,
    group_by: Annotated[
        str | None,
        Query(max_length=100, description=f"Comma-separated keys from: {_KEYS}."),
    ] = None,
    bucket: Annotated[Bucket, Query(description="Time buckets, in UTC.")] = Bucket.NONE,
) -> UsageReport:
    return await usage_report(
        session,
        principal.tenant_id,
        since=since,
        until=until,
        group_by=group_by,
        bucket=bucket,
    )


@router.get(
    "/prompts/{name}",
    summary="Compare the versions of one prompt: cost, latency, validation failures, reviews",
    response_model=PromptComparison,
)
async def compare_prompt_versions(
    name: str,
    session: SessionDep,
    principal: Reader,
    services: ServicesDep,
    since: Since = None,
    until: Until = None,
) -> PromptComparison:
    return await compare_versions(
        session,
        principal.tenant_id,
        name,
        since=since,
        until=until,
        pinned=frozenset(user.pinned_version for user in users_of(services.flows, name)),
    )
