"""Several readers, agreement and adjudication (issue 14, part 2): the numbers against a case
worked by hand, and the use cases of :mod:`radseg.workflows.readings` and
:mod:`radseg.workflows.adjudication` on SQLite and PostgreSQL (the worklist's unit of work,
the next label version's ``max()``, the JSON agreement report)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from radseg import quality
from radseg.core import Platform, create_platform
from radseg.db.models import (
    CorrectionSize,
    Job,
    JobState,
    LabelSet,
    Prediction,
    Reading,
    ReadingCase,
    ReadingCaseState,
    Role,
    User,
)
from radseg.errors import Conflict, InputError, PermissionDenied
from radseg.imaging.agreement import agreement
from radseg.imaging.paint import Stroke, paint
from radseg.imaging.volumes import read_volume
from radseg.jobs.worker import Worker
from radseg.quality import correction_size
from radseg.roles import Actor
from radseg.workflows import adjudication, readings
from tests.web_support import audit_events

ANN = Actor("ann", Role.CLINICIAN)
BOB = Actor("bob", Role.CLINICIAN)
CAT = Actor("cat", Role.CLINICIAN)
RESEARCHER = Actor("researcher", Role.RESEARCHER)
ADMIN = Actor("admin", Role.ADMIN)


# --- the numbers ------------------------------------------------------------------------------


def test_agreement_numbers_are_the_hand_computed_ones() -> None:
    """Three readers on a 1×4×8 grid. A and B mark the left four columns (16 voxels); C marks
    them and two more columns (24 voxels); the prediction marks the left two (8 voxels).

    By hand: Dice(A, B) = 1; Dice(A, C) = Dice(B, C) = 2·16 / (16 + 24) = 0.8; against the
    prediction A and B score 2·8 / (16 + 8) = 2/3, C 2·8 / (24 + 8) = 0.5. The truth STAPLE
    converges to is A's mask (two raters of three, and C agrees inside it): every reader finds
    all 16 true voxels (sensitivity 1); of the 16 background voxels C marks 8 (specificity
    0.5), A and B none (1). The majority vote is A's mask, and so is the multi-label STAPLE."""
    a = np.zeros((1, 4, 8), np.uint8)
    a[0, :, 0:4] = 1
    b = a.copy()
    c = a.copy()
    c[0, :, 4:6] = 1
    prediction = np.zeros_like(a)
    prediction[0, :, 0:2] = 1
    result = agreement(["a", "b", "c"], [a, b, c], prediction, [1, 2])
    one = result.report["per_class"]["1"]
    assert [(p["a"], p["b"], p["dice"]) for p in one["pairwise_dice"]] == [
        ("a", "b", 1.0),
        ("a", "c", 0.8),
        ("b", "c", 0.8),
    ]
    assert one["mean_pairwise_dice"] == pytest.approx((1.0 + 0.8 + 0.8) / 3, abs=1e-6)
    assert one["vs_prediction"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 0.5}, abs=1e-6)
    assert one["sensitivity"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0}, abs=1e-3)
    assert one["specificity"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.5}, abs=1e-3)
    assert one["vs_staple"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.8}, abs=1e-6)
    assert np.array_equal(result.majority, a) and np.array_equal(result.staple, a)
    # a class nobody drew: Dice undefined, nothing for STAPLE to estimate
    two = result.report["per_class"]["2"]
    assert {p["dice"] for p in two["pairwise_dice"]} == {None}
    assert set(two["sensitivity"].values()) == {None}


def test_two_readers_who_disagree_leave_the_tie_to_background_in_the_majority_vote() -> None:
    """A marks columns 0-3, C columns 0-5: on columns 4-5 the vote is one against one."""
    a = np.zeros((1, 4, 8), np.uint8)
    a[0, :, 0:4] = 1
    c = a.copy()
    c[0, :, 4:6] = 2  # C calls the extra voxels another class
    result = agreement(["a", "c"], [a, c], np.zeros_like(a), [1, 2])
    assert np.array_equal(result.majority, a)
    assert result.report["per_class"]["2"]["pairwise_dice"][0]["dice"] == 0.0
    assert result.report["per_class"]["1"]["pairwise_dice"][0]["dice"] == 1.0
    with pytest.raises(ValueError, match="at least two readers"):
        agreement(["a"], [a], a, [1])
    with pytest.raises(ValueError, match="not one grid"):
        agreement(["a", "c"], [a, c[:, :2]], a, [1])


# --- the use cases ----------------------------------------------------------------------------


@pytest.fixture
def readers(web_platform: Platform, seeded: dict[str, int], password_hash: str) -> dict[str, int]:
    """Three more clinicians (ann, bob: readers; cat: adjudicator) beside the seeded users."""
    with web_platform.sessions.begin() as session:
        for name in ("ann", "bob", "cat"):
            session.add(User(username=name, password_hash=password_hash, role=Role.CLINICIAN))
    return seeded


