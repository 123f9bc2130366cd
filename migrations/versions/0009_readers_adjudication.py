"""readers and adjudication — a worklist of cases read by several readers (issue 14, part 2)

``reading_case`` is a prediction put on the worklist (adjudicator, due date, agreement, the
adjudicator's draft and the signed-off label set); ``reading`` one reader's blinded copy of it
(mask, decision, time). ``label_set.provenance`` records how a reviewed label set was made
(readers, adjudicator, method, prediction).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("label_set", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provenance", _JSON, nullable=True))
    op.create_table(
        "reading_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("adjudicator_id", sa.Integer(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "open", "signed_off", "cancelled", name="reading_case_state", native_enum=False
            ),
            nullable=False,
        ),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("agreement", _JSON, nullable=True),
        sa.Column("draft_path", sa.String(length=512), nullable=False),
        sa.Column("draft_source", sa.String(length=32), nullable=False),
        sa.Column("label_set_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_off_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["adjudicator_id"], ["user.id"], name=op.f("fk_reading_case_adjudicator_id_user")
        ),
        sa.ForeignKeyConstraint(
            ["label_set_id"],
            ["label_set.id"],
            name=op.f("fk_reading_case_label_set_id_label_set"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["prediction_id"],
            ["prediction.id"],
            name=op.f("fk_reading_case_prediction_id_prediction"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_case")),
    )
    with op.batch_alter_table("reading_case", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reading_case_prediction_id"), ["prediction_id"])
    op.create_table(
        "reading",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=False),
        sa.Column("mask_path", sa.String(length=512), nullable=False),
        sa.Column(
            "decision",
            sa.Enum(
                "pending",
                "accepted",
                "rejected",
                "needs_edit",
                name="review_status",
                native_enum=False,
            ),
            nullable=True,
        ),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("strokes", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["reading_case.id"],
            name=op.f("fk_reading_case_id_reading_case"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["reader_id"], ["user.id"], name=op.f("fk_reading_reader_id_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading")),
        sa.UniqueConstraint("case_id", "reader_id", name=op.f("uq_reading_case_id")),
    )
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reading_case_id"), ["case_id"])
        batch_op.create_index(batch_op.f("ix_reading_reader_id"), ["reader_id"])


def downgrade() -> None:
    with op.batch_alter_table("reading", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reading_reader_id"))
        batch_op.drop_index(batch_op.f("ix_reading_case_id"))
    op.drop_table("reading")
    with op.batch_alter_table("reading_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reading_case_prediction_id"))
    op.drop_table("reading_case")
    with op.batch_alter_table("label_set", schema=None) as batch_op:
        batch_op.drop_column("provenance")
