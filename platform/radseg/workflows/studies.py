"""Studies: the listing the pages, the API and the CLI share, and looking at patient data,
where every view of a study or a series is an audit event (DESIGN §8).

The pages, the JSON API and the viewer read the rows themselves; :func:`record_view` records
that someone looked, in its own unit of work, so no adapter writes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction, Review, ReviewStatus, Series, Study
from radseg.db.paging import COUNT_LIMIT, Listed, Window, fetch
from radseg.errors import InputError, check_one_of
from radseg.roles import VIEWERS, Actor, require_role
from radseg.workflows.review import decided_condition

#: the views of patient data the trail records
VIEW_ACTIONS = ("study.view", "series.view")


def record_view(platform: Platform, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Audit that ``actor`` looked at ``target`` (``study:<id>``, ``series:<id>``).

    :param action: one of :data:`VIEW_ACTIONS`.
    :param detail: joins the event (``via="api"``, the prediction shown with a series).
    """
    require_role(actor, VIEWERS, "look at studies")
    if action not in VIEW_ACTIONS:
        raise ValueError(f"{action!r} is not a view; use one of {', '.join(VIEW_ACTIONS)}")
    with platform.sessions.begin() as session:
        audit.record(session, actor.username, action, target, **detail)


#: what the studies list can be narrowed to (``show=``)
StudyShow = Literal[
    "all", "labelled", "unlabelled", "predicted", "unpredicted", "awaiting_review", "reviewed"
]
STUDY_SHOWS: tuple[str, ...] = get_args(StudyShow)
#: the studies list's orders: added newest/oldest first, study date newest/oldest first (undated
#: last), patient pseudonym, description; each one an index (migration 0012)
StudySort = Literal["newest", "oldest", "date_newest", "date_oldest", "patient", "description"]
STUDY_SORTS: tuple[str, ...] = get_args(StudySort)

_STUDY_ORDERS: dict[str, tuple[Any, ...]] = {
    "newest": (Study.id.desc(),),
    "oldest": (Study.id,),
    # NULLS LAST spelled out: PostgreSQL puts NULLs first in a descending order, SQLite last
    "date_newest": (Study.study_date.desc().nulls_last(), Study.id.desc()),
    "date_oldest": (Study.study_date.asc().nulls_last(), Study.id),
    "patient": (Study.patient_key, Study.id),
    "description": (Study.description, Study.id),
}


@dataclass(frozen=True)
class StudyFilters:
    """What the studies list shows: ``q`` finds a pseudonym (its start), a description (any
    part, any case) or a StudyInstanceUID (all of it); ``modality`` keeps studies with a series
    of that modality; ``show`` is one of :data:`STUDY_SHOWS`; ``sort`` one of
    :data:`STUDY_SORTS`."""

    q: str = ""
    modality: str = ""
    show: str = "all"
    sort: str = "newest"

    def __post_init__(self) -> None:
        check_one_of("show", self.show, STUDY_SHOWS)
        check_one_of("sort", self.sort, STUDY_SORTS)


@dataclass(frozen=True)
class ReviewSummary:
    """A study's predictions by review state (``awaiting`` or their latest decision), and the
    highest review priority among those awaiting."""

    states: dict[str, int] = field(default_factory=dict)
    priority: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"states": self.states, "priority": self.priority}


@dataclass(frozen=True)
class StudyRow:
    study: Study
    series_count: int
    prediction_count: int
    label_count: int = 0
    modalities: tuple[str, ...] = ()
    review: ReviewSummary = field(default_factory=ReviewSummary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.study.id,
            "study_instance_uid": self.study.study_instance_uid,
            "patient_key": self.study.patient_key,
            "description": self.study.description,
            "study_date": self.study.study_date.isoformat() if self.study.study_date else None,
            "study_date_shifted": self.study.study_date is not None,
            "modalities": list(self.modalities),
            "created_at": self.study.created_at.isoformat(),
            "series_count": self.series_count,
            "label_count": self.label_count,
            "prediction_count": self.prediction_count,
            "review": self.review.to_dict(),
        }


def _of_study(entity: Any) -> Any:
    """``entity`` rows (label sets, predictions) of the outer query's study, through its series."""
    return (
        select(entity.id)
        .join(Series, entity.series_id == Series.id)
        .where(Series.study_id == Study.id)
    )


