"""model version retrain lineage — status (candidate / promoted), parent, what it learned from

``model_version.status`` tells a candidate from a promoted version (the newest promoted one is
the model's current version); existing versions were all in use, so they become ``promoted``.
``parent_id`` is the version a retrained one was fine-tuned from; ``learned_from`` the dataset
version and the reviewed label sets it learned from; ``comparison`` the retrain's comparison
with its parent and the promotion decision (radseg.workflows.retrain).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "status",
                sa.Enum("candidate", "promoted", name="model_version_status", native_enum=False),
                nullable=False,
                server_default="promoted",
            )
        )
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("learned_from", _JSON, nullable=True))
        batch_op.add_column(sa.Column("comparison", _JSON, nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_model_version_parent_id_model_version"),
            "model_version",
            ["parent_id"],
            ["id"],
            ondelete="SET NULL",
        )
    # the default only filled existing rows; the model supplies the value from now on
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.alter_column("status", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_model_version_parent_id_model_version"), type_="foreignkey"
        )
        batch_op.drop_column("comparison")
        batch_op.drop_column("learned_from")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("status")
