"""``/api/predictions``: predictions, the review queue, reviews and exports.

Thin: reviews go through :func:`radseg.workflows.review.record_review`, exports through
:func:`radseg.workflows.export_jobs.request_export`; their typed errors become statuses in
:mod:`radseg.web.errors`.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import select

from radseg.db.models import Prediction
from radseg.roles import REVIEWERS, VIEWERS
from radseg.web.api import VIA, bp
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db, volumes
from radseg.web.job_views import job_view
from radseg.web.schemas import (
    ExportRequest,
    MeasurementRequest,
    PredictionsQuery,
    ReviewQueueQuery,
    ReviewRequest,
)
from radseg.web.shapes import (
    export_to_dict,
    measurement_to_dict,
    prediction_to_dict,
    review_to_dict,
)
from radseg.web.validation import json_body, query_args
from radseg.workflows import measurements as measuring
from radseg.workflows import review
from radseg.workflows.export_jobs import exports_of, request_export
from radseg.workflows.lookup import get_row


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
        {**prediction_to_dict(found), "reviews": [review_to_dict(r) for r in found.reviews]}
    )


# --- reviews --------------------------------------------------------------------------------


@bp.get("/review-queue")
@roles_required(*VIEWERS)
def review_queue() -> Any:
    args = query_args(ReviewQueueQuery)
    listed = review.review_queue_page(db(), args.filters(), args.window())
    return jsonify(predictions=[prediction_to_dict(p) for p in listed.rows], page=listed.meta())


@bp.get("/predictions/<int:prediction_id>/reviews")
@roles_required(*VIEWERS)
def reviews(prediction_id: int) -> Any:
    get_row(db(), Prediction, prediction_id, "prediction")
    return jsonify(reviews=[review_to_dict(r) for r in review.reviews_of(db(), prediction_id)])


@bp.post("/predictions/<int:prediction_id>/reviews")
@roles_required(*REVIEWERS)
def add_review(prediction_id: int) -> Any:
    get_row(db(), Prediction, prediction_id, "prediction")  # a 404 before the body is read
    fields = json_body(ReviewRequest).decision()
    row = review.record_review(current_platform(), current_actor(), prediction_id, **fields)
    return jsonify(review_to_dict(row)), 201


# --- measurements (rulers and regions kept with the review) ----------------------------------


@bp.get("/predictions/<int:prediction_id>/measurements")
@roles_required(*VIEWERS)
def measurements(prediction_id: int) -> Any:
    get_row(db(), Prediction, prediction_id, "prediction")
    rows = measuring.measurements_of(db(), prediction_id)
    return jsonify(measurements=[measurement_to_dict(m) for m in rows])


@bp.post("/predictions/<int:prediction_id>/measurements")
@roles_required(*REVIEWERS)
def add_measurement(prediction_id: int) -> Any:
    """Measure on a slice: the length, or the area and HU statistics from the HU volume."""
    get_row(db(), Prediction, prediction_id, "prediction")  # a 404 before the body is read
    data = json_body(MeasurementRequest)
    row = measuring.record_measurement(
        current_platform(),
        current_actor(),
        prediction_id,
        kind=data.kind,
        slice_index=data.slice_index,
        points=data.points,
        label=data.label or "",
        via=VIA,
        read_hu=volumes().get,  # the viewer's volume cache: the series is read once
    )
    return jsonify(measurement_to_dict(row)), 201


@bp.delete("/measurements/<int:measurement_id>")
@roles_required(*REVIEWERS)
def delete_measurement(measurement_id: int) -> Any:
    measuring.delete_measurement(current_platform(), current_actor(), measurement_id, via=VIA)
    return jsonify(deleted=measurement_id)


# --- exports --------------------------------------------------------------------------------


@bp.get("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def exports(prediction_id: int) -> Any:
    get_row(db(), Prediction, prediction_id, "prediction")
    rows = exports_of(db(), prediction_id)
    return jsonify(exports=[export_to_dict(e) for e in rows])


@bp.post("/predictions/<int:prediction_id>/exports")
@roles_required(*VIEWERS)
def create_export(prediction_id: int) -> Any:
    """Queue an export job; the request is checked against the exporters and PACS first."""
    get_row(db(), Prediction, prediction_id, "prediction")  # a 404 before the body is read
    data = json_body(ExportRequest)
    job = request_export(
        current_platform(),
        current_actor(),
        prediction_id,
        fmt=data.format,
        to_pacs=data.to_pacs,
        options=data.options,
        with_images=data.with_images,
        corrected=data.corrected,
        via="api",
    )
    return jsonify(job_view(job, current_actor())), 202