def _filtered(query: Select[Any], filters: StudyFilters) -> Select[Any]:
    text = filters.q.strip()
    if text:
        query = query.where(
            Study.patient_key.startswith(text, autoescape=True)
            | Study.description.icontains(text, autoescape=True)
            | (Study.study_instance_uid == text)
        )
    if filters.modality:
        query = query.where(
            exists().where(Series.study_id == Study.id, Series.modality == filters.modality)
        )
    show = filters.show
    if show in ("labelled", "unlabelled"):
        has = exists(_of_study(LabelSet))
        query = query.where(has if show == "labelled" else ~has)
    elif show in ("predicted", "unpredicted"):
        has = exists(_of_study(Prediction))
        query = query.where(has if show == "predicted" else ~has)
    elif show in ("awaiting_review", "reviewed"):
        decided = decided_condition()
        query = query.where(
            exists(_of_study(Prediction).where(~decided if show == "awaiting_review" else decided))
        )
    return query


def study_rows(
    session: Session, filters: StudyFilters | None = None, window: Window | None = None
) -> Listed[StudyRow]:
    """One page of studies with their counts, modalities and review states.

    The page is read first (the studies alone, in the order's index), then each count for the
    page's studies only: a count in the page's own query would be computed for every study the
    database sorts, not for the fifty it shows.
    """
    filters = filters or StudyFilters()
    rows = _filtered(select(Study), filters).order_by(*_STUDY_ORDERS[filters.sort])
    page = fetch(session, rows, _filtered(select(Study.id), filters), window or Window(100))
    ids = [study.id for study in page.rows]
    series = _series_by_study(session, ids)
    labels = dict(
        session.execute(
            select(Series.study_id, func.count(LabelSet.id))
            .join(LabelSet, LabelSet.series_id == Series.id)
            .where(Series.study_id.in_(ids))
            .group_by(Series.study_id)
        ).all()
    )
    predictions, reviews = _reviews_by_study(session, ids)
    return page.map(
        lambda study: StudyRow(
            study,
            series_count=sum(series.get(study.id, {}).values()),
            label_count=labels.get(study.id, 0),
            prediction_count=predictions.get(study.id, 0),
            modalities=tuple(sorted(series.get(study.id, {}))),
            review=reviews.get(study.id, ReviewSummary()),
        )
    )


def matching_study_ids(
    session: Session, filters: StudyFilters, *, at_most: int = COUNT_LIMIT
) -> list[int]:
    """The ids of every study ``filters`` match, in their order: what "all studies matching
    the search" chooses on the Research page (one query of ids, whatever the count).

    :raises InputError: more than ``at_most`` studies match, or none does.
    """
    query = _filtered(select(Study.id), filters).order_by(*_STUDY_ORDERS[filters.sort])
    ids = list(session.scalars(query.limit(at_most + 1)))
    if len(ids) > at_most:
        raise InputError(
            f"more than {at_most:,} studies match the search; narrow it (a search, a modality "
            "or a show filter) and choose again"
        )
    if not ids:
        raise InputError("no study matches the search; change it or tick studies instead")
    return ids


def _series_by_study(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    """Each study's series counted by modality."""
    query = (
        select(Series.study_id, Series.modality, func.count(Series.id))
        .where(Series.study_id.in_(study_ids))
        .group_by(Series.study_id, Series.modality)
    )
    out: dict[int, dict[str, int]] = {}
    for study_id, modality, n in session.execute(query):
        out.setdefault(study_id, {})[modality] = int(n)
    return out


def _reviews_by_study(
    session: Session, study_ids: list[int]
) -> tuple[dict[int, int], dict[int, ReviewSummary]]:
    """Each study's predictions: how many, and counted by their latest study-level decision (or
    ``awaiting``) with the highest priority of those awaiting."""
    predictions = session.execute(
        select(Series.study_id, Prediction.id, Prediction.priority)
        .join(Series, Prediction.series_id == Series.id)
        .where(Series.study_id.in_(study_ids))
    ).all()
    latest: dict[int, str] = {}
    decisions = select(Review.prediction_id, Review.status).where(
        Review.prediction_id.in_([p for _, p, _ in predictions]), Review.class_id.is_(None)
    )
    for prediction_id, status in session.execute(decisions.order_by(Review.id)):
        if status != ReviewStatus.PENDING:
            latest[prediction_id] = ReviewStatus(status).value
    states: dict[int, Counter[str]] = {}
    awaiting: dict[int, list[float]] = {}
    for study_id, prediction_id, priority in predictions:
        state = latest.get(prediction_id, "awaiting")
        states.setdefault(study_id, Counter())[state] += 1
        if state == "awaiting" and priority is not None:
            awaiting.setdefault(study_id, []).append(priority)
    summaries = {
        study_id: ReviewSummary(dict(counts), max(awaiting.get(study_id, []), default=None))
        for study_id, counts in states.items()
    }
    return {k: sum(v.values()) for k, v in states.items()}, summaries


def modalities_present(session: Session) -> list[str]:
    """The modalities of the stored series, for the list's filter (one index scan)."""
    return list(session.scalars(select(Series.modality).distinct().order_by(Series.modality)))