def _stroke(z: int, class_id: int, points: Any, radius: float = 1.0) -> dict[str, Any]:
    return {"z": z, "class_id": class_id, "radius": radius, "points": points}


def _mask(platform: Platform, stored: str) -> np.ndarray:
    return read_volume(platform.resolve(stored))[0].astype(np.uint8)


def _second_prediction(platform: Platform) -> int:
    """Another prediction of the seeded series (the prediction row only; the same mask)."""
    with platform.sessions.begin() as session:
        first = session.scalars(select(Prediction)).first()
        assert first is not None
        second = Prediction(
            series_id=first.series_id,
            model_version_id=first.model_version_id,
            mask_path=first.mask_path,
        )
        session.add(second)
        session.flush()
        return second.id


def run_jobs(platform: Platform) -> None:
    """What ``radseg worker --burst`` does, in this process."""
    Worker(platform, burst=True, inline_kinds=("agreement",), listen=False).run()


def test_two_readers_and_an_adjudicator_make_a_reviewed_label_version(
    web_platform: Platform, readers: dict[str, int]
) -> None:
    platform, prediction_id = web_platform, readers["prediction"]
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        original = _mask(platform, prediction.mask_path)
    due = date.today() + timedelta(days=3)
    case = readings.assign(
        platform,
        RESEARCHER,
        prediction_id=prediction_id,
        readers=["ann", "bob"],
        adjudicator="cat",
        due_date=due,
    )
    with platform.sessions() as session:
        (ann_reading,) = readings.my_queue(session, ANN)
        (bob_reading,) = readings.my_queue(session, BOB)
        assert ann_reading.case_id == case.id and ann_reading.case.due_date == due
        assert readings.my_queue(session, CAT) == []
        assert [c.id for c in readings.adjudication_queue(session, CAT)] == [case.id]

    ann_open = readings.open_reading(platform, ANN, ann_reading.id)
    assert ann_open.opened_at is not None
    assert np.array_equal(_mask(platform, ann_open.mask_path), original)
    # ann erases class 1 on slice 2 where bob keeps it; both paint class 1 on slice 1
    erase = _stroke(2, 0, [[11.5, 5.5]], radius=3)
    readings.paint_reading(platform, ANN, ann_reading.id, strokes=[erase])
    readings.paint_reading(
        platform, BOB, bob_reading.id, strokes=[_stroke(1, 1, [[3.5, 3.5]], radius=2)]
    )
    ann_mask = _mask(platform, ann_open.mask_path)
    assert np.array_equal(ann_mask, paint(original, [Stroke(2, 0, 3.0, ((11.5, 5.5),))]))

    # blinded: bob cannot see ann's work, nor the case's readings, before he submits
    with platform.sessions() as session:
        with pytest.raises(PermissionDenied, match="not submitted; nobody but its reader"):
            readings.visible_reading(session, BOB, ann_reading.id)
        with pytest.raises(PermissionDenied, match="not yours"):
            readings._own_open_reading(session, BOB, ann_reading.id)
    with pytest.raises(PermissionDenied, match="not yours"):
        readings.paint_reading(platform, BOB, ann_reading.id, strokes=[erase])

    readings.submit_reading(platform, ANN, ann_reading.id, decision="needs_edit", comment=" edge ")
    with platform.sessions() as session:
        # submitted, but bob has not: still blinded for him, and the adjudicator waits
        with pytest.raises(PermissionDenied, match="once you have submitted your own"):
            readings.visible_reading(session, BOB, ann_reading.id)
        assert readings.visible_reading(session, CAT, ann_reading.id).comment == "edge"
        assert session.query(Job).filter_by(kind="agreement").count() == 0
    with pytest.raises(Conflict, match="waits for 1 reader"):
        adjudication.start_adjudication(platform, CAT, case.id, source="prediction")
    with pytest.raises(Conflict, match="a submitted reading is final"):
        readings.paint_reading(platform, ANN, ann_reading.id, strokes=[erase])

    bob_done = readings.submit_reading(platform, BOB, bob_reading.id, decision="accepted")
    assert bob_done.seconds is not None and bob_done.seconds >= 0
    with platform.sessions() as session:
        assert readings.visible_reading(session, BOB, ann_reading.id).id == ann_reading.id
    # the consensus exists only once the agreement job has run
    with pytest.raises(Conflict, match="its agreement job has not run"):
        adjudication.start_adjudication(platform, CAT, case.id, source="staple")
    run_jobs(platform)
    with platform.sessions() as session:
        (job,) = session.query(Job).filter_by(kind="agreement").all()
        assert job.state == JobState.SUCCEEDED, job.message
        stored = session.get(ReadingCase, case.id)
        assert stored is not None and stored.agreement is not None
        report = stored.agreement
    # class 1 by hand: the prediction has 16 voxels on slice 2; ann erased all of them, bob
    # kept them and added a disc of 13 on slice 1 (radius 2): Dice 0 between the readers
    bob_mask = _mask(platform, bob_done.mask_path)
    ann_n, bob_n = int((ann_mask == 1).sum()), int((bob_mask == 1).sum())
    both = int(((ann_mask == 1) & (bob_mask == 1)).sum())
    one = report["per_class"]["1"]
    assert one["pairwise_dice"][0]["dice"] == pytest.approx(2 * both / (ann_n + bob_n), abs=1e-6)
    assert one["vs_prediction"]["bob"] == pytest.approx(2 * 16 / (bob_n + 16), abs=1e-6)
    assert report["readings"] == [ann_reading.id, bob_reading.id]
    assert set(report["consensus"]) == {"staple", "majority"}
    # the version's weekly quality shows the readers' agreement of the case
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        (week,) = quality.agreement_metric(session, prediction.model_version_id).values()
    means = [c["mean_pairwise_dice"] for c in report["per_class"].values()]
    assert week["read_cases"] == 1
    assert week["reader_dice_mean"] == pytest.approx(np.mean([m for m in means if m is not None]))

    with pytest.raises(PermissionDenied, match="adjudicated by cat, not by you"):
        adjudication.start_adjudication(
            platform, Actor("admin", Role.ADMIN), case.id, source="staple"
        )
    with pytest.raises(InputError, match="is not one of case"):
        adjudication.start_adjudication(platform, CAT, case.id, source="reading:999")
    with pytest.raises(Conflict, match="choose the mask to start from"):
        adjudication.sign_off(platform, CAT, case.id)
    adjudication.start_adjudication(platform, CAT, case.id, source=f"reading:{bob_reading.id}")
    adjudication.paint_adjudication(
        platform, CAT, case.id, strokes=[_stroke(0, 1, [[20.5, 12.5]], radius=1)]
    )
    label_set = adjudication.sign_off(platform, CAT, case.id)
    assert (label_set.source, label_set.author, label_set.prediction_id) == (
        "adjudication",
        "cat",
        prediction_id,
    )
    provenance = label_set.provenance or {}
    assert provenance["readers"] == ["ann", "bob"] and provenance["adjudicator"] == "cat"
    assert provenance["started_from"] == f"reading:{bob_reading.id}"
    assert provenance["prediction"] == prediction_id and provenance["method"] == "adjudication"
    assert provenance["decisions"] == {"ann": "needs_edit", "bob": "accepted"}
    signed = _mask(platform, label_set.path)
    assert np.array_equal(signed, paint(bob_mask, [Stroke(0, 1, 1.0, ((20.5, 12.5),))]))
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        # the prediction stays untouched
        assert np.array_equal(_mask(platform, prediction.mask_path), original)
        closed = session.get(ReadingCase, case.id)
        assert closed is not None and closed.state == ReadingCaseState.SIGNED_OFF
        assert closed.label_set_id == label_set.id
        assert session.query(LabelSet).filter_by(source="review").count() == 0
        # the signed-off mask counts as the prediction's correction in its quality over time
        size = session.get(CorrectionSize, label_set.id)
        assert size is not None and size.prediction_id == prediction_id
        assert size.voxels_changed == int((signed != original).sum())
        assert size.dice == pytest.approx(correction_size(original, signed)[0])
    with pytest.raises(Conflict, match="signed_off; it takes no more work"):
        adjudication.sign_off(platform, CAT, case.id)
    actions = {
        "reading.assign": 1,
        "reading.open": 1,
        "reading.paint": 2,
        "reading.submit": 2,
        "reading.agreement": 1,
        "reading.adjudicate.start": 1,
        "reading.adjudicate.paint": 1,
        "reading.sign_off": 1,
    }
    assert {a: len(audit_events(platform, a)) for a in actions} == actions


