"""list pages that scale — the study date, and indexes for the lists' sorts and filters (issue 15)

``study.study_date`` is the StudyDate of the de-identified study (moved by the keyed per-patient
date shift; empty when dates are removed or the source has none). The indexes serve the list
pages' sort keys and filters, so a page of ten thousand studies or fifty thousand jobs is read
from an index rather than sorted in full: studies by date and description, series by modality,
predictions by series (a study's predictions) and by age (the review queue's
oldest/newest order), jobs by kind and owner (kind and
owner never change, so finishing a job writes none of these), audit events by actor and target.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) of each new index, named ix_<table>_<column> as the models' naming convention
INDEXES = (
    ("study", "study_date"),
    ("study", "description"),
    ("series", "modality"),
    ("prediction", "series_id"),
    ("prediction", "created_at"),
    ("job", "kind"),
    ("job", "created_by"),
    ("audit_event", "actor"),
    ("audit_event", "target"),
)


def upgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_date", sa.Date(), nullable=True))
    for table, column in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("study_date")
