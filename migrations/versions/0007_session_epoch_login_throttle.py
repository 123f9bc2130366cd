"""session epoch and login throttle — sessions end for good; failed logins keep no typed names

``user.session_epoch`` ends a user's browser sessions when it moves on (deactivation, a new
password). ``login_failure`` is rebuilt keyed by a digest of the typed name instead of the name:
its old rows held whatever people typed (passwords among them) and are dropped.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _login_failure(key_column: sa.Column) -> None:
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        key_column,
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failure")),
    )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_login_failure_{key_column.name}"), [key_column.name])
        batch_op.create_index(batch_op.f("ix_login_failure_remote"), ["remote"])
        batch_op.create_index(batch_op.f("ix_login_failure_created_at"), ["created_at"])


def upgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.alter_column("session_epoch", server_default=None)
    op.drop_table("login_failure")
    _login_failure(sa.Column("account_key", sa.String(length=64), nullable=False))


def downgrade() -> None:
    op.drop_table("login_failure")
    _login_failure(sa.Column("username", sa.String(length=80), nullable=False))
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
