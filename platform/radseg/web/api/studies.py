"""``/api/studies`` and ``/api/series``: studies and their series; opening one is audited."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from radseg.db.models import Series, Study
from radseg.roles import VIEWERS
from radseg.web.api import VIA, bp
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.schemas import StudiesQuery
from radseg.web.shapes import iso, series_to_dict
from radseg.web.validation import query_args
from radseg.workflows.lookup import get_row
from radseg.workflows.studies import record_view, study_rows


@bp.get("/studies")
@roles_required(*VIEWERS)
def studies() -> Any:
    args = query_args(StudiesQuery)
    listed = study_rows(db(), args.filters(), args.window())
    return jsonify(studies=[row.to_dict() for row in listed.rows], page=listed.meta())


@bp.get("/studies/<int:study_id>")
@roles_required(*VIEWERS)
def study(study_id: int) -> Any:
    found = get_row(db(), Study, study_id, "study")
    record_view(current_platform(), current_actor(), "study.view", f"study:{found.id}", via=VIA)
    return jsonify(
        id=found.id,
        study_instance_uid=found.study_instance_uid,
        patient_key=found.patient_key,
        description=found.description,
        created_at=iso(found.created_at),
        series=[series_to_dict(s) for s in found.series],
    )


@bp.get("/series/<int:series_id>")
@roles_required(*VIEWERS)
def series(series_id: int) -> Any:
    found = get_row(db(), Series, series_id, "series")
    record_view(current_platform(), current_actor(), "series.view", f"series:{found.id}", via=VIA)
    return jsonify(series_to_dict(found))
