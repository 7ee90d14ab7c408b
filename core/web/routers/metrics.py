"""Prometheus exposition (no authentication: aggregate counters only, no tenant data).

Queue depth per status is sampled from the database at scrape time, so the gauge is as
fresh as the scrape; a database outage still serves the process's other metrics.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from core.logging import get_logger
from core.queue import depth
from core.web.deps import ServicesDep

router = APIRouter(tags=["health"])
log = get_logger(__name__)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(services: ServicesDep) -> Response:
    try:
        async with services.sessions.begin() as session:
            counts = await depth(session)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("queue depth not sampled", error=f"{type(exc).__name__}: {exc}")
    else:
        # Every live status gets a sample, so one that emptied reads 0 rather than stale.
        for status, count in counts.items():
            services.metrics.queue_depth.labels(status).set(count)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
