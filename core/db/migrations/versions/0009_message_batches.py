"""message batches

Batch requests and message batches (core/db/models/batches.py), the ``batch`` flag on
call records, and the ``awaiting_batch`` job status.

Widening the jobs' status CHECK on SQLite: rebuilding ``jobs`` (Alembic's batch mode) drops
the table under ``PRAGMA foreign_keys=ON``, which would cascade-delete every delivery and
review item pointing at a job; the pragma cannot be changed inside the migration's
transaction. SQLite documents editing the stored schema for exactly this kind of change
(https://sqlite.org/lang_altertable.html#otheralter): the new constraint only allows more
values, so every stored row still satisfies it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'queued', 'running', 'awaiting_review', 'done', 'dead', 'cancelled'"
NEW_STATUSES = (
    "'queued', 'running', 'awaiting_review', 'awaiting_batch', 'done', 'dead', 'cancelled'"
)


def _job_statuses(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_jobs_status"), "jobs", type_="check")
        op.create_check_constraint(op.f("ck_jobs_status"), "jobs", f"status IN ({new})")
        return
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
    ).scalar_one()
    if f"status IN ({old})" not in sql:
        raise RuntimeError("the jobs table's status CHECK is not the expected one")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'jobs'",
        (sql.replace(f"status IN ({old})", f"status IN ({new})"),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    op.create_table(
        "message_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("anthropic_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column(
            "counts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('submitting', 'in_progress', 'resolved', 'abandoned')",
            name=op.f("ck_message_batches_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_batches")),
        sa.UniqueConstraint("anthropic_id", name=op.f("uq_message_batches_anthropic_id")),
    )
    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_batches_status_poll", ["status", "next_poll_at"], unique=False
        )

    op.create_table(
        "batch_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("question_sha256", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("sealed_request", sa.Text(), nullable=False),
        sa.Column(
            "call",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "reservation",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("batch_id", sa.String(length=32), nullable=True),
        sa.Column("submissions", sa.Integer(), nullable=False),
        sa.Column("sealed_answer", sa.Text(), nullable=True),
        sa.Column("gateway_request_id", sa.String(length=32), nullable=True),
        sa.Column(
            "cost_picodollars",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("error_type", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'submitting', 'submitted', 'succeeded', 'failed', 'superseded')",
            name=op.f("ck_batch_requests_status"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["message_batches.id"],
            name=op.f("fk_batch_requests_batch_id_message_batches"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_batch_requests_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_batch_requests_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_requests")),
    )
    with op.batch_alter_table("batch_requests", schema=None) as batch_op:
        batch_op.create_index("ix_batch_requests_batch", ["batch_id"], unique=False)
        batch_op.create_index("ix_batch_requests_job", ["job_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_batch_requests_status_created", ["status", "created_at"], unique=False
        )

    with op.batch_alter_table("gateway_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("batch", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )

    _job_statuses(OLD_STATUSES, NEW_STATUSES)


def downgrade() -> None:
    # Parked jobs run again (and ask in real time) rather than violate the old constraint.
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'awaiting_batch'")
    _job_statuses(NEW_STATUSES, OLD_STATUSES)
    with op.batch_alter_table("gateway_requests", schema=None) as batch_op:
        batch_op.drop_column("batch")
    with op.batch_alter_table("batch_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_requests_status_created")
        batch_op.drop_index("ix_batch_requests_job")
        batch_op.drop_index("ix_batch_requests_batch")
    op.drop_table("batch_requests")
    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_message_batches_status_poll")
    op.drop_table("message_batches")
