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

from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.orm import Session, joinedload, selectinload

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import Model, ModelVersion, Prediction, Review, ReviewStatus, Series, Study
from radseg.db.paging import Listed, Window, fetch
from radseg.errors import InputError, check_one_of
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


def decided_condition(status: ReviewStatus | None = None) -> Any:
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
    """The rows of :func:`review_queue_page` alone (for the command line)."""
    filters = QueueFilters(state=state, model=model, study=study, sort=sort)
    return review_queue_page(session, filters, Window(limit, offset)).rows


@dataclass(frozen=True)
class QueueFilters:
    """What the queue shows: ``state`` one of :data:`QUEUE_FILTERS` (``awaiting``: no
    study-level decision yet); ``model`` a model's name; ``study`` finds a pseudonym (its
    start), a description (any part, any case) or a StudyInstanceUID (all of it); ``sort`` one of
    :data:`QUEUE_SORTS`.

    :raises InputError: ``state`` or ``sort`` is not one of its names.
    """

    state: str = "awaiting"
    model: str = ""
    study: str = ""
    sort: str = "priority"

    def __post_init__(self) -> None:
        check_one_of("filter", self.state, QUEUE_FILTERS)
        check_one_of("sort", self.sort, QUEUE_SORTS)


def _queue_filtered(query: Select[Any], filters: QueueFilters) -> Select[Any]:
    if filters.state == "awaiting":
        query = query.where(~decided_condition())
    elif filters.state != "all":
        query = query.where(decided_condition(ReviewStatus(filters.state)))
    if filters.model:
        query = (
            query.join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
            .join(Model, ModelVersion.model_id == Model.id)
            .where(Model.name == filters.model)
        )
    text = filters.study.strip()
    if text:
        query = query.join(Series, Prediction.series_id == Series.id).join(
            Study, Series.study_id == Study.id
        )
        query = query.where(
            Study.patient_key.startswith(text, autoescape=True)
            | Study.description.icontains(text, autoescape=True)
            | (Study.study_instance_uid == text)
        )
    return query


def review_queue_page(
    session: Session, filters: QueueFilters | None = None, window: Window | None = None
) -> Listed[Prediction]:
    """One page of predictions, the most doubtful first by default (``sort="priority"``:
    highest review priority first, unscored ones last, then oldest first), with their series,
    study, model version and reviews loaded, and the bounded count of the matching ones."""
    filters = filters or QueueFilters()
    order: tuple[Any, ...] = (Prediction.created_at, Prediction.id)
    if filters.sort == "newest":
        order = (Prediction.created_at.desc(), Prediction.id.desc())
    elif filters.sort == "priority":
        # NULLS LAST spelled out: PostgreSQL puts NULLs first in a descending order, SQLite last
        order = (Prediction.priority.desc().nulls_last(), *order)
    rows = (
        _queue_filtered(select(Prediction), filters)
        .order_by(*order)
        .options(
            joinedload(Prediction.series).joinedload(Series.study),
            joinedload(Prediction.model_version).joinedload(ModelVersion.model),
            selectinload(Prediction.reviews),
        )
    )
    matching = _queue_filtered(select(Prediction.id), filters)
    return fetch(session, rows, matching, window or Window(QUEUE_LIMIT))


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
