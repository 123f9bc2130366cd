"""The JSON REST API: studies, series, datasets, jobs, models, predictions, reviews, exports.

Scripts and the CLI authenticate with ``Authorization: Bearer <token>`` (create a token on the
Account page); the pages' own scripts use the session cookie and send ``X-CSRFToken`` on writes.
Every answer, errors included, is JSON. ``GET /api/openapi.json`` describes all of it
(:mod:`radseg.web.openapi`); a test checks that every route here is in that document.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg import audit
from radseg.db.models import (
    Dataset,
    JobState,
    Model,
    ModelVersion,
    Prediction,
    Series,
    Study,
)
from radseg.errors import InputError, JobError
from radseg.jobs import store
from radseg.web import openapi, review
from radseg.web import predictions as prediction_pages
from radseg.web.auth import VIEWERS, public, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.jobs import (
    OPERATORS,
    get_job,
    get_retryable_job,
    job_curves,
    job_view,
    read_log,
    recent_jobs,
)
from radseg.web.schemas import (
    BuildDatasetJob,
    EvaluateJob,
    ExportRequest,
    JobRequest,
    JobsQuery,
    LogQuery,
    PredictionsQuery,
    PredictJob,
    ReviewQueueQuery,
    ReviewRequest,
    TrainJob,
)
from radseg.web.studies import study_rows
from radseg.web.validation import Page, bad_request, json_body, query_args
from radseg.workflows.uploads import discard_upload

bp = Blueprint("api", __name__, url_prefix="/api")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _get(model: type, ident: int, what: str) -> Any:
    found = db().get(model, ident)
    if found is None:
        abort(404, f"there is no {what} {ident}")
    return found


# --- the document ------------------------------------------------------------------------------


@bp.get("/openapi.json")
@public
def openapi_document() -> Any:
    return jsonify(openapi.document(request.host_url.rstrip("/")))


# --- studies and series -----------------------------------------------------------------------


def series_to_dict(series: Series) -> dict[str, Any]:
    return {
        "id": series.id,
        "study_id": series.study_id,
        "series_instance_uid": series.series_instance_uid,
        "modality": series.modality,
        "description": series.description,
        "geometry": series.geometry,
        "label_sets": [review.label_set_to_dict(ls) for ls in series.label_sets],
    }


@bp.get("/studies")
@roles_required(*VIEWERS)
def studies() -> Any:
    page = query_args(Page)
    rows = study_rows(db(), limit=page.limit, offset=page.offset)
    return jsonify(studies=[row.to_dict() for row in rows])


@bp.get("/studies/<int:study_id>")
@roles_required(*VIEWERS)
def study(study_id: int) -> Any:
    found: Study = _get(Study, study_id, "study")
    audit.record(db(), web_user().username, "study.view", f"study:{found.id}", via="api")
    db().commit()
    return jsonify(
        id=found.id,
        study_instance_uid=found.study_instance_uid,
        patient_key=found.patient_key,
        description=found.description,
        created_at=_iso(found.created_at),
        series=[series_to_dict(s) for s in found.series],
    )


@bp.get("/series/<int:series_id>")
@roles_required(*VIEWERS)
def series(series_id: int) -> Any:
    found: Series = _get(Series, series_id, "series")
    audit.record(db(), web_user().username, "series.view", f"series:{found.id}", via="api")
    db().commit()
    return jsonify(series_to_dict(found))


# --- datasets -------------------------------------------------------------------------------


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "created_at": _iso(dataset.created_at),
        "versions": [
            {
                "id": v.id,
                "version": v.version,
                "content_hash": v.content_hash,
                "classes": v.classes,
                "recipe": v.recipe,
                "split": v.split,
                "created_at": _iso(v.created_at),
            }
            for v in dataset.versions
        ],
    }


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
    return jsonify(dataset_to_dict(_get(Dataset, dataset_id, "dataset")))


# --- jobs -----------------------------------------------------------------------------------


@bp.get("/jobs")
@roles_required(*VIEWERS)
def jobs() -> Any:
    query = query_args(JobsQuery)
    state = JobState(query.state) if query.state else None
    viewer = web_user()
    rows = recent_jobs(db(), viewer, state=state, limit=query.limit)
    return jsonify(jobs=[job_view(job, viewer) for job in rows])


@bp.post("/jobs")
@roles_required(*OPERATORS)
def submit_job() -> Any:
    """Start a build-dataset, train, predict or evaluate job (ingest: upload on the web page)."""
    wanted = json_body(JobRequest).root
    session = db()
    platform = current_platform()
    kind = wanted.kind
    payload: dict[str, Any]
    if isinstance(wanted, BuildDatasetJob | TrainJob):
        name = wanted.dataset
        found = session.scalars(select(Dataset).where(Dataset.name == name)).first()
        if found is None:
            abort(404, f"there is no dataset {name!r}")
        payload = {"dataset": name}
    if isinstance(wanted, TrainJob):
        backend = wanted.backend
        if backend not in platform.plugins.models:
            enabled = ", ".join(platform.plugins.models) or "none"
            abort(400, f"unknown backend {backend!r}; enabled backends: {enabled}")
        config: dict[str, Any] = {}
        if wanted.architecture:
            architectures = platform.plugins.models.get(backend).architectures
            if wanted.architecture not in architectures:
                abort(400, f"architecture must be one of: {', '.join(architectures)}")
            config["architecture"] = wanted.architecture
        if wanted.iterations is not None:
            config["iterations"] = wanted.iterations
        payload = {"dataset": payload["dataset"], "backend": backend, "config": config}
    if isinstance(wanted, PredictJob):
        _get(ModelVersion, wanted.model_version_id, "model version")
        target: Series = _get(Series, wanted.series_id, "series")
        payload = {
            "model_version_id": wanted.model_version_id,
            "series_instance_uid": target.series_instance_uid,
        }
    if isinstance(wanted, EvaluateJob):
        _get(ModelVersion, wanted.model_version_id, "model version")
        payload = {"model_version_id": wanted.model_version_id, "split": wanted.split}
    user = web_user().username
    job = store.submit(
        session,
        kind,
        {**payload, "created_by": user},
        max_attempts=platform.settings.max_attempts,
        created_by=user,
    )
    audit.record(session, user, f"job.submit.{kind}", f"job:{job.id}", via="api")
    session.commit()
    return jsonify(job_view(job, web_user())), 201


@bp.get("/jobs/<int:job_id>")
@roles_required(*VIEWERS)
def job(job_id: int) -> Any:
    return jsonify(job_view(get_job(job_id), web_user()))


@bp.get("/jobs/<int:job_id>/log")
@roles_required(*OPERATORS)
def job_log(job_id: int) -> Any:
    text, next_offset = read_log(get_job(job_id), query_args(LogQuery).offset)
    return jsonify(text=text, next_offset=next_offset)


@bp.get("/jobs/<int:job_id>/curves")
@roles_required(*VIEWERS)
def job_curves_json(job_id: int) -> Any:
    return jsonify(curves=job_curves(get_job(job_id)))


@bp.post("/jobs/<int:job_id>/cancel")
@roles_required(*OPERATORS)
def cancel_job(job_id: int) -> Any:
    session = db()
    try:
        found = store.cancel(session, job_id, web_user().username)
    except JobError as exc:
        abort(404, str(exc))
    audit.record(session, web_user().username, "job.cancel", f"job:{job_id}", via="api")
    session.commit()
    discard_upload(current_platform(), found)  # a queued ingest ended here: its upload goes now
    return jsonify(job_view(found, web_user()))


@bp.post("/jobs/<int:job_id>/retry")
@roles_required(*OPERATORS)
def retry_job(job_id: int) -> Any:
    session = db()
    get_retryable_job(job_id)
    try:
        new = store.resubmit(session, job_id, web_user().username)
    except JobError as exc:
        abort(409, str(exc))
    audit.record(session, web_user().username, "job.retry", f"job:{new.id}", retry_of=job_id)
    session.commit()
    return jsonify(job_view(new, web_user())), 201


# --- models and predictions -----------------------------------------------------------------


def model_version_to_dict(version: ModelVersion) -> dict[str, Any]:
    return {
        "id": version.id,
        "model": version.model.name,
        "backend": version.model.backend,
        "dataset_version_id": version.dataset_version_id,
        "architecture": (version.config or {}).get("architecture"),
        "classes": (version.config or {}).get("classes", []),
        "metrics": version.metrics,
        "created_by": version.created_by,
        "created_at": _iso(version.created_at),
    }


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
    return jsonify(model_version_to_dict(_get(ModelVersion, version_id, "model version")))


def prediction_to_dict(prediction: Prediction) -> dict[str, Any]:
    return {
        "id": prediction.id,
        "series_id": prediction.series_id,
        "model_version_id": prediction.model_version_id,
        "metrics": prediction.metrics,
        "created_at": _iso(prediction.created_at),
    }


@bp.get("/predictions")
@roles_required(*VIEWERS)
def predictions() -> Any:
    args = query_args(PredictionsQuery)
    query = select(Prediction).order_by(Prediction.id).limit(args.limit).offset(args.offset)
    if args.series_id is not None:
        query = query.where(Prediction.series_id == args.series_id)
    return jsonify(predictions=[prediction_to_dict(p) for p in db().scalars(query)])


@bp.get("/predictions/<int:prediction_id>")
@roles_required(*VIEWERS)
def prediction(prediction_id: int) -> Any:
    found: Prediction = _get(Prediction, prediction_id, "prediction")
    return jsonify(
        {**prediction_to_dict(found), "reviews": [review.review_to_dict(r) for r in found.reviews]}
    )


# --- reviews --------------------------------------------------------------------------------


@bp.get("/review-queue")
@roles_required(*VIEWERS)
def review_queue() -> Any:
    args = query_args(ReviewQueueQuery)
    rows = review.review_queue(
        db(),
        state=args.state,
        model=(args.model or "").strip(),
        study=(args.study or "").strip(),
        limit=args.limit,
        offset=args.offset,
    )
    return jsonify(predictions=[prediction_to_dict(p) for p in rows])


@bp.get("/predictions/<int:prediction_id>/reviews")
@roles_required(*VIEWERS)
def reviews(prediction_id: int) -> Any:
    _get(Prediction, prediction_id, "prediction")
    return jsonify(
        reviews=[review.review_to_dict(r) for r in review.reviews_of(db(), prediction_id)]
    )


@bp.post("/predictions/<int:prediction_id>/reviews")
@roles_required(*review.REVIEWERS)
def add_review(prediction_id: int) -> Any:
    found: Prediction = _get(Prediction, prediction_id, "prediction")
    try:
        decision = review.parse_decision(json_body(ReviewRequest), found)
    except InputError as exc:
        bad_request(exc)
    row = review.record_decision(db(), found, decision, web_user())
    db().commit()
    return jsonify(review.review_to_dict(row)), 201


# --- exports --------------------------------------------------------------------------------


@bp.get("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def exports(prediction_id: int) -> Any:
    _get(Prediction, prediction_id, "prediction")
    rows = prediction_pages.exports_of(db(), prediction_id)
    return jsonify(exports=[prediction_pages.export_to_dict(e) for e in rows])


@bp.post("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def create_export(prediction_id: int) -> Any:
    """Queue an export job; the request is checked against the exporters and PACS first."""
    found: Prediction = _get(Prediction, prediction_id, "prediction")
    data = json_body(ExportRequest)
    try:
        payload = prediction_pages.export_payload(
            current_platform(),
            found.id,
            fmt=data.format,
            to_pacs=data.to_pacs,
            options=data.options,
            with_images=data.with_images,
            corrected=data.corrected,
        )
    except InputError as exc:
        bad_request(exc)
    session = db()
    user = web_user().username
    job = store.submit(
        session,
        "export",
        {**payload, "created_by": user},
        max_attempts=current_platform().settings.max_attempts,
        created_by=user,
    )
    audit.record(
        session, user, "job.submit.export", f"prediction:{found.id}", job=job.id, via="api"
    )
    session.commit()
    return jsonify(job_view(job, web_user())), 202
