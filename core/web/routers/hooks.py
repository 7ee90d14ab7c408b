"""Webhook ingress: ``POST /hooks/{connection_id}`` — the durable path.

No API key: the platform's own signature, checked by the connection's connector,
authenticates the request. In order:

1. the raw body (size limited by :mod:`core.web.limits`);
2. the connection (unknown → 404; re-read at most once a second,
   :meth:`core.connections.ConnectorPool.for_ingress`), ``verify`` (→ 401), ``parse``
   (→ 400 / 422 with the reason) — a rejected request never reaches the database;
3. the new events and one job per matching enabled flow are stored in one transaction,
   shared with concurrent requests (:mod:`core.ingest_writer`, group commit), and the
   commit happens BEFORE the answer is built: an acknowledged event is durable;
4. the connector's own ack (e.g. a SOAP ``<Ack>``) or 202 ``{"accepted", "duplicates",
   "jobs"}``; then the in-process worker, if any, is woken.

It is the hot path (≥1,000 acks/s): no per-request transaction, no response model
validation.
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from connectors.base import InboundRequest
from core.errors import NotFound, SwitchyardError
from core.ingest import Delivery
from core.web.deps import get_services, get_trace_id, wake_worker

router = APIRouter(tags=["webhooks"])

UNKNOWN_CONNECTOR = "unknown"


class HookAccepted(BaseModel):
    accepted: int = Field(description="New events stored.")
    duplicates: int = Field(description="Events already stored before (redeliveries).")
    jobs: list[int] = Field(description="Ids of the flow jobs enqueued for the new events.")


def _inbound(request: Request, body: bytes) -> InboundRequest:
    return InboundRequest(
        method=request.method,
        url=str(request.url),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
        query=dict(request.query_params),
    )


@router.post(
    "/hooks/{connection_id}",
    status_code=202,
    summary="Receive a platform's change events",
    response_model=None,
    responses={
        202: {"model": HookAccepted, "description": "Stored durably; processing is queued."},
        401: {"description": "Signature invalid"},
        404: {"description": "Unknown connection"},
        413: {"description": "Body too large"},
    },
)
async def receive_hook(connection_id: str, request: Request) -> Response:
    started = time.perf_counter()
    services = get_services(request)
    metrics = services.metrics
    trace_id = get_trace_id(request)
    connector_name = UNKNOWN_CONNECTOR
    try:
        inbound = _inbound(request, await request.body())  # a streamed oversize body: 413
        connection, connector = await services.connectors.for_ingress(
            services.sessions, connection_id
        )
        connector_name = connection.connector
        structlog.contextvars.bind_contextvars(tenant=connection.tenant_id)
        connector.verify(inbound)
        events = connector.parse(inbound)
        # Returns once committed (group commit), before any answer exists: an ack is durable.
        try:
            result = await services.ingest.submit(Delivery.of(connection, events, trace_id))
        except IntegrityError:  # the only constraint left to fail: the connection is gone
            raise NotFound(f"no connection {connection_id}") from None
    except Exception as exc:
        outcome = "rejected" if isinstance(exc, SwitchyardError) else "error"
        metrics.ingress_requests.labels(connector_name, outcome).inc()
        raise
    if result.jobs:
        wake_worker(request)

    metrics.ingress_requests.labels(
        connector_name, "accepted" if result.accepted else "duplicate"
    ).inc()
    metrics.ingress_events.labels(connector_name, "new").inc(result.accepted)
    metrics.ingress_events.labels(connector_name, "duplicate").inc(result.duplicates)
    metrics.ingress_latency.labels(connector_name).observe(time.perf_counter() - started)
    ack = connector.ack(result)
    if ack is not None:
        return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)
    return JSONResponse(
        {"accepted": result.accepted, "duplicates": result.duplicates, "jobs": list(result.jobs)},
        status_code=202,
    )
