"""The platform's tables: tenants and keys, connections and their flows, events, the job
queue, callbacks, the admin audit log and review items."""

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


class Role(enum.StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    SERVICE = "service"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"  # runnable once run_at has passed (also: waiting to retry)
    RUNNING = "running"  # leased by a worker until lease_expires_at
    AWAITING_REVIEW = "awaiting_review"  # parked until a reviewer decides
    AWAITING_BATCH = "awaiting_batch"  # parked until its Message Batches request resolves
    DONE = "done"
    DEAD = "dead"  # out of attempts or terminal error; replayable
    CANCELLED = "cancelled"


FINISHED = (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    # The person's user ids in the connected platforms, "<connector>:<id>" (e.g.
    # "sap:JSMITH"), so a change they made there is known as theirs (review four eyes).
    platform_ids: Mapped[list[str] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Only a SHA-256 of the key is stored; ``prefix`` finds the row without the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(enum_check("role", Role), name="role"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets_encrypted: Mapped[str] = mapped_column(Text, default="")
    poll_interval_seconds: Mapped[float | None] = mapped_column(Float)
    next_poll_at: Mapped[datetime | None]
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # ERP connections hold every write for review unless an admin turned this on.
    allow_unreviewed_writes: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConnectorStateRow(Base):
    """A connector's durable state for one connection (see :mod:`core.connector_state`):
    a sealed value, or a lock's owner and lease."""

    __tablename__ = "connector_state"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    sealed: Mapped[str | None] = mapped_column(Text)
    lock_owner: Mapped[str | None] = mapped_column(String(32))
    lock_expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FlowEnablement(Base):
    """Which flows a CRM admin switched on for a connection."""

    __tablename__ = "flow_enablements"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    flow: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Event(Base):
    """A platform change, stored before it is acknowledged. Redeliveries are no-ops."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("connection_id", "platform_event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    platform_event_id: Mapped[str] = mapped_column(String(255))
    object: Mapped[str] = mapped_column(String(200))
    record_id: Mapped[str] = mapped_column(String(255))
    change_type: Mapped[str] = mapped_column(String(16))
    changed_fields: Mapped[list[str]] = mapped_column(JsonType, default=list)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    trace_id: Mapped[str] = mapped_column(String(32))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(enum_check("status", JobStatus), name="status"),
        # The claim query walks this index: runnable jobs by priority, then age.
        Index(
            "ix_jobs_runnable",
            "priority",
            "id",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_jobs_leases",
            "lease_expires_at",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        # At most one live job per dedupe key (e.g. one pending poll per connection).
        Index(
            "uq_jobs_live_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_jobs_tenant_status", "tenant_id", "status", "id"),
        UniqueConstraint("event_id", "flow"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # lower runs first
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    connection_id: Mapped[str | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE")
    )
    flow: Mapped[str | None] = mapped_column(String(200))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    leased_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    trace_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JsonType)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One callback to one subscription; sent by a ``callback.deliver`` job."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    # The finished job it reports; None for events that are not about a job (budgets).
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who did what, when, to which object."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for a reviewer
    APPROVED = "approved"  # the write is queued
    REJECTED = "rejected"
    WRITTEN = "written"
    CONFLICT = "conflict"  # the record changed after the proposal; not overwritten
    FAILED = "failed"
    EXPIRED = "expired"  # nobody decided within SWITCHYARD_REVIEW_EXPIRY_HOURS


class ReviewItem(Base):
    """A proposed write held for a person: the record before, the patch, and why."""

    __tablename__ = "review_items"
    __table_args__ = (
        CheckConstraint(enum_check("status", ReviewStatus), name="status"),
        Index("ix_review_items_tenant_status", "tenant_id", "status", "id"),
        Index("ix_review_items_status_expires", "status", "expires_at"),
        UniqueConstraint("job_id"),  # a job that runs twice proposes once
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    flow: Mapped[str] = mapped_column(String(200))
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    object: Mapped[str] = mapped_column(String(200))
    record_id: Mapped[str | None] = mapped_column(String(255))  # None: a proposed create
    expected_version: Mapped[str | None] = mapped_column(String(255))
    before: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the patched fields, as read
    patch: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the model's whole answer
    reasons: Mapped[list[str]] = mapped_column(JsonType, default=list)
    status: Mapped[str] = mapped_column(String(16), default=ReviewStatus.PENDING.value)
    trace_id: Mapped[str] = mapped_column(String(32))
    prompt_ref: Mapped[str | None] = mapped_column(String(120))  # the version that answered
    # Who made the change, as the source connector reported it ("<connector>:<user id or
    # email>"): they cannot approve it (four eyes).
    triggered_by: Mapped[str | None] = mapped_column(String(200))
    # What an approval writes: the patch, or the reviewer's edit of it.
    approved_patch: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_note: Mapped[str | None] = mapped_column(Text)
