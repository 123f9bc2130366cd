"""Clinician review: the queue of predictions awaiting a decision, decisions with pinned
comments, and brush corrections saved as new label versions.

A decision is a :class:`~radseg.db.models.Review` row (never edited: a changed mind is a new
row, so the history stays); the latest study-level decision (``class_id`` ``None``) takes a
prediction out of the queue. Every decision and every correction is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, joinedload

from radseg import audit
from radseg.db.models import (
    LabelSet,
    Model,
    ModelVersion,
    Prediction,
    Review,
    ReviewStatus,
    Role,
    Series,
    Study,
)
from radseg.errors import InputError
from radseg.web import corrections, render
from radseg.web.auth import VIEWERS, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.schemas import CorrectionRequest, ReviewPageQuery, ReviewRequest
from radseg.web.validation import form_fields, json_body, query_args

bp = Blueprint("review", __name__)

#: who may decide and correct: clinicians, and admins standing in for them
REVIEWERS = (Role.CLINICIAN, Role.ADMIN)
DECISIONS = (ReviewStatus.ACCEPTED, ReviewStatus.REJECTED, ReviewStatus.NEEDS_EDIT)
QUEUE_FILTERS = ("awaiting", *(s.value for s in DECISIONS), "all")
PAGE_SIZE = 100


def _decided(status: ReviewStatus | None = None) -> Any:
    """A study-level decision exists for the prediction (with ``status``, if given)."""
    condition = [Review.prediction_id == Prediction.id, Review.class_id.is_(None)]
    condition.append(Review.status.in_(DECISIONS) if status is None else Review.status == status)
    return exists().where(and_(*condition))


def review_queue(
    session: Session,
    *,
    state: str = "awaiting",
    model: str = "",
    study: str = "",
    limit: int = PAGE_SIZE,
    offset: int = 0,
) -> list[Prediction]:
    """Predictions, oldest first: ``awaiting`` (no study-level decision yet), one decision,
    or ``all``; ``model`` filters by model name, ``study`` by description or StudyInstanceUID."""
    if state not in QUEUE_FILTERS:
        raise InputError(f"unknown filter {state!r}; use one of: {', '.join(QUEUE_FILTERS)}")
    query = (
        select(Prediction)
        .join(Series, Prediction.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
        .join(Model, ModelVersion.model_id == Model.id)
        .options(
            joinedload(Prediction.series).joinedload(Series.study),
            joinedload(Prediction.model_version).joinedload(ModelVersion.model),
        )
        .order_by(Prediction.created_at, Prediction.id)
        .limit(limit)
        .offset(offset)
    )
    if state == "awaiting":
        query = query.where(~_decided())
    elif state != "all":
        query = query.where(_decided(ReviewStatus(state)))
    if model:
        query = query.where(Model.name == model)
    if study:
        like = f"%{study}%"
        query = query.where(Study.description.ilike(like) | (Study.study_instance_uid == study))
    return list(session.scalars(query).unique())


def reviews_of(session: Session, prediction_id: int) -> list[Review]:
    return list(
        session.scalars(
            select(Review)
            .where(Review.prediction_id == prediction_id)
            .options(joinedload(Review.reviewer))
            .order_by(Review.id)
        )
    )


def review_to_dict(review: Review) -> dict[str, Any]:
    return {
        "id": review.id,
        "prediction_id": review.prediction_id,
        "reviewer": review.reviewer.username,
        "status": ReviewStatus(review.status).value,
        "class_id": review.class_id,
        "comment": review.comment,
        "slice_index": review.slice_index,
        "point_x": review.point_x,
        "point_y": review.point_y,
        "created_at": review.created_at.isoformat(),
    }


@dataclass(frozen=True)
class Decision:
    status: ReviewStatus
    class_id: int | None
    comment: str
    slice_index: int | None
    point: tuple[float, float] | None


def parse_decision(data: ReviewRequest, prediction: Prediction) -> Decision:
    """Check a decision (its types and ranges already checked by the model) against the
    prediction's series (slices, size) and classes."""
    status = ReviewStatus(data.status)
    comment = (data.comment or "").strip()
    class_id = data.class_id
    if class_id is not None:
        known = {e.id for e in render.legend(render.prediction_classes(prediction))}
        if class_id not in known:
            raise InputError(f"class {class_id} is not a class of this prediction: {sorted(known)}")
    size = prediction.series.geometry.get("size", [0, 0, 0])
    slice_index = data.slice_index
    if slice_index is not None and not 0 <= slice_index < size[2]:
        raise InputError(f"slice_index {slice_index} is outside 0..{size[2] - 1}")
    x, y = data.point_x, data.point_y
    point = None
    if x is not None and y is not None:
        if slice_index is None:
            raise InputError("a pinned point needs its slice_index")
        if not (0 <= x <= size[0] and 0 <= y <= size[1]):
            raise InputError(f"the point ({x:g}, {y:g}) is outside the {size[0]}×{size[1]} slice")
        point = (x, y)
    elif (x is None) != (y is None):
        raise InputError("give both point_x and point_y, or neither")
    return Decision(status, class_id, comment, slice_index, point)


