"""Subscriptions and deliveries: the rows, their lookups (tenant-scoped) and replay."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import netguard
from core.crypto import KeyRing
from core.db.models import Delivery, JobStatus, Subscription
from core.db.types import new_id, utcnow
from core.errors import Conflict, InvalidRequest, NotFound
from core.queue import NewJob, enqueue
from core.retry import RetryPolicy
from core.services import Services

DELIVER_KIND = "callback.deliver"
DELIVERY_RETRY = RetryPolicy(max_attempts=8, initial=2.0, maximum=600.0)
MAX_ACTIVE_SUBSCRIPTIONS = 25  # per tenant: bounds the fan-out of one finished job


class EventType(enum.StrEnum):
    JOB_DONE = "job.done"
    JOB_DEAD = "job.dead"
    JOB_AWAITING_REVIEW = "job.awaiting_review"
    BUDGET_THRESHOLD = "budget.threshold"  # a budget's soft threshold reached this period


EVENT_FOR_STATUS = {
    JobStatus.DONE: EventType.JOB_DONE,
    JobStatus.DEAD: EventType.JOB_DEAD,
    JobStatus.AWAITING_REVIEW: EventType.JOB_AWAITING_REVIEW,
}


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


def _secret_aad(subscription_id: str) -> bytes:
    return subscription_id.encode()


def open_secret(services: Services, subscription: Subscription) -> str:
    """The subscription's signing secret (stored encrypted, bound to the row's id)."""
    plain = services.keyring.decrypt(subscription.secret_encrypted, _secret_aad(subscription.id))
    return plain.decode()


async def rotate_subscription_secrets(session: AsyncSession, keyring: KeyRing) -> int:
    """Re-encrypt every subscription's signing secret under the active key."""
    changed = 0
    for subscription in (await session.execute(select(Subscription))).scalars():
        rewrapped = keyring.rewrap(subscription.secret_encrypted, _secret_aad(subscription.id))
        if rewrapped is not None:
            subscription.secret_encrypted = rewrapped
            changed += 1
    await session.flush()
    return changed


def _event_types(events: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    known = {event.value for event in EventType}
    for event in events:
        if event not in known:
            raise InvalidRequest(
                f"unknown event type {event!r}; choose from {', '.join(sorted(known))}"
            )
        if event not in chosen:
            chosen.append(event)
    if not chosen:
        raise InvalidRequest("a subscription needs at least one event type")
    return chosen


async def create_subscription(
    session: AsyncSession, *, tenant_id: str, url: str, events: list[str], services: Services
) -> tuple[Subscription, str]:
    """Store a subscription; returns it and its signing secret, which is shown only once."""
    chosen = _event_types(events)
    if len(url) > 2000:
        raise InvalidRequest("callback URL is longer than 2000 characters")
    await netguard.check_destination(url, services.settings.callback_allow_networks)
    active = await session.scalars(
        select(Subscription.id).where(
            Subscription.tenant_id == tenant_id, Subscription.active.is_(True)
        )
    )
    if len(active.all()) >= MAX_ACTIVE_SUBSCRIPTIONS:
        raise Conflict(f"a tenant may have at most {MAX_ACTIVE_SUBSCRIPTIONS} active subscriptions")
    subscription_id = new_id("sub")
    secret = f"sysec_{secrets.token_urlsafe(32)}"
    subscription = Subscription(
        id=subscription_id,
        tenant_id=tenant_id,
        url=url,
        events=chosen,
        secret_encrypted=services.keyring.encrypt(secret.encode(), _secret_aad(subscription_id)),
        active=True,
        created_at=utcnow(),
    )
    session.add(subscription)
    await session.flush()
    return subscription, secret


async def get_subscription(
    session: AsyncSession, subscription_id: str, tenant_id: str | None
) -> Subscription:
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None or (tenant_id is not None and subscription.tenant_id != tenant_id):
        raise NotFound(f"no subscription {subscription_id}")
    return subscription


async def list_subscriptions(session: AsyncSession, tenant_id: str) -> list[Subscription]:
    rows = await session.scalars(
        select(Subscription)
        .where(Subscription.tenant_id == tenant_id)
        .order_by(Subscription.created_at, Subscription.id)
    )
    return list(rows)


async def deactivate_subscription(
    session: AsyncSession, subscription_id: str, tenant_id: str
) -> Subscription:
    """Stop sending to a subscription; its delivery history stays readable."""
    subscription = await get_subscription(session, subscription_id, tenant_id)
    subscription.active = False
    await session.flush()
    return subscription


# ------------------------------------------------------------------- deliveries


async def get_delivery(
    session: AsyncSession, delivery_id: int, tenant_id: str | None, *, lock: bool = False
) -> Delivery:
    delivery = await session.get(Delivery, delivery_id, with_for_update=lock)
    if delivery is None or (tenant_id is not None and delivery.tenant_id != tenant_id):
        raise NotFound(f"no delivery {delivery_id}")
    return delivery


async def list_deliveries(
    session: AsyncSession,
    subscription_id: str,
    tenant_id: str,
    *,
    limit: int = 50,
    before: int | None = None,
) -> list[Delivery]:
    """Newest first; pass the last id seen as ``before`` for the next page."""
    await get_subscription(session, subscription_id, tenant_id)
    query = select(Delivery).where(
        Delivery.subscription_id == subscription_id, Delivery.tenant_id == tenant_id
    )
    if before is not None:
        query = query.where(Delivery.id < before)
    rows = await session.scalars(query.order_by(Delivery.id.desc()).limit(limit))
    return list(rows)


def deliver_job(delivery: Delivery, trace_id: str | None) -> NewJob:
    return NewJob(
        kind=DELIVER_KIND,
        tenant_id=delivery.tenant_id,
        payload={"delivery_id": delivery.id},
        max_attempts=DELIVERY_RETRY.max_attempts,
        trace_id=trace_id,
        # At most one live sender per delivery, however often it is replayed.
        dedupe_key=f"{DELIVER_KIND}:{delivery.id}",
    )


async def replay_delivery(session: AsyncSession, delivery_id: int, tenant_id: str) -> Delivery:
    """Send a dead delivery again: back to pending, with a fresh ``callback.deliver`` job."""
    # Locked, so two concurrent replays cannot both see "dead" (PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already serialises them).
    delivery = await get_delivery(session, delivery_id, tenant_id, lock=True)
    if delivery.status != DeliveryStatus.DEAD:
        raise Conflict(f"delivery {delivery_id} is {delivery.status}; only dead ones are replayed")
    subscription = await get_subscription(session, delivery.subscription_id, tenant_id)
    if not subscription.active:
        raise Conflict(f"subscription {subscription.id} is inactive; nothing would be sent")
    delivery.status = DeliveryStatus.PENDING.value
    await session.flush()
    await enqueue(session, [deliver_job(delivery, None)])
    return delivery
