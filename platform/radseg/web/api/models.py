"""``/api/models`` and ``/api/model-versions``: trained models and their versions."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Model, ModelVersion
from radseg.roles import VIEWERS
from radseg.web.api import bp
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.shapes import model_version_to_dict
from radseg.web.validation import Page, query_args
from radseg.workflows.lookup import get_row


@bp.get("/models")
@roles_required(*VIEWERS)
def models() -> Any:
    page = query_args(Page)
    rows = db().scalars(
        select(Model)
        .options(joinedload(Model.versions))
        .order_by(Model.id)
        .limit(page.limit)
        .offset(page.offset)
    )
    return jsonify(
        models=[
            {
                "id": m.id,
                "name": m.name,
                "backend": m.backend,
                "versions": [model_version_to_dict(v) for v in m.versions],
            }
            for m in rows.unique()
        ]
    )


@bp.get("/model-versions/<int:version_id>")
@roles_required(*VIEWERS)
def model_version(version_id: int) -> Any:
    return jsonify(model_version_to_dict(get_row(db(), ModelVersion, version_id, "model version")))
