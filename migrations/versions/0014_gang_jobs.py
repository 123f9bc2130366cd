"""gang jobs — a job that spans several machines (issue 16 §3)

``job.machines``: worker slots on different hosts the job needs at once (1: an ordinary job);
``job.rendezvous``: the address and port its rank 0 published for the attempt running now;
``job_gang_member``: the workers that joined it, one per host, each with its rank and lease;
``ix_job_gang_queue``: the queued gang jobs in claim order, which idle workers look for.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("machines", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column(
                "rendezvous",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.alter_column("machines", server_default=None)
    gangs = sa.text("state = 'queued' AND machines > 1")
    op.create_index(
        "ix_job_gang_queue",
        "job",
        [sa.text("priority DESC"), "fair_tag", "id"],
        postgresql_where=gangs,
        sqlite_where=gangs,
    )
    op.create_table(
        "job_gang_member",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
            name=op.f("fk_job_gang_member_job_id_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "rank", name=op.f("pk_job_gang_member")),
        sa.UniqueConstraint("job_id", "host", name=op.f("uq_job_gang_member_job_id")),
    )


def downgrade() -> None:
    op.drop_table("job_gang_member")
    op.drop_index("ix_job_gang_queue", table_name="job")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("rendezvous")
        batch_op.drop_column("machines")
