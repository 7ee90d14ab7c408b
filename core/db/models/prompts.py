"""The prompt registry's tables: which prompt versions calls have used (and the text each
meant), and the rollouts that send a share of a tenant's traffic to a candidate version
(see :mod:`core.gateway.rollouts`)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models.base import Base, enum_check
from core.db.types import BigId, utcnow


class PromptVersion(Base):
    """A prompt version some call has used, with the digest of its text at first use.

    A version is immutable once used: a file whose digest no longer matches is refused.
    """

    __tablename__ = "prompt_versions"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    first_used_at: Mapped[datetime] = mapped_column(default=utcnow)


class RolloutSticky(enum.StrEnum):
    RECORD = "record"  # each record keeps its version; a tenant's records are split
    TENANT = "tenant"  # the whole tenant is in or out


class PromptRollout(Base):
    """A tenant's rollout of a candidate version of one prompt.

    Flows pin a version (``prompt: name@1``); a rollout sends ``share_basis_points`` of
    10,000 of the tenant's calls with that prompt to ``candidate_version`` instead.
    """

    __tablename__ = "prompt_rollouts"
    __table_args__ = (
        CheckConstraint(enum_check("sticky", RolloutSticky), name="sticky"),
        CheckConstraint("share_basis_points >= 0 AND share_basis_points <= 10000", name="share"),
        UniqueConstraint("tenant_id", "prompt"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also the bucketing salt
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(String(100))
    candidate_version: Mapped[int] = mapped_column(Integer)
    share_basis_points: Mapped[int] = mapped_column(Integer)
    sticky: Mapped[str] = mapped_column(String(8), default=RolloutSticky.RECORD.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class RolloutChange(Base):
    """Every change to a rollout, newest last: the history an admin reads and rolls back."""

    __tablename__ = "prompt_rollout_changes"
    __table_args__ = (Index("ix_prompt_rollout_changes_tenant_prompt", "tenant_id", "prompt"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))  # start | change | rollback | end
    candidate_version: Mapped[int | None] = mapped_column(Integer)
    share_before: Mapped[int | None] = mapped_column(Integer)  # basis points; None: none
    share_after: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)
