"""``/api/predictions``: predictions, the review queue, reviews and exports.

(Moved here as it was; the review and export use cases replace the writes below.)
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import select

from radseg import audit
from radseg.db.models import Prediction
from radseg.errors import InputError
from radseg.jobs import store
from radseg.roles import REVIEWERS, VIEWERS
from radseg.web import predictions as prediction_pages
from radseg.web import review
from radseg.web.actors import current_actor
from radseg.web.api import bp
from radseg.web.auth import roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.jobs import iso, job_view
from radseg.web.schemas import ExportRequest, PredictionsQuery, ReviewQueueQuery, ReviewRequest
from radseg.web.validation import bad_request, json_body, query_args
from radseg.workflows.lookup import get_row


def prediction_to_dict(prediction: Prediction) -> dict[str, Any]:
    return {
        "id": prediction.id,
        "series_id": prediction.series_id,
        "model_version_id": prediction.model_version_id,
        "metrics": prediction.metrics,
        "created_at": iso(prediction.created_at),
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
    found = get_row(db(), Prediction, prediction_id, "prediction")
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
    get_row(db(), Prediction, prediction_id, "prediction")
    return jsonify(
        reviews=[review.review_to_dict(r) for r in review.reviews_of(db(), prediction_id)]
    )


@bp.post("/predictions/<int:prediction_id>/reviews")
@roles_required(*REVIEWERS)
def add_review(prediction_id: int) -> Any:
    found = get_row(db(), Prediction, prediction_id, "prediction")
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
    get_row(db(), Prediction, prediction_id, "prediction")
    rows = prediction_pages.exports_of(db(), prediction_id)
    return jsonify(exports=[prediction_pages.export_to_dict(e) for e in rows])


@bp.post("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def create_export(prediction_id: int) -> Any:
    """Queue an export job; the request is checked against the exporters and PACS first."""
    found = get_row(db(), Prediction, prediction_id, "prediction")
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
    return jsonify(job_view(job, current_actor())), 202
