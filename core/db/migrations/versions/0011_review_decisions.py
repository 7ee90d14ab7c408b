"""review decisions: expiry, four eyes, approved (possibly edited) patches

Adds ``triggered_by``, ``approved_patch`` and ``expires_at`` to review items, the
``expired`` status, and ``users.platform_ids`` (who a person is in the connected platforms). The status CHECK is widened on SQLite by editing the stored schema, as
0009 did for jobs (rebuilding the table is avoidable, and the new constraint only allows
more values, so every stored row still satisfies it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 18:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "'pending', 'approved', 'rejected', 'written', 'conflict', 'failed'"
NEW = "'pending', 'approved', 'rejected', 'written', 'conflict', 'failed', 'expired'"


def _statuses(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_review_items_status"), "review_items", type_="check")
        op.create_check_constraint(
            op.f("ck_review_items_status"), "review_items", f"status IN ({new})"
        )
        return
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'review_items'"
    ).scalar_one()
    if f"status IN ({old})" not in sql:
        raise RuntimeError("the review_items table's status CHECK is not the expected one")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'review_items'",
        (sql.replace(f"status IN ({old})", f"status IN ({new})"),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    with op.batch_alter_table("review_items", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("triggered_by", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column(
                "approved_patch",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_review_items_status_expires", ["status", "expires_at"], unique=False
        )
    _statuses(OLD, NEW)
    with op.batch_alter_table("users", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column(
                "platform_ids",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("platform_ids")
    op.execute("UPDATE review_items SET status = 'rejected' WHERE status = 'expired'")
    _statuses(NEW, OLD)
    with op.batch_alter_table("review_items", schema=None, recreate="never") as batch_op:
        batch_op.drop_index("ix_review_items_status_expires")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("approved_patch")
        batch_op.drop_column("triggered_by")
