"""Clinician review: the queue of predictions awaiting a decision, and decisions with pinned
comments.

A decision is a :class:`~radseg.db.models.Review` row (never edited: a changed mind is a new
row, so the history stays); the latest study-level decision (``class_id`` ``None``) takes a
prediction out of the queue. Every decision is audited (``review.decision``); a study-level one
then has the model version's quality alerts evaluated (:mod:`radseg.workflows.quality`). The
review page, the JSON API and any script record decisions through :func:`record_review`, so all
are checked against the prediction's series and classes in the same way.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, joinedload

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import Model, ModelVersion, Prediction, Review, ReviewStatus, Series, Study
from radseg.errors import InputError
from radseg.imaging.legend import legend, prediction_classes
from radseg.roles import REVIEWERS, VIEWERS, Actor, require_role
from radseg.workflows.lookup import get_row
from radseg.workflows.quality import evaluate_after

#: the decisions a reviewer can record (``pending`` is no decision); request schemas use the type
DecisionName = Literal["accepted", "rejected", "needs_edit"]
DECISIONS = tuple(ReviewStatus(name) for name in get_args(DecisionName))
#: the review queue's filters: no decision yet, one decision, or every prediction
QueueFilter = Literal["awaiting", DecisionName, "all"]
QUEUE_FILTERS: tuple[str, ...] = get_args(QueueFilter)
#: the queue's orders: review priority (highest first, unscored predictions last, then oldest
#: first; see radseg.imaging.review_priority), oldest first, newest first
QueueSort = Literal["priority", "oldest", "newest"]
QUEUE_SORTS: tuple[str, ...] = get_args(QueueSort)
#: rows of the queue when the caller does not say
QUEUE_LIMIT = 100


# --- the queue (reads) ------------------------------------------------------------------------


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
    sort: str = "priority",
    limit: int = QUEUE_LIMIT,
    offset: int = 0,
) -> list[Prediction]:
    """Predictions, the most doubtful first (``sort``: see :data:`QUEUE_SORTS`): ``awaiting``
    (no study-level decision yet), one decision, or ``all``; ``model`` filters by model name,
    ``study`` by description or StudyInstanceUID.

    :raises InputError: ``state`` is not one of :data:`QUEUE_FILTERS`, or ``sort`` not one of
        :data:`QUEUE_SORTS`.
    """
    if state not in QUEUE_FILTERS:
        raise InputError(f"unknown filter {state!r}; use one of: {', '.join(QUEUE_FILTERS)}")
    if sort not in QUEUE_SORTS:
        raise InputError(f"unknown sort {sort!r}; use one of: {', '.join(QUEUE_SORTS)}")
    order: tuple[Any, ...] = (Prediction.created_at, Prediction.id)
    if sort == "newest":
        order = (Prediction.created_at.desc(), Prediction.id.desc())
    elif sort == "priority":
        # NULLS LAST spelled out: PostgreSQL puts NULLs first in a descending order, SQLite last
        order = (Prediction.priority.desc().nulls_last(), *order)
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
        .order_by(*order)
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
    """The prediction's decisions, oldest first, with their reviewers loaded."""
    return list(
        session.scalars(
            select(Review)
            .where(Review.prediction_id == prediction_id)
            .options(joinedload(Review.reviewer))
            .order_by(Review.id)
        )
    )


# --- a decision -------------------------------------------------------------------------------


def _status(status: str) -> ReviewStatus:
    if status not in {s.value for s in DECISIONS}:
        names = ", ".join(s.value for s in DECISIONS)
        raise InputError(f"status must be one of: {names}; got {status!r}")
    return ReviewStatus(status)


def _check_class(prediction: Prediction, class_id: int | None) -> None:
    """A decision on one class names a class the prediction has."""
    if class_id is not None:
        known = {e.id for e in legend(prediction_classes(prediction))}
        if class_id not in known:
            raise InputError(f"class {class_id} is not a class of this prediction: {sorted(known)}")


def _check_pin(
    prediction: Prediction,
    slice_index: int | None,
    point_x: float | None,
    point_y: float | None,
) -> None:
    """A pinned slice lies in the prediction's series; a pinned point has both coordinates, a
    slice, and lies inside that slice."""
    size = prediction.series.geometry.get("size", [0, 0, 0])
    if slice_index is not None and not 0 <= slice_index < size[2]:
        raise InputError(f"slice_index {slice_index} is outside 0..{size[2] - 1}")
    if (point_x is None) != (point_y is None):
        raise InputError("give both point_x and point_y, or neither")
    if point_x is None or point_y is None:
        return
    if slice_index is None:
        raise InputError("a pinned point needs its slice_index")
    if not (0 <= point_x <= size[0] and 0 <= point_y <= size[1]):
        raise InputError(
            f"the point ({point_x:g}, {point_y:g}) is outside the {size[0]}×{size[1]} slice"
        )


def record_review(
    platform: Platform,
    actor: Actor,
    prediction_id: int,
    *,
    status: str,
    comment: str = "",
    class_id: int | None = None,
    slice_index: int | None = None,
    point_x: float | None = None,
    point_y: float | None = None,
    via: str | None = None,
) -> Review:
    """Record ``actor``'s decision on a prediction (or on one of its classes, with ``class_id``),
    optionally pinned to a point ``(point_x, point_y)`` of slice ``slice_index``; audited.

    :raises PermissionDenied: ``actor`` is not a reviewer (clinician or admin).
    :raises NotFound: there is no such prediction.
    :raises InputError: the status, class, slice or point does not fit the prediction, or
        ``actor`` has no user account to sign it with.
    """
    require_role(actor, REVIEWERS, "record review decisions")
    with platform.sessions.begin() as session:
        prediction = get_row(session, Prediction, prediction_id, "prediction")
        decision_status = _status(status)
        _check_class(prediction, class_id)
        _check_pin(prediction, slice_index, point_x, point_y)
        review = Review(
            prediction_id=prediction.id,
            reviewer=users.get_user(session, actor.username),
            status=decision_status,
            class_id=class_id,
            comment=comment.strip(),
            slice_index=slice_index,
            point_x=point_x,
            point_y=point_y,
        )
        session.add(review)
        session.flush()
        audit.record(
            session,
            actor.username,
            "review.decision",
            f"prediction:{prediction.id}",
            review=review.id,
            status=decision_status.value,
            class_id=class_id,
            slice_index=slice_index,
            **({"via": via} if via else {}),
        )
    if class_id is None:  # a study-level decision moves the version's quality charts
        evaluate_after(platform, review.prediction_id)
    return review


def record_prediction_view(
    platform: Platform, actor: Actor, prediction_id: int, *, via: str | None = None
) -> None:
    """Audit that ``actor`` opened a prediction's page (``prediction.view``: patient data).

    :raises PermissionDenied: ``actor``'s role may not look at predictions.
    :raises NotFound: there is no such prediction.
    """
    require_role(actor, VIEWERS, "look at predictions")
    with platform.sessions.begin() as session:
        prediction = get_row(session, Prediction, prediction_id, "prediction")
        audit.record(
            session,
            actor.username,
            "prediction.view",
            f"prediction:{prediction.id}",
            series=prediction.series_id,
            **({"via": via} if via else {}),
        )
