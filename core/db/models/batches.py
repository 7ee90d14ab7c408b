"""Message Batches: requests waiting to go to the Anthropic Batch API, and the batches.

A :class:`BatchRequest` is one flow job's Claude request, prepared by the gateway (redacted,
routed, with cache breakpoints) and sealed, waiting for an answer at the batch price. A
:class:`MessageBatch` is one batch as submitted to the API. The state machines and why they
are crash-safe are in :mod:`core.gateway.message_batches`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models.base import Base, enum_check
from core.db.types import BigId, JsonType, utcnow


class BatchRequestStatus(enum.StrEnum):
    PENDING = "pending"  # waiting to be put in a batch
    SUBMITTING = "submitting"  # claimed into a batch whose create call is under way
    SUBMITTED = "submitted"  # in a batch the API acknowledged
    SUCCEEDED = "succeeded"  # answered: the sealed answer waits for its job
    FAILED = "failed"  # errored/expired/canceled for good: its job fails clearly
    SUPERSEDED = "superseded"  # its job asked again (the record changed); ignored


RESOLVED = (BatchRequestStatus.SUCCEEDED, BatchRequestStatus.FAILED)


class MessageBatchStatus(enum.StrEnum):
    SUBMITTING = "submitting"  # our row exists; the API may or may not have the batch
    IN_PROGRESS = "in_progress"  # the API acknowledged it (``anthropic_id`` is set)
    RESOLVED = "resolved"  # ended, and every request in it resolved or sent back
    ABANDONED = "abandoned"  # never acknowledged: its requests went back to pending


class BatchRequest(Base):
    __tablename__ = "batch_requests"
    __table_args__ = (
        CheckConstraint(enum_check("status", BatchRequestStatus), name="status"),
        Index("ix_batch_requests_status_created", "status", "created_at"),
        Index("ix_batch_requests_batch", "batch_id"),
        Index("ix_batch_requests_job", "job_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also the custom_id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=BatchRequestStatus.PENDING.value)
    # sha256 of the question before redaction: a resumed job whose record changed asks again.
    question_sha256: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    # The prepared body, its forwarded headers and the redactor's placeholder map, sealed
    # (AES-GCM bound to tenant and id); the call record's figures and hashes in clear.
    sealed_request: Mapped[str] = mapped_column(Text)
    call: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # The budget reservation held at the batch price until the result settles it.
    reservation: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("message_batches.id", ondelete="SET NULL")
    )
    submissions: Mapped[int] = mapped_column(Integer, default=0)  # batches it went out in
    sealed_answer: Mapped[str | None] = mapped_column(Text)
    gateway_request_id: Mapped[str | None] = mapped_column(String(32))
    cost_picodollars: Mapped[int] = mapped_column(BigId, default=0)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]


class MessageBatch(Base):
    __tablename__ = "message_batches"
    __table_args__ = (
        CheckConstraint(enum_check("status", MessageBatchStatus), name="status"),
        Index("ix_message_batches_status_poll", "status", "next_poll_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    anthropic_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=MessageBatchStatus.SUBMITTING.value)
    request_count: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict[str, Any]] = mapped_column(
        JsonType, default=dict, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    next_poll_at: Mapped[datetime | None]
