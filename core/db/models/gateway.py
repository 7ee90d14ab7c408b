"""The Claude gateway's tables: call records (hashes and figures only), the encrypted call
audit, and spending budgets with their usage and reservations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models.base import Base, enum_check
from core.db.types import BigId, JsonType, utcnow


class GatewayRequest(Base):
    """One request through the Claude gateway: what was asked, what it cost, what it saved.

    Costs are integers in picodollars (1e-12 USD) so sums are exact on every database.
    """

    __tablename__ = "gateway_requests"
    __table_args__ = (
        Index("ix_gateway_requests_tenant_at", "tenant_id", "created_at"),
        Index("ix_gateway_requests_tenant_feature_at", "tenant_id", "feature", "created_at"),
        Index("ix_gateway_requests_tenant_prompt_at", "tenant_id", "prompt_ref", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(100))
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str | None] = mapped_column(String(20))
    requested_model: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # ok | error | canceled
    http_status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    input_tokens: Mapped[int] = mapped_column(BigId, default=0)
    output_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cache_write_5m_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cache_write_1h_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cost_picodollars: Mapped[int] = mapped_column(BigId, default=0)
    list_cost_picodollars: Mapped[int] = mapped_column(BigId, default=0)  # same model, no cache
    naive_cost_picodollars: Mapped[int] = mapped_column(BigId, default=0)  # naive model, no cache
    queue_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)
    upstream_calls: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    dedup_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    breakpoints_added: Mapped[int] = mapped_column(Integer, default=0)
    compression_tokens_saved: Mapped[int] = mapped_column(Integer, default=0)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    # The registry prompt version (``name@version``) the caller used, if it said.
    prompt_ref: Mapped[str | None] = mapped_column(String(120))
    # The caller's check of the answer failed (a flow's output schema, say).
    validation_failed: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # Answered through the Message Batches API, and so charged at the batch price.
    batch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    response_hash: Mapped[str | None] = mapped_column(String(64))
    # Values replaced by placeholders before the call, per data class (never the values).
    redactions: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UpstreamCall(Base):
    """One HTTP call from the gateway to the Anthropic API (a request may make several)."""

    __tablename__ = "gateway_upstream_calls"
    __table_args__ = (Index("ix_gateway_upstream_calls_request", "request_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("gateway_requests.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(64))
    http_status: Mapped[int] = mapped_column(Integer)  # 0: no answer (connection error)
    error_type: Mapped[str | None] = mapped_column(String(64))
    upstream_request_id: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(BigId, default=0)
    output_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigId, default=0)
    cost_picodollars: Mapped[int] = mapped_column(BigId, default=0)
    retry_after: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetScope(enum.StrEnum):
    TENANT = "tenant"  # every call of the tenant
    FEATURE = "feature"  # calls whose feature is scope_value
    API_KEY = "api_key"  # calls made with the API key whose id is scope_value


class BudgetPeriod(enum.StrEnum):
    DAY = "day"  # calendar days in UTC
    MONTH = "month"  # calendar months in UTC


class Budget(Base):
    """A spending limit in picodollars per calendar period (see :mod:`core.gateway.budgets`).

    A tenant-scope budget has no ``scope_value``; SQL unique constraints treat NULLs as
    distinct, so a partial unique index keeps one tenant budget per period.
    """

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint(enum_check("scope", BudgetScope), name="scope"),
        CheckConstraint(enum_check("period", BudgetPeriod), name="period"),
        CheckConstraint("(scope = 'tenant') = (scope_value IS NULL)", name="scope_value"),
        CheckConstraint("limit_picodollars >= 0", name="limit"),
        UniqueConstraint("tenant_id", "scope", "scope_value", "period"),
        Index(
            "uq_budgets_tenant_scope_period",
            "tenant_id",
            "period",
            unique=True,
            sqlite_where=text("scope = 'tenant'"),
            postgresql_where=text("scope = 'tenant'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16))
    scope_value: Mapped[str | None] = mapped_column(String(100))
    period: Mapped[str] = mapped_column(String(8))
    limit_picodollars: Mapped[int] = mapped_column(BigId)
    soft_thresholds: Mapped[list[float]] = mapped_column(JsonType, default=lambda: [0.8])
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BudgetUsage(Base):
    """A budget's spend and open reservations in one period (the row reservations lock)."""

    __tablename__ = "budget_usage"

    budget_id: Mapped[str] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    spent_picodollars: Mapped[int] = mapped_column(BigId, default=0)
    reserved_picodollars: Mapped[int] = mapped_column(BigId, default=0)
    # The highest soft threshold already announced this period (each fires once).
    announced_threshold: Mapped[float | None] = mapped_column(Float)


class BudgetReservation(Base):
    """One budget's share of an open reservation: released by settle, release or sweep."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    budget_id: Mapped[str] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    period_start: Mapped[datetime]
    amount_picodollars: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class CallAudit(Base):
    """The sealed prompt and answer of one gateway request (see :mod:`core.gateway.call_audit`).

    Kept apart from ``gateway_requests`` (which hold hashes only) and without a foreign key
    to it: call records are written asynchronously and may land later. ``sealed`` is a
    KeyRing token (AES-GCM, associated data bound to tenant and id); ``key_id`` names the
    key that sealed it, so rotation can find what still needs resealing.
    """

    __tablename__ = "call_audit"
    __table_args__ = (Index("ix_call_audit_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the gateway request id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
