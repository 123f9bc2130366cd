"""web review api — schema for issue 6 (web UI, review, API)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failure")),
    )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failure_username"), ["username"])
        batch_op.create_index(batch_op.f("ix_login_failure_remote"), ["remote"])
        batch_op.create_index(batch_op.f("ix_login_failure_created_at"), ["created_at"])
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("prefix", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.alter_column("prefix", server_default=None)
    with op.batch_alter_table("label_set", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prediction_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_label_set_prediction_id_prediction"),
            "prediction",
            ["prediction_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.add_column(sa.Column("class_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_review_prediction_id"), ["prediction_id"])


def downgrade() -> None:
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_prediction_id"))
        batch_op.drop_column("class_id")
    with op.batch_alter_table("label_set", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_label_set_prediction_id_prediction"), type_="foreignkey"
        )
        batch_op.drop_column("prediction_id")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("prefix")
    op.drop_table("login_failure")
