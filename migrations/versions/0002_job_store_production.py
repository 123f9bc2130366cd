"""job store production — schema for issue 4 (job store)

Fair queueing tag, GPUs per job, resubmission link, and job dependencies.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fair_tag", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("resubmitted_from", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_job_resubmitted_from_job"),
            "job",
            ["resubmitted_from"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.drop_index("ix_job_claim")
    # the defaults only filled existing rows; the model supplies the values from now on
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.alter_column("fair_tag", server_default=None)
        batch_op.alter_column("gpus", server_default=None)

    # Partial indexes, created outside batch mode (which cannot copy an expression index on
    # SQLite); CREATE INDEX … WHERE works on both databases as it is.
    queued = {
        "postgresql_where": sa.text("state = 'queued'"),
        "sqlite_where": sa.text("state = 'queued'"),
    }
    running = {
        "postgresql_where": sa.text("state = 'running'"),
        "sqlite_where": sa.text("state = 'running'"),
    }
    op.create_index("ix_job_queue", "job", [sa.text("priority DESC"), "fair_tag", "id"], **queued)
    op.create_index("ix_job_fair", "job", ["created_by", "fair_tag"], **queued)
    op.create_index("ix_job_running", "job", ["lease_expires_at"], **running)

    op.create_table(
        "job_dependency",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["job.id"],
            name=op.f("fk_job_dependency_depends_on_id_job"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_dependency_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "depends_on_id", name=op.f("pk_job_dependency")),
    )
    with op.batch_alter_table("job_dependency", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_dependency_depends_on_id"), ["depends_on_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("job_dependency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_dependency_depends_on_id"))
    op.drop_table("job_dependency")
    op.drop_index("ix_job_running", table_name="job")
    op.drop_index("ix_job_fair", table_name="job")
    op.drop_index("ix_job_queue", table_name="job")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index("ix_job_claim", ["state", "priority", "run_after"], unique=False)
        batch_op.drop_constraint(op.f("fk_job_resubmitted_from_job"), type_="foreignkey")
        batch_op.drop_column("resubmitted_from")
        batch_op.drop_column("gpus")
        batch_op.drop_column("fair_tag")
