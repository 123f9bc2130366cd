"""series.slice_thickness — the nominal SliceThickness the slices state, for the viewer (issue 15)

The spacing between slice centres (``geometry``) places the slices; the thickness only describes
them (a 5 mm reconstruction every 2.5 mm overlaps). NULL for series ingested before: ingesting
such a series again fills it in.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("slice_thickness", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("slice_thickness")
