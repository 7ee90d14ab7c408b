"""The ``callback.deliver`` job: sign the body and POST it to the subscriber."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from core import netguard, signing
from core.callbacks.store import DELIVER_KIND, DELIVERY_RETRY, DeliveryStatus, open_secret
from core.crypto import DecryptionFailed
from core.db.models import Delivery, Subscription
from core.db.types import utcnow
from core.errors import (
    DestinationRefused,
    SwitchyardError,
    TerminalError,
    TransientError,
    is_transient,
)
from core.handlers import JobContext, JobKind, Outcome
from core.http_errors import retry_after_seconds
from core.queue import ClaimedJob
from core.services import Services

RETRYABLE_STATUS = frozenset({408, 425, 429})
DELIVERY_HEADER = "Switchyard-Delivery"
EVENT_HEADER = "Switchyard-Event"
_ERROR_BODY_BYTES = 512


class DeliveryFailed(TransientError):
    """The receiver was unreachable or asked us to come back later."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DeliveryRejected(TerminalError):
    """The receiver answered in a way a retry cannot change (e.g. 400, 404, a redirect)."""


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes signed and sent (stable key order, whatever the database did)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _retry_after(response: httpx.Response) -> float | None:
    seconds = retry_after_seconds(response.headers.get("retry-after"))
    # A receiver must not be able to park a delivery beyond our own backoff ceiling.
    return None if seconds is None else min(seconds, DELIVERY_RETRY.maximum)


@dataclass(frozen=True)
class _Send:
    """What one attempt needs, read in a short transaction before any network I/O."""

    delivery_id: int
    event_type: str
    payload: dict[str, Any]
    url: str
    secret: str


async def _open(
    services: Services, destination: netguard.Destination, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """Send to the first vetted address that takes a connection; the response is streamed.

    Only a failure to connect moves on to the next address: nothing was sent then, so the
    receiver cannot get the callback twice. Any later error ends the attempt.
    """
    *others, last = destination.addresses

    async def send(address: netguard.IPAddress) -> httpx.Response:
        url, pinned, extensions = netguard.pinned_request(destination, address)
        request = services.http.build_request(
            "POST", url, content=body, headers=pinned | headers, extensions=extensions
        )
        return await services.http.send(request, stream=True)

    for address in others:
        try:
            return await send(address)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue
    return await send(last)


async def _post(services: Services, send: _Send) -> tuple[int | None, SwitchyardError | None]:
    """One attempt: (status code or None, the error to raise or None)."""
    try:
        destination = await netguard.resolve_destination(
            send.url, services.settings.callback_allow_networks
        )
    except netguard.DestinationUnresolvable as exc:
        return None, DeliveryFailed(exc.detail)
    except DestinationRefused as exc:
        return None, exc
    body = encode_body(send.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Switchyard-Callbacks/1",
        signing.HEADER: signing.sign(send.secret, body),
        DELIVERY_HEADER: str(send.delivery_id),
        EVENT_HEADER: send.event_type,
    }
    try:
        response = await _open(services, destination, body, headers)
        try:
            excerpt = b""
            async for chunk in response.aiter_bytes():
                excerpt += chunk
                if len(excerpt) >= _ERROR_BODY_BYTES:
                    break  # never buffer a large answer; an excerpt explains a failure
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        timeout = services.settings.callback_timeout_seconds
        return None, DeliveryFailed(f"no answer within {timeout}s")
    except httpx.TransportError as exc:
        return None, DeliveryFailed(f"{type(exc).__name__}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return code, None
    detail = f"HTTP {code}: {excerpt[:_ERROR_BODY_BYTES].decode(errors='replace')}".strip()
    if code in RETRYABLE_STATUS or code >= 500:
        return code, DeliveryFailed(detail, retry_after=_retry_after(response))
    if 300 <= code < 400:
        detail += " (redirects are not followed)"
    return code, DeliveryRejected(detail)


def _final(job: ClaimedJob, error: BaseException) -> bool:
    """Whether the queue will bury the job after this failure (mirrors JobQueue.fail)."""
    limit = min(DELIVERY_RETRY.max_attempts, job.max_attempts)
    return not is_transient(error) or job.attempts >= limit


async def _record(
    services: Services, job: ClaimedJob, delivery_id: int, code: int | None, error: Exception | None
) -> None:
    """Write one attempt's outcome on the delivery; ``dead`` once the queue will give up."""
    final = error is not None and _final(job, error)
    async with services.sessions.begin() as session:
        row = await session.get(Delivery, delivery_id)
        if row is not None:
            row.attempts += 1
            row.last_status_code = code
            if error is None:
                row.status = DeliveryStatus.DELIVERED.value
                row.delivered_at = utcnow()
                row.last_error = None
            else:
                detail = error.detail if isinstance(error, SwitchyardError) else repr(error)
                row.last_error = detail[:4000]
                if final:
                    row.status = DeliveryStatus.DEAD.value
    outcome = "delivered" if error is None else "dead" if final else "retry"
    services.metrics.callbacks.labels(outcome=outcome).inc()


async def _deliver(ctx: JobContext) -> Outcome:
    services = ctx.services
    delivery_id = ctx.job.payload.get("delivery_id")
    if not isinstance(delivery_id, int):
        raise DeliveryRejected(f"job {ctx.job.id} names no delivery")
    error: SwitchyardError | None = None
    async with services.sessions.begin() as session:
        delivery = await session.get(Delivery, delivery_id)
        if delivery is None or delivery.tenant_id != ctx.job.tenant_id:
            raise DeliveryRejected(f"delivery {delivery_id} no longer exists")
        if delivery.status == DeliveryStatus.DELIVERED:
            return Outcome({"delivery_id": delivery_id, "status": delivery.status})
        subscription = await session.get(Subscription, delivery.subscription_id)
        assert subscription is not None  # the foreign key cascades deletes
        if not subscription.active:
            error = DeliveryRejected(f"subscription {subscription.id} is inactive")
        try:
            secret = open_secret(services, subscription)
        except DecryptionFailed as exc:  # e.g. its key was dropped from the ring
            secret, error = "", error or exc
        send = _Send(delivery_id, delivery.event_type, delivery.payload, subscription.url, secret)
    code: int | None = None
    if error is None:
        try:
            code, error = await _post(services, send)
        except Exception as exc:
            # Unforeseen: keep the delivery's record true, then let the queue decide.
            await _record(services, ctx.job, delivery_id, None, exc)
            raise
    await _record(services, ctx.job, delivery_id, code, error)
    if error is not None:
        raise error
    return Outcome({"delivery_id": delivery_id, "status": "delivered", "status_code": code})


def deliver_job_kind() -> JobKind:
    """The ``callback.deliver`` job kind; it never triggers callbacks itself."""
    return JobKind(name=DELIVER_KIND, handler=_deliver, retry=DELIVERY_RETRY, notify=False)
