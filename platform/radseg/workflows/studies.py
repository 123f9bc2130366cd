"""Studies: the listing the pages, the API and the CLI share, and looking at patient data,
where every view of a study or a series is an audit event (DESIGN §8).

The pages, the JSON API and the viewer read the rows themselves; :func:`record_view` records
that someone looked, in its own unit of work, so no adapter writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.core import Platform
from radseg.db.models import Prediction, Series, Study
from radseg.roles import VIEWERS, Actor, require_role

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


@dataclass(frozen=True)
class StudyRow:
    study: Study
    series_count: int
    prediction_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.study.id,
            "study_instance_uid": self.study.study_instance_uid,
            "patient_key": self.study.patient_key,
            "description": self.study.description,
            "created_at": self.study.created_at.isoformat(),
            "series_count": self.series_count,
            "prediction_count": self.prediction_count,
        }


def study_rows(session: Session, *, limit: int = 100, offset: int = 0) -> list[StudyRow]:
    """Studies, newest first, with their series and prediction counts (one query)."""
    series_count = (
        select(func.count(Series.id)).where(Series.study_id == Study.id).scalar_subquery()
    )
    prediction_count = (
        select(func.count(Prediction.id))
        .join(Series, Prediction.series_id == Series.id)
        .where(Series.study_id == Study.id)
        .scalar_subquery()
    )
    query = (
        select(Study, series_count, prediction_count)
        .order_by(Study.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [StudyRow(s, n, p) for s, n, p in session.execute(query)]
