"""``/api/models`` and ``/api/model-versions``: trained models and their versions (each with its
status, parent, what it learned from and its retrain comparison), the versions list as the
Models page shows it (search, status, sort, paging), a version's quality over time
(weekly table, control charts, alerts; the charts also as SVG); ``POST /api/models/<id>/retrain``
queues a retrain."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Model, ModelVersion
from radseg.model_registry import version_page
from radseg.quality_svg import chart_svg
from radseg.roles import OPERATORS, VIEWERS
from radseg.web.api import VIA, bp
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.job_views import job_view
from radseg.web.schemas import QualityChartQuery, RetrainRequest, VersionsQuery
from radseg.web.shapes import model_version_to_dict
from radseg.web.validation import Page, json_body, query_args
from radseg.workflows.lookup import get_row
from radseg.workflows.quality import version_quality
from radseg.workflows.retrain import request_retrain


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


@bp.get("/model-versions")
@roles_required(*VIEWERS)
def model_versions() -> Any:
    args = query_args(VersionsQuery)
    listed = version_page(db(), args.filters(), args.window())
    return jsonify(model_versions=listed.rows, page=listed.meta())


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


@bp.post("/models/<int:model_id>/retrain")
@roles_required(*OPERATORS)
def retrain(model_id: int) -> Any:
    """Queue a retrain of the model (radseg.workflows.retrain); 409 while one is queued or
    running."""
    body = json_body(RetrainRequest)
    job = request_retrain(
        current_platform(), current_actor(), model=model_id, iterations=body.iterations, via=VIA
    )
    return jsonify(job_view(job, current_actor())), 201
