"""review priority — where the model doubts

Predictions keep a per-voxel uncertainty map (``uncertainty_path``), their review ``priority``
with its main reason (``priority_reason``) and the per-class quality signals behind it
(``quality``); model versions keep their training split's statistics (``reference_stats``) that
the signals are compared with. Existing predictions stay unscored (``priority`` NULL) and sort
after the scored ones.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("uncertainty_path", sa.String(length=512), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("priority", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("priority_reason", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("quality", _JSON, nullable=True))
        batch_op.create_index(batch_op.f("ix_prediction_priority"), ["priority"])
    # the defaults only filled existing rows; the model supplies the values from now on
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.alter_column("uncertainty_path", server_default=None)
        batch_op.alter_column("priority_reason", server_default=None)
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference_stats", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_column("reference_stats")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_priority"))
        batch_op.drop_column("quality")
        batch_op.drop_column("priority_reason")
        batch_op.drop_column("priority")
        batch_op.drop_column("uncertainty_path")