def test_the_worklist_refuses_what_cannot_be_read(
    web_platform: Platform, readers: dict[str, int]
) -> None:
    platform, prediction_id = web_platform, readers["prediction"]
    with pytest.raises(PermissionDenied, match="only an admin or researcher can assign"):
        readings.assign(platform, ANN, prediction_id=prediction_id, readers=["bob"])
    with pytest.raises(InputError, match="is a researcher; readers and adjudicators need"):
        readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["researcher"])
    with pytest.raises(InputError, match="the adjudicator must be someone else"):
        readings.assign(
            platform, RESEARCHER, prediction_id=prediction_id, readers=["ann"], adjudicator="ann"
        )
    with pytest.raises(InputError, match="named twice"):
        readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["ann", "ann"])
    with pytest.raises(InputError, match="no user named 'zed'"):
        readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["zed"])
    with pytest.raises(InputError, match="at least one reader"):
        readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=[" "])
    case = readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["ann"])
    with pytest.raises(Conflict, match="already on the worklist"):
        readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["bob"])
    with platform.sessions() as session:
        (reading,) = readings.my_queue(session, ANN)
    with pytest.raises(InputError, match="decision must be one of"):
        readings.submit_reading(platform, ANN, reading.id, decision="pending")
    # one reader, no adjudicator: no agreement job; an admin adjudicates
    readings.submit_reading(platform, ANN, reading.id, decision="accepted")
    with platform.sessions() as session:
        assert session.query(Job).filter_by(kind="agreement").count() == 0
        saved = session.get(Reading, reading.id)
        assert saved is not None and saved.mask_path  # the prediction as it was
    with pytest.raises(PermissionDenied, match="names no adjudicator; an admin"):
        adjudication.start_adjudication(platform, CAT, case.id, source="prediction")
    with pytest.raises(Conflict, match="its agreement job has not run"):
        adjudication.start_adjudication(
            platform, Actor("admin", Role.ADMIN), case.id, source="majority"
        )
    # an admin who read a case does not adjudicate it
    admin_read = readings.assign(
        platform, RESEARCHER, prediction_id=_second_prediction(platform), readers=["admin"]
    )
    readings.submit_reading(platform, ADMIN, admin_read.readings[0].id, decision="accepted")
    with pytest.raises(PermissionDenied, match="another admin adjudicates it"):
        adjudication.start_adjudication(platform, ADMIN, admin_read.id, source="prediction")
    with platform.sessions() as session:
        assert [c.id for c in readings.adjudication_queue(session, ADMIN)] == [case.id]
    readings.cancel_case(platform, RESEARCHER, case.id)
    with pytest.raises(Conflict, match="cancelled; it takes no more work"):
        adjudication.start_adjudication(
            platform, Actor("admin", Role.ADMIN), case.id, source="prediction"
        )
    # a cancelled case frees the prediction for a new one
    readings.assign(platform, RESEARCHER, prediction_id=prediction_id, readers=["bob"])


