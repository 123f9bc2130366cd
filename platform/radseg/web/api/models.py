"""``/api/models`` and ``/api/model-versions``: trained models and their versions, and a
version's quality over time (weekly table, control charts, alerts; the charts also as SVG)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Model, ModelVersion
from radseg.quality_svg import chart_svg
from radseg.roles import VIEWERS
from radseg.web.api import bp
from radseg.web.auth import roles_required
from radseg.web.context import current_platform, db
from radseg.web.schemas import QualityChartQuery
from radseg.web.shapes import model_version_to_dict
from radseg.web.validation import Page, query_args
from radseg.workflows.lookup import get_row
from radseg.workflows.quality import version_quality


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


@bp.get("/model-versions/<int:version_id>/quality")
@roles_required(*VIEWERS)
def model_version_quality(version_id: int) -> Any:
    version = get_row(db(), ModelVersion, version_id, "model version")
    return jsonify(version_quality(db(), current_platform().settings, version))


@bp.get("/model-versions/<int:version_id>/quality.svg")
@roles_required(*VIEWERS)
def model_version_quality_svg(version_id: int) -> Any:
    args = query_args(QualityChartQuery)
    version = get_row(db(), ModelVersion, version_id, "model version")
    chart = version_quality(db(), current_platform().settings, version)["charts"][args.chart]
    return Response(chart_svg(chart), mimetype="image/svg+xml")
