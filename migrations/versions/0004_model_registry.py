"""model registry — schema for issue 5 (models, metrics, registry)

Model versions keep their validation history, config hash and code version; predictions their
provenance; evaluations (a model version measured on a dataset version's split, with a report)
get a table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("history", _JSON, nullable=True))
        batch_op.add_column(
            sa.Column("config_hash", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("code_version", sa.String(length=64), nullable=False, server_default="")
        )
    # the defaults only filled existing rows; the model supplies the values from now on
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.alter_column("config_hash", server_default=None)
        batch_op.alter_column("code_version", server_default=None)
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provenance", _JSON, nullable=True))
    op.create_table(
        "evaluation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("dataset_version_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("report_path", sa.String(length=512), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_version.id"],
            name=op.f("fk_evaluation_dataset_version_id_dataset_version"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_evaluation_model_version_id_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation")),
    )
    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_evaluation_model_version_id"), ["model_version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluation_model_version_id"))
    op.drop_table("evaluation")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_column("provenance")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_column("code_version")
        batch_op.drop_column("config_hash")
        batch_op.drop_column("history")