def test_the_readers_statistics_count_only_cases_every_reader_submitted(
    web_platform: Platform, readers: dict[str, int]
) -> None:
    platform, prediction_id = web_platform, readers["prediction"]
    case = readings.assign(
        platform, RESEARCHER, prediction_id=prediction_id, readers=["ann", "bob", "cat"]
    )
    ids = {r.reader.username: r.id for r in case.readings}
    readings.submit_reading(platform, ANN, ids["ann"], decision="accepted")
    readings.submit_reading(platform, BOB, ids["bob"], decision="accepted")
    run_jobs(platform)
    with platform.sessions() as session:
        stats = adjudication.reader_statistics(session, ANN)
    # ann and bob agree, but cat is still reading: no agreement shows yet; time does
    assert stats["readers"]["ann"]["classes"] == {}
    assert stats["readers"]["ann"]["cases_submitted"] == 1
    assert sum(stats["readers"]["bob"]["cases_per_week"].values()) == 1
    readings.submit_reading(platform, CAT, ids["cat"], decision="accepted")
    run_jobs(platform)
    with platform.sessions() as session:
        stats = adjudication.reader_statistics(session, ANN)
    # all three submitted the prediction unchanged: perfect agreement on both classes
    for name in ("ann", "bob", "cat"):
        for c in ("1", "2"):
            per = stats["readers"][name]["classes"][c]
            assert per["dice_with_readers"] == 1.0 and per["vs_prediction"] == 1.0
            assert per["cases"] == 1
    assert stats["class_names"]["1"] == "lesion"


def test_a_signed_off_mask_counts_for_the_retrain_policy(
    web_platform: Platform, readers: dict[str, int]
) -> None:
    policy = create_platform(
        web_platform.settings.model_copy(update={"retrain_after_reviewed": 1}), autoload=False
    )
    try:
        case = readings.assign(
            policy,
            RESEARCHER,
            prediction_id=readers["prediction"],
            readers=["ann"],
            adjudicator="cat",
        )
        (reading,) = case.readings
        readings.open_reading(policy, ANN, reading.id)
        readings.submit_reading(policy, ANN, reading.id, decision="accepted")
        adjudication.start_adjudication(policy, CAT, case.id, source="prediction")
        with policy.sessions() as session:
            assert session.query(Job).filter_by(kind="retrain").count() == 0
        adjudication.sign_off(policy, CAT, case.id)
        with policy.sessions() as session:
            (job,) = session.query(Job).filter_by(kind="retrain").all()
            assert job.created_by == "retrain-policy"
    finally:
        policy.close()
