"""ingest production — schema for issue 3 (ingest)

Per-study ingest report (a JSON column on study) and frames of enhanced multi-frame instances
(instance.frame_number; SOPInstanceUID is unique per frame, not per row).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ingest_report", _JSON, nullable=True))
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("frame_number", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.drop_constraint("uq_instance_sop_instance_uid", type_="unique")
        batch_op.create_unique_constraint(
            "uq_instance_sop_instance_uid", ["sop_instance_uid", "frame_number"]
        )
    # the default only filled existing rows; the model supplies the value from now on
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.alter_column("frame_number", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_constraint("uq_instance_sop_instance_uid", type_="unique")
        batch_op.create_unique_constraint("uq_instance_sop_instance_uid", ["sop_instance_uid"])
        batch_op.drop_column("frame_number")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("ingest_report")
