"""Build the gateway from settings: the one place its parts are chosen and wired."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import KeyRing
from core.errors import SettingsError
from core.gateway.admission import Admission
from core.gateway.admission_memory import InProcessAdmission
from core.gateway.batching import BacklogCollector, BatchWriter
from core.gateway.budgets import Budgets
from core.gateway.call_audit import CallAuditLog
from core.gateway.catalog import Catalog, RateLimits
from core.gateway.fair_line import TenantWeights
from core.gateway.gateway import Gateway
from core.gateway.governance import Governance
from core.gateway.records import Recorder
from core.gateway.response_cache import MemoryResponseCache, ResponseCache
from core.gateway.routing import RoutingTable
from core.gateway.telemetry import GatewayTelemetry
from core.gateway.transactions import transactions_for
from core.gateway.upstream import Upstream
from core.metrics import Metrics
from core.settings import Settings


def admission_limits(settings: Settings, catalog: Catalog) -> dict[str, RateLimits]:
    """The catalogue's default limits per model, overridden by ``gateway.limits``."""
    limits = {model.id: model.limits for model in catalog}
    for model_id, override in settings.gateway.limits.items():
        base = limits.get(model_id)
        merged: dict[str, Any] = {**(base.model_dump() if base else {}), **override}
        try:
            limits[model_id] = RateLimits.model_validate(merged)
        except ValueError as exc:
            raise SettingsError(
                f"SWITCHYARD_GATEWAY__LIMITS: {model_id!r} needs rpm, input_tpm and "
                f"output_tpm as positive integers ({exc})"
            ) from None
    return limits


def with_headroom(limits: dict[str, RateLimits], headroom: float) -> dict[str, RateLimits]:
    """Each limit less ``headroom`` of it (at least 1), for admission to aim at."""

    def keep(value: int) -> int:
        return max(1, math.floor(value * (1 - headroom)))

    return {
        model: RateLimits(
            rpm=keep(limit.rpm),
            input_tpm=keep(limit.input_tpm),
            output_tpm=keep(limit.output_tpm),
        )
        for model, limit in limits.items()
    }


def _redis(settings: Settings) -> Any:
    if not settings.redis_url:
        raise SettingsError(
            "SWITCHYARD_GATEWAY__ADMISSION=redis needs SWITCHYARD_REDIS_URL (redis://host:6379/0)"
        )
    import redis.asyncio

    return redis.asyncio.from_url(settings.redis_url)


def build_gateway(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    metrics: Metrics,
    *,
    catalog: Catalog | None = None,
    upstream: Upstream | None = None,
    keyring: KeyRing | None = None,
    read_sessions: async_sessionmaker[AsyncSession] | None = None,
) -> Gateway:
    """The gateway; ``keyring`` seals the call audit log (no audit log without one);
    ``read_sessions`` serve lookups on the request path without a write lock."""
    config = settings.gateway
    catalog = catalog or Catalog.load(config.catalog_file)
    routing = RoutingTable.build(
        task_tiers=config.task_tiers,
        tier_models=config.tier_models,
        tier_order=list(config.tier_models),
        max_tokens=config.max_tokens,
    )
    routing.check(catalog)
    catalog.get(config.naive_model)
    limits = with_headroom(admission_limits(settings, catalog), config.headroom)
    shared = config.admission == "redis" or (config.admission == "auto" and settings.redis_url)
    weights = TenantWeights(config.tenant_weights, fair=config.tenant_fairness)
    admission: Admission
    cache: ResponseCache
    if shared:
        from core.gateway.admission_redis import RedisAdmission
        from core.gateway.response_cache import RedisResponseCache

        client = _redis(settings)
        admission = RedisAdmission(
            client,
            limits,
            prefix="switchyard:admission:",
            weights=weights,
            headroom=config.headroom,
        )
        cache = RedisResponseCache(client, prefix="switchyard:responses:")
    else:
        admission = InProcessAdmission(limits, weights=weights, headroom=config.headroom)
        cache = MemoryResponseCache(max_entries=100_000, max_bytes=config.response_cache_max_bytes)
    api_key = settings.anthropic_api_key
    transactions = transactions_for(sessions)  # the call records' and the call audit's
    recorder = Recorder(sessions, transactions=transactions)
    call_audit = (
        CallAuditLog(
            sessions,
            keyring,
            timedelta(days=config.audit_retention_days),
            transactions=transactions,
        )
        if config.audit and keyring is not None
        else None
    )
    writers: list[BatchWriter[Any]] = [recorder]
    if call_audit is not None:  # not `if call_audit`: an empty writer is falsy (len 0)
        writers.append(call_audit)
    metrics.registry.register(BacklogCollector(writers))
    return Gateway(
        settings=config,
        catalog=catalog,
        routing=routing,
        upstream=upstream
        or Upstream(
            base_url=settings.anthropic_base_url,
            api_key=api_key.get_secret_value() if api_key else None,
            timeout=config.upstream_timeout_seconds,
        ),
        admission=admission,
        recorder=recorder,
        telemetry=GatewayTelemetry(metrics),
        response_cache=cache,
        governance=Governance(
            policy=config.redaction,
            tenant_policies=config.tenant_redaction,
            catalog=catalog,
            budgets=Budgets(sessions) if config.budgets else None,
            read_sessions=read_sessions,
        ),
        call_audit=call_audit,
    )
