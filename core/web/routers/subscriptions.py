"""Callback subscriptions and their deliveries (admin only, tenant-scoped).

The signing secret appears once, in the answer to ``POST /v1/subscriptions``; afterwards
it exists only encrypted at rest. Another tenant's ids answer 404, never 403.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from core import audit, callbacks
from core.auth import Principal
from core.db.models import Delivery, Role, Subscription
from core.web.deps import ServicesDep, SessionDep, require, wake_worker
from core.web.pagination import decode_cursor, encode_cursor

router = APIRouter(tags=["subscriptions"])

AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
DEFAULT_PAGE = 50
MAX_PAGE = 200
_CURSOR_KIND = "delivery"


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL to POST to.")
    events: list[callbacks.EventType] = Field(
        min_length=1,
        description="Events to send: job.done, job.dead, job.awaiting_review, budget.threshold.",
    )


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, row: Subscription) -> SubscriptionOut:
        return cls(
            id=row.id,
            url=row.url,
            events=list(row.events),
            active=row.active,
            created_at=row.created_at,
        )


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="Verifies the Switchyard-Signature of each callback. Shown only now."
    )


class SubscriptionList(BaseModel):
    data: list[SubscriptionOut]


class DeliveryOut(BaseModel):
    id: int
    subscription_id: str
    job_id: int | None
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: Delivery) -> DeliveryOut:
        return cls(
            id=row.id,
            subscription_id=row.subscription_id,
            job_id=row.job_id,
            event_type=row.event_type,
            status=row.status,
            attempts=row.attempts,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            payload=row.payload,
        )


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


@router.post(
    "/v1/subscriptions",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Subscribe a URL to job events (the signing secret is shown only here)",
)
async def create_subscription(
    body: SubscriptionIn, principal: AdminDep, session: SessionDep, services: ServicesDep
) -> SubscriptionCreated:
    row, secret = await callbacks.create_subscription(
        session,
        tenant_id=principal.tenant_id,
        url=body.url,
        events=[event.value for event in body.events],
        services=services,
    )
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="subscription.create",
        object_type="subscription",
        object_id=row.id,
        url=row.url,
        events=list(row.events),
    )
    return SubscriptionCreated(**SubscriptionOut.of(row).model_dump(), secret=secret)


@router.get("/v1/subscriptions", response_model=SubscriptionList, summary="List subscriptions")
async def list_subscriptions(principal: AdminDep, session: SessionDep) -> SubscriptionList:
    rows = await callbacks.list_subscriptions(session, principal.tenant_id)
    return SubscriptionList(data=[SubscriptionOut.of(row) for row in rows])


@router.get(
    "/v1/subscriptions/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    summary="A subscription's deliveries, newest first",
)
async def list_deliveries(
    subscription_id: str,
    principal: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> DeliveryPage:
    before = decode_cursor(_CURSOR_KIND, cursor) if cursor is not None else None
    rows = await callbacks.list_deliveries(
        session, subscription_id, principal.tenant_id, limit=limit + 1, before=before
    )
    page = rows[:limit]
    next_cursor = encode_cursor(_CURSOR_KIND, page[-1].id) if len(rows) > limit else None
    return DeliveryPage(data=[DeliveryOut.of(row) for row in page], next_cursor=next_cursor)


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    response_model=DeliveryOut,
    summary="Send a dead delivery again",
)
async def replay_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    principal: AdminDep,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
) -> DeliveryOut:
    row = await callbacks.replay_delivery(session, delivery_id, principal.tenant_id)
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="delivery.replay",
        object_type="delivery",
        object_id=str(row.id),
        subscription_id=row.subscription_id,
    )
    background.add_task(wake_worker, request)  # runs after the commit and the response
    return DeliveryOut.of(row)


@router.delete(
    "/v1/subscriptions/{subscription_id}",
    status_code=204,
    summary="Deactivate a subscription (its deliveries stay readable)",
)
async def deactivate_subscription(
    subscription_id: str, principal: AdminDep, session: SessionDep
) -> Response:
    row = await callbacks.deactivate_subscription(session, subscription_id, principal.tenant_id)
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="subscription.deactivate",
        object_type="subscription",
        object_id=row.id,
    )
    return Response(status_code=204)
