"""The studies area: studies, their series and predictions, the slice viewer page, and the
upload of new studies (an ingest job reads them).

Opening a study or a series is a view of patient data and records an audit event.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from radseg.db.models import Dataset, LabelSet, ModelVersion, Prediction, Series, Study
from radseg.imaging import channels
from radseg.roles import OPERATORS, REVIEWERS, VIEWERS
from radseg.web import plane_cuts, render
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db, volumes
from radseg.web.limits import accepts_upload
from radseg.web.outcomes import form_refusals, queued
from radseg.web.paging import Pager
from radseg.web.schemas import StudiesPageQuery, ViewerQuery
from radseg.web.validation import query_args
from radseg.workflows import review
from radseg.workflows.lookup import get_row
from radseg.workflows.studies import (
    STUDY_SHOWS,
    STUDY_SORTS,
    modalities_present,
    record_view,
    study_rows,
)
from radseg.workflows.uploads import submit_upload

bp = Blueprint("studies", __name__)

#: the viewer's window/level presets, (label, level, width) in HU: the same windows that dataset
#: channel recipes use, so what a clinician sees matches what a model was trained on
WINDOW_PRESETS = tuple(
    (name.replace("_", " ").capitalize(), level, width)
    for name, (width, level) in channels.WINDOW_PRESETS.items()
)


def predictions_of(session: Session, series_ids: list[int]) -> dict[int, list[Prediction]]:
    if not series_ids:
        return {}
    rows = session.scalars(
        select(Prediction)
        .where(Prediction.series_id.in_(series_ids))
        .options(joinedload(Prediction.model_version).joinedload(ModelVersion.model))
        .order_by(Prediction.id.desc())
    )
    out: dict[int, list[Prediction]] = {i: [] for i in series_ids}
    for prediction in rows:
        out[prediction.series_id].append(prediction)
    return out


prediction_classes = render.prediction_classes


@bp.get("/")
@roles_required(*VIEWERS)
def index() -> Any:
    return redirect(url_for("studies.list_studies"))


@bp.get("/studies")
@roles_required(*VIEWERS)
def list_studies() -> Any:
    args = query_args(StudiesPageQuery)
    listed = study_rows(db(), args.filters(), args.window())
    return render_template(
        "studies.html",
        rows=listed.rows,
        pager=Pager.of(listed, args),
        args=args,
        modalities=modalities_present(db()),
        shows=STUDY_SHOWS,
        sorts=STUDY_SORTS,
    )


@bp.get("/studies/<int:study_id>")
@roles_required(*VIEWERS)
def study(study_id: int) -> Any:
    session = db()
    found = get_row(session, Study, study_id, "study")
    predictions = predictions_of(session, [s.id for s in found.series])
    record_view(current_platform(), current_actor(), "study.view", f"study:{found.id}")
    return render_template(
        "study.html",
        study=found,
        predictions=predictions,
        ohif_url=current_platform().settings.ohif_viewer_url(found.study_instance_uid),
    )


@bp.get("/series/<int:series_id>/view")
@roles_required(*VIEWERS)
def viewer(series_id: int) -> Any:
    session = db()
    series = get_row(session, Series, series_id, "series")
    predictions = predictions_of(session, [series.id])[series.id]
    chosen: Prediction | None = predictions[0] if predictions else None
    args = query_args(ViewerQuery)
    wanted = args.prediction
    if wanted is not None:
        chosen = next((p for p in predictions if p.id == wanted), None)
        if chosen is None and wanted != 0:  # ?prediction=0 shows the images alone
            abort(404, f"series {series_id} has no prediction {wanted}")
    legend: list[render.LegendEntry] = []
    if chosen is not None:
        try:
            mask = volumes().get(current_platform().resolve(chosen.mask_path))
            present = render.labels_present(mask)
        except OSError:
            present = []  # the overlay requests will answer 404 and say why
        legend = render.legend(prediction_classes(chosen), present)
    label_sets = sorted(series.label_sets, key=lambda ls: ls.version, reverse=True)
    labels: LabelSet | None = label_sets[0] if label_sets else None
    wanted_labels = args.labels
    if wanted_labels is not None:
        labels = next((ls for ls in label_sets if ls.id == wanted_labels), None)
        if labels is None and wanted_labels != 0:
            abort(404, f"series {series_id} has no label set {wanted_labels}")
    if labels is not None:
        known = {e.id for e in legend}
        legend += [e for e in render.legend(labels.classes) if e.id not in known]
        legend.sort(key=lambda e: e.id)
    reviews = review.reviews_of(session, chosen.id) if chosen else []
    record_view(
        current_platform(),
        current_actor(),
        "series.view",
        f"series:{series.id}",
        study=series.study_id,
        prediction=chosen.id if chosen else None,
    )
    size = series.geometry.get("size", [0, 0, 0])
    spacing = series.geometry.get("spacing", [1.0, 1.0, 1.0])
    planes = plane_cuts.viewer_planes_of(series)
    return render_template(
        "viewer.html",
        series=series,
        size=size,
        spacing=spacing,
        planes=planes,
        predictions=predictions,
        prediction=chosen,
        legend=legend,
        presets=WINDOW_PRESETS,
        label_sets=label_sets,
        labels=labels,
        reviews=reviews,
        can_review=current_actor().may(REVIEWERS),
        decisions=review.DECISIONS,
    )


# --- upload ---------------------------------------------------------------------------------


@bp.get("/upload")
@roles_required(*OPERATORS)
def upload_page() -> Any:
    return render_template(
        "upload.html",
        max_bytes=current_app.config.get("MAX_CONTENT_LENGTH"),
        datasets=db().scalars(select(Dataset.name).order_by(Dataset.name)).all(),
    )


@bp.post("/upload")
@accepts_upload
@roles_required(*OPERATORS)
@form_refusals("studies.upload_page")
def upload() -> Any:
    """Store the files (zips unpacked safely) and queue their ingest; the job's page follows."""
    files = [(f.filename or "", f.stream) for f in request.files.getlist("files") if f.filename]
    upload = submit_upload(
        current_platform(),
        current_actor(),
        files,
        dataset=request.form.get("dataset", "").strip() or None,
    )
    count = upload.files
    return queued(upload.job, f"Uploaded {count} file{'s' if count != 1 else ''}")
