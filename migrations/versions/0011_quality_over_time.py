"""quality over time — cached correction sizes and recorded control-chart alerts (issue 14 §4)

``correction_size`` keeps, per saved correction, its Dice against the prediction and the voxels
it changed, so the weekly quality tables never read volumes. ``quality_alert`` records each week
a model version's control chart left its limits, once (a unique key), so the
``radseg_quality_alert`` hook is called once per alert.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "correction_size",
        sa.Column("label_set_id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.Column("voxels_changed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_set_id"],
            ["label_set.id"],
            name=op.f("fk_correction_size_label_set_id_label_set"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prediction_id"],
            ["prediction.id"],
            name=op.f("fk_correction_size_prediction_id_prediction"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("label_set_id", name=op.f("pk_correction_size")),
    )
    with op.batch_alter_table("correction_size", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_correction_size_prediction_id"), ["prediction_id"])
    op.create_table(
        "quality_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("chart", sa.String(length=32), nullable=False),
        sa.Column("week", sa.String(length=10), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("center", sa.Float(), nullable=False),
        sa.Column("limit", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_quality_alert_model_version_id_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_alert")),
        sa.UniqueConstraint(
            "model_version_id", "chart", "week", name=op.f("uq_quality_alert_model_version_id")
        ),
    )
    with op.batch_alter_table("quality_alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quality_alert_model_version_id"), ["model_version_id"])


def downgrade() -> None:
    with op.batch_alter_table("quality_alert", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quality_alert_model_version_id"))
    op.drop_table("quality_alert")
    with op.batch_alter_table("correction_size", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_correction_size_prediction_id"))
    op.drop_table("correction_size")