def record_decision(
    session: Session, prediction: Prediction, decision: Decision, reviewer: Any
) -> Review:
    review = Review(
        prediction_id=prediction.id,
        reviewer_id=reviewer.id,
        status=decision.status,
        class_id=decision.class_id,
        comment=decision.comment,
        slice_index=decision.slice_index,
        point_x=decision.point[0] if decision.point else None,
        point_y=decision.point[1] if decision.point else None,
    )
    session.add(review)
    session.flush()
    audit.record(
        session,
        reviewer.username,
        "review.decision",
        f"prediction:{prediction.id}",
        review=review.id,
        status=decision.status.value,
        class_id=decision.class_id,
        slice_index=decision.slice_index,
    )
    return review


def _prediction(prediction_id: int) -> Prediction:
    prediction = db().get(
        Prediction,
        prediction_id,
        options=[
            joinedload(Prediction.series),
            joinedload(Prediction.model_version).joinedload(ModelVersion.model),
        ],
    )
    if prediction is None:
        abort(404, f"there is no prediction {prediction_id}")
    return prediction


@bp.get("/review")
@roles_required(*VIEWERS)
def queue() -> Any:
    args = query_args(ReviewPageQuery)
    # a UID pasted with a space around it still matches; a blank box is no filter
    model, study = (args.model or "").strip(), (args.study or "").strip()
    state, page = args.state, args.page
    rows = review_queue(
        db(),
        state=state,
        model=model,
        study=study,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    models = db().scalars(select(Model.name).order_by(Model.name)).all()
    return render_template(
        "review_queue.html",
        rows=rows[:PAGE_SIZE],
        has_next=len(rows) > PAGE_SIZE,
        page=page,
        state=state,
        model=model,
        study=study,
        models=models,
        filters=QUEUE_FILTERS,
    )


@bp.post("/predictions/<int:prediction_id>/reviews")
@roles_required(*REVIEWERS)
def decide(prediction_id: int) -> Any:
    session = db()
    prediction = _prediction(prediction_id)
    as_json = request.is_json
    if as_json:
        data = json_body(ReviewRequest)
    try:
        if not as_json:
            data = form_fields(ReviewRequest)
        decision = parse_decision(data, prediction)
    except InputError as exc:
        if as_json:
            abort(400, str(exc))
        flash(str(exc), "error")
        return redirect(_viewer_url(prediction), 303)
    review = record_decision(session, prediction, decision, web_user())
    session.commit()
    if as_json:
        return jsonify(review_to_dict(review)), 201
    flash(f"Recorded: {decision.status.value.replace('_', ' ')}.", "info")
    # back to the slice the comment is pinned to
    anchor = f"#z={decision.slice_index}" if decision.slice_index is not None else ""
    return redirect(_viewer_url(prediction) + anchor, 303)


def _viewer_url(prediction: Prediction) -> str:
    return url_for("studies.viewer", series_id=prediction.series_id, prediction=prediction.id)


@bp.post("/predictions/<int:prediction_id>/corrections")
@roles_required(*REVIEWERS)
def correct(prediction_id: int) -> Any:
    """JSON ``{"strokes": [...], "base_label_set": id | null}`` → 201 with the new label set."""
    session = db()
    platform = current_platform()
    prediction = _prediction(prediction_id)
    data = json_body(CorrectionRequest)
    base: LabelSet | None = None
    if data.base_label_set is not None:
        base = session.get(LabelSet, data.base_label_set)
        if base is None or base.series_id != prediction.series_id:
            abort(400, "base_label_set must be a label set of this prediction's series")
    try:
        labels = corrections.base_labels(platform, prediction, base)
    except FileNotFoundError:
        abort(404, f"the mask of prediction {prediction.id} is missing under RADSEG_HOME")
    # the model's classes, and any label value in the mask that it does not name
    known = base.classes if base is not None else render.prediction_classes(prediction)
    entries = render.legend(known, render.labels_present(labels))
    try:
        strokes = corrections.parse_strokes(
            [s.model_dump() for s in data.strokes],
            labels.shape,
            [e.id for e in entries],
            max_points=platform.settings.correction_max_points,
        )
        corrected = corrections.paint(
            labels, strokes, max_area=platform.settings.correction_max_area
        )
    except InputError as exc:
        abort(400, str(exc))
    label_set = corrections.save_correction(
        platform,
        session,
        prediction,
        corrected,
        classes=[e.to_dict() for e in entries],
        author=web_user().username,
    )
    audit.record(
        session,
        web_user().username,
        "labels.correct",
        f"label_set:{label_set.id}",
        prediction=prediction.id,
        series=prediction.series_id,
        version=label_set.version,
        strokes=len(strokes),
        slices=sorted({s.z for s in strokes}),
    )
    session.commit()
    return jsonify(label_set_to_dict(label_set)), 201


def label_set_to_dict(label_set: LabelSet) -> dict[str, Any]:
    created: datetime = label_set.created_at
    return {
        "id": label_set.id,
        "series_id": label_set.series_id,
        "source": label_set.source,
        "version": label_set.version,
        "author": label_set.author,
        "classes": label_set.classes,
        "prediction_id": label_set.prediction_id,
        "created_at": created.isoformat(),
    }
