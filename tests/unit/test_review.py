"""The review use cases (:mod:`radseg.workflows.review`), called directly, on SQLite and
PostgreSQL: decisions are checked against the prediction, signed by a reviewer and audited; the
queue filters by decision, model and study; a prediction's page view is audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Review, ReviewStatus, Role
from radseg.errors import InputError, NotFound, PermissionDenied
from radseg.roles import CLI_ACTOR, Actor
from radseg.workflows.review import (
    QUEUE_FILTERS,
    record_prediction_view,
    record_review,
    review_queue,
    reviews_of,
)
from tests.web_support import audit_events

CLINICIAN = Actor("clinician", Role.CLINICIAN)


def test_a_decision_pinned_to_a_point_is_stored_signed_and_audited(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction = seeded["prediction"]
    review = record_review(
        web_platform,
        CLINICIAN,
        prediction,
        status="needs_edit",
        comment="  misses the lower edge ",
        class_id=1,
        slice_index=2,
        point_x=11.5,
        point_y=6.0,
        via="api",
    )
    assert (review.status, review.class_id, review.slice_index) == (ReviewStatus.NEEDS_EDIT, 1, 2)
    assert (review.point_x, review.point_y) == (11.5, 6.0)
    assert review.comment == "misses the lower edge"
    assert review.reviewer.username == "clinician"  # readable after the use case's commit
    with web_platform.sessions() as session:
        assert [r.id for r in reviews_of(session, prediction)] == [review.id]
    (event,) = audit_events(web_platform, "review.decision")
    assert (event.actor, event.target) == ("clinician", f"prediction:{prediction}")
    assert event.detail == {
        "review": review.id,
        "status": "needs_edit",
        "class_id": 1,
        "slice_index": 2,
        "via": "api",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"status": "pending"}, "status must be one of: accepted, rejected, needs_edit"),
        ({"class_id": 7}, r"class 7 is not a class of this prediction: \[1\]"),
        ({"slice_index": 4}, r"slice_index 4 is outside 0\.\.3"),
        ({"point_x": 1.0, "point_y": 1.0}, "a pinned point needs its slice_index"),
        ({"slice_index": 0, "point_x": 99.0, "point_y": 1.0}, "outside the 24×16 slice"),
        ({"slice_index": 0, "point_x": 1.0}, "give both point_x and point_y, or neither"),
    ],
)
def test_a_decision_that_does_not_fit_the_prediction_is_refused(
    web_platform: Platform, seeded: dict[str, int], fields: dict[str, Any], message: str
) -> None:
    decision = {"status": "accepted", **fields}
    with pytest.raises(InputError, match=message):
        record_review(web_platform, CLINICIAN, seeded["prediction"], **decision)
    with web_platform.sessions() as session:
        assert session.scalars(select(Review)).all() == []
    assert audit_events(web_platform, "review.decision") == []


def test_only_reviewers_with_an_account_decide(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    researcher = Actor("researcher", Role.RESEARCHER)
    with pytest.raises(PermissionDenied, match="only a clinician or admin can record"):
        record_review(web_platform, researcher, seeded["prediction"], status="accepted")
    with pytest.raises(NotFound, match="there is no prediction 999"):
        record_review(web_platform, CLINICIAN, 999, status="accepted")
    # a decision is signed by a user: the command line's actor has no account
    with pytest.raises(InputError, match="no user named 'cli'"):
        record_review(web_platform, CLI_ACTOR, seeded["prediction"], status="accepted")


def test_the_queue_filters_by_study_level_decision(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction = seeded["prediction"]

    def queue(state: str, model: str = "", study: str = "") -> list[int]:
        with web_platform.sessions() as session:
            return [p.id for p in review_queue(session, state=state, model=model, study=study)]

    assert queue("awaiting") == [prediction] and queue("accepted") == []
    record_review(web_platform, CLINICIAN, prediction, status="rejected", class_id=1)
    assert queue("awaiting") == [prediction]  # a segment's decision leaves it in the queue
    record_review(web_platform, CLINICIAN, prediction, status="accepted")
    assert queue("awaiting") == [] and queue("accepted") == [prediction]
    assert queue("all", study="CT ch") == [prediction] and queue("all", study="MR") == []
    assert queue("all", model="no such model") == []
    assert QUEUE_FILTERS == ("awaiting", "accepted", "rejected", "needs_edit", "all")
    with pytest.raises(InputError, match="unknown filter 'maybe'; use one of: awaiting, "):
        queue("maybe")


def test_opening_a_prediction_is_audited(web_platform: Platform, seeded: dict[str, int]) -> None:
    record_prediction_view(web_platform, Actor("researcher", Role.RESEARCHER), seeded["prediction"])
    (event,) = audit_events(web_platform, "prediction.view")
    assert event.actor == "researcher" and event.detail == {"series": seeded["series"]}
    with pytest.raises(NotFound, match="there is no prediction 999"):
        record_prediction_view(web_platform, CLINICIAN, 999)
