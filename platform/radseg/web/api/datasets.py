"""``/api/datasets``: datasets and their immutable versions."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Dataset
from radseg.roles import VIEWERS
from radseg.web.api import bp
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.shapes import dataset_to_dict
from radseg.web.validation import Page, query_args
from radseg.workflows.lookup import get_row


@bp.get("/datasets")
@roles_required(*VIEWERS)
def datasets() -> Any:
    page = query_args(Page)
    rows = db().scalars(
        select(Dataset)
        .options(joinedload(Dataset.versions))
        .order_by(Dataset.id)
        .limit(page.limit)
        .offset(page.offset)
    )
    return jsonify(datasets=[dataset_to_dict(d) for d in rows.unique()])


@bp.get("/datasets/<int:dataset_id>")
@roles_required(*VIEWERS)
def dataset(dataset_id: int) -> Any:
    return jsonify(dataset_to_dict(get_row(db(), Dataset, dataset_id, "dataset")))
