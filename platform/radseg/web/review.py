"""Clinician review pages: the queue, decisions from the viewer's form (or a page script's JSON),
and the viewer's brush corrections.

Thin: each view parses its request and calls a use case — :func:`radseg.workflows.review.
record_review` and :func:`radseg.workflows.corrections.save_correction` check, write and audit.
Their typed errors become HTTP errors through :mod:`radseg.web.errors`, except where the viewer's
form is answered the page's way (a flashed message and back to the slice).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from radseg.db.models import Model, Prediction, ReviewStatus
from radseg.errors import InputError
from radseg.roles import REVIEWERS, VIEWERS
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.paging import Pager
from radseg.web.schemas import CorrectionRequest, ReviewPageQuery, ReviewRequest
from radseg.web.shapes import label_set_to_dict, review_to_dict
from radseg.web.validation import form_fields, json_body, query_args
from radseg.workflows.corrections import save_correction
from radseg.workflows.lookup import get_row
from radseg.workflows.review import (
    QUEUE_FILTERS,
    QUEUE_SORTS,
    record_review,
    review_queue_page,
)

bp = Blueprint("review", __name__)


def _viewer_url(prediction: Prediction) -> str:
    return url_for("studies.viewer", series_id=prediction.series_id, prediction=prediction.id)


@bp.get("/review")
@roles_required(*VIEWERS)
def queue() -> Any:
    args = query_args(ReviewPageQuery)
    filters = args.filters()
    listed = review_queue_page(db(), filters, args.window())
    models = db().scalars(select(Model.name).order_by(Model.name)).all()
    return render_template(
        "review_queue.html",
        rows=listed.rows,
        pager=Pager.of(listed, args),
        state=filters.state,
        model=filters.model,
        study=filters.study,
        models=models,
        filters=QUEUE_FILTERS,
        sort=filters.sort,
        sorts=QUEUE_SORTS,
    )


@bp.post("/predictions/<int:prediction_id>/reviews")
@roles_required(*REVIEWERS)
def decide(prediction_id: int) -> Any:
    """The viewer's form (back to the slice, the outcome flashed) or JSON (201 with the review)."""
    prediction = get_row(db(), Prediction, prediction_id, "prediction")
    if request.is_json:
        fields = json_body(ReviewRequest).decision()
        review = record_review(current_platform(), current_actor(), prediction_id, **fields)
        return jsonify(review_to_dict(review)), 201
    try:
        fields = form_fields(ReviewRequest).decision()
        review = record_review(current_platform(), current_actor(), prediction_id, **fields)
    except InputError as exc:
        flash(str(exc), "error")
        return redirect(_viewer_url(prediction), 303)
    flash(f"Recorded: {ReviewStatus(review.status).value.replace('_', ' ')}.", "info")
    # back to the slice the comment is pinned to
    anchor = f"#z={review.slice_index}" if review.slice_index is not None else ""
    return redirect(_viewer_url(prediction) + anchor, 303)


@bp.post("/predictions/<int:prediction_id>/corrections")
@roles_required(*REVIEWERS)
def correct(prediction_id: int) -> Any:
    """JSON ``{"strokes": [...], "base_label_set": id | null}`` → 201 with the new label set."""
    get_row(db(), Prediction, prediction_id, "prediction")  # a 404 before the body's 400
    data = json_body(CorrectionRequest)
    label_set = save_correction(
        current_platform(),
        current_actor(),
        prediction_id,
        strokes=[s.model_dump() for s in data.strokes],
        base_label_set=data.base_label_set,
    )
    return jsonify(label_set_to_dict(label_set)), 201
