"""Several readers per prediction: the worklist, each reader's blinded copy, and who sees what.

A researcher or admin puts a prediction on the worklist (:func:`assign`): a
:class:`~radseg.db.models.ReadingCase` with N ≥ 1 named readers (users with a reviewing role:
clinician or admin), optionally an adjudicator (a reviewer who is not one of the readers), and
a due date. Each reader gets a :class:`~radseg.db.models.Reading`: on first opening
(:func:`open_reading`) a private copy of the prediction's mask, which they paint with the
viewer's brush (:func:`paint_reading`, the strokes of :mod:`radseg.imaging.paint`) and then
submit with a decision (:func:`submit_reading`). The prediction itself is never written.

**Blinding** (:func:`check_may_see_submitted`): a reading is seen by its reader; by nobody
else before it is submitted; after, by the case's adjudicator, admins and researchers who are
not readers of the case still at work, and the other readers once they have submitted their
own. The pages, the API and the slice images all ask these functions.

**Time**: a reading's ``seconds`` run from the reader's first opening to the submission.

Once two readers have submitted, each further submission queues an ``agreement`` job
(:func:`radseg.workflows.adjudication.compute_agreement`). Every action is audited
(``reading.assign``, ``reading.open``, ``reading.paint``, ``reading.submit``,
``reading.cancel``).
"""

from __future__ import annotations

import shutil
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, joinedload

from radseg import audit, users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import (
    Prediction,
    Reading,
    ReadingCase,
    ReadingCaseState,
    ReviewStatus,
    Role,
    User,
)
from radseg.errors import Conflict, InputError, NotFound, PermissionDenied, check_one_of
from radseg.imaging.legend import labels_present, legend, prediction_classes
from radseg.imaging.paint import paint, parse_strokes
from radseg.imaging.volumes import read_volume, write_volume
from radseg.roles import OPERATORS, REVIEWERS, VIEWERS, Actor, require_role
from radseg.storage import atomic_path
from radseg.workflows.jobs import queue_job
from radseg.workflows.lookup import get_row
from radseg.workflows.review import DECISIONS

#: who puts predictions on the worklist
ASSIGNERS = OPERATORS
#: the most readers one case may have
MAX_READERS = 10
#: the worklist's filters
WORKLIST_STATES = (*(s.value for s in ReadingCaseState), "all")
#: the job kind that measures agreement
AGREEMENT_KIND = "agreement"


# --- who sees what ----------------------------------------------------------------------------


def reading_of(case: ReadingCase, username: str) -> Reading | None:
    """``username``'s reading of ``case``, if they are one of its readers."""
    return next((r for r in case.readings if r.reader.username == username), None)


def may_see_submitted(case: ReadingCase, actor: Actor) -> bool:
    """Whether ``actor`` may see the case's submitted readings, their agreement and consensus.

    A reader of the case only once they have submitted; otherwise the adjudicator, admins and
    researchers.
    """
    own = reading_of(case, actor.username)
    if own is not None:
        return own.submitted_at is not None
    adjudicator = case.adjudicator.username if case.adjudicator else None
    return actor.username == adjudicator or actor.role in (Role.ADMIN, Role.RESEARCHER)


def check_may_see_submitted(case: ReadingCase, actor: Actor) -> None:
    """:class:`PermissionDenied` unless :func:`may_see_submitted`; says why."""
    if may_see_submitted(case, actor):
        return
    if reading_of(case, actor.username) is not None:
        raise PermissionDenied(
            f"case {case.id} is blinded: you see the other readers' work once you have "
            "submitted your own reading"
        )
    raise PermissionDenied(
        f"only case {case.id}'s readers (after submitting), its adjudicator, an admin or a "
        "researcher can see its readings"
    )


def check_may_see_reading(reading: Reading, actor: Actor) -> None:
    """A reader sees their own reading; anyone else a submitted one, by the case's rule.

    :raises PermissionDenied: the reading is another reader's draft, or ``actor`` may not see
        the case's submitted readings.
    """
    if reading.reader.username == actor.username:
        return
    if reading.submitted_at is None:
        raise PermissionDenied(
            f"reading {reading.id} is not submitted; nobody but its reader sees it until then"
        )
    check_may_see_submitted(reading.case, actor)


def visible_reading(session: Session, actor: Actor, reading_id: int) -> Reading:
    """Reading ``reading_id`` if ``actor`` may see it (see :func:`check_may_see_reading`)."""
    require_role(actor, VIEWERS, "look at readings")
    reading = get_row(session, Reading, reading_id, "reading", options=_READING_ROWS)
    check_may_see_reading(reading, actor)
    return reading


def visible_case(session: Session, actor: Actor, case_id: int) -> ReadingCase:
    """Case ``case_id`` for its readers, its adjudicator, admins and researchers.

    The case row itself (readers, states, due date) hides nothing; its masks and agreement are
    checked separately with :func:`check_may_see_submitted`.
    """
    case = get_row(session, ReadingCase, case_id, "reading case", options=_CASE_ROWS)
    involved = reading_of(case, actor.username) is not None or (
        case.adjudicator is not None and case.adjudicator.username == actor.username
    )
    if not involved and actor.role not in (Role.ADMIN, Role.RESEARCHER):
        raise PermissionDenied(
            f"case {case.id} is seen by its readers, its adjudicator, admins and researchers"
        )
    return case


_READING_ROWS = [
    joinedload(Reading.reader),
    joinedload(Reading.case).joinedload(ReadingCase.readings).joinedload(Reading.reader),
    joinedload(Reading.case).joinedload(ReadingCase.adjudicator),
    joinedload(Reading.case)
    .joinedload(ReadingCase.prediction)
    .joinedload(Prediction.model_version),
]
_CASE_ROWS = [
    joinedload(ReadingCase.readings).joinedload(Reading.reader),
    joinedload(ReadingCase.adjudicator),
    joinedload(ReadingCase.prediction).joinedload(Prediction.series),
    joinedload(ReadingCase.prediction).joinedload(Prediction.model_version),
]


# --- lists (reads) ----------------------------------------------------------------------------


def my_queue(session: Session, actor: Actor, *, include_submitted: bool = False) -> list[Reading]:
    """``actor``'s readings of open cases, the soonest due first (no due date last)."""
    query = (
        select(Reading)
        .join(ReadingCase, Reading.case_id == ReadingCase.id)
        .join(User, Reading.reader_id == User.id)
        .where(User.username == actor.username, ReadingCase.state == ReadingCaseState.OPEN)
        .options(*_READING_ROWS)
        .order_by(ReadingCase.due_date.is_(None), ReadingCase.due_date, ReadingCase.id)
    )
    if not include_submitted:
        query = query.where(Reading.submitted_at.is_(None))
    return list(session.scalars(query).unique())


def adjudication_queue(session: Session, actor: Actor) -> list[ReadingCase]:
    """Open cases ``actor`` adjudicates (an admin: also the cases without an adjudicator)."""
    query = (
        select(ReadingCase)
        .outerjoin(User, ReadingCase.adjudicator_id == User.id)
        .where(ReadingCase.state == ReadingCaseState.OPEN)
        .options(*_CASE_ROWS)
        .order_by(ReadingCase.due_date.is_(None), ReadingCase.due_date, ReadingCase.id)
    )
    mine = User.username == actor.username
    # an admin adjudicates the cases without an adjudicator, except those they read
    reader = aliased(User)
    read_by_me = (
        select(Reading.id)
        .join(reader, Reading.reader_id == reader.id)
        .where(Reading.case_id == ReadingCase.id, reader.username == actor.username)
        .exists()
    )
    query = (
        query.where(mine | (ReadingCase.adjudicator_id.is_(None) & ~read_by_me))
        if actor.role == Role.ADMIN
        else query.where(mine)
    )
    return list(session.scalars(query).unique())


def worklist(session: Session, *, state: str = "open", limit: int = 200) -> list[ReadingCase]:
    """Cases in ``state`` (``open``, ``signed_off``, ``cancelled`` or ``all``), newest first."""
    check_one_of("state", state, WORKLIST_STATES)
    query = select(ReadingCase).options(*_CASE_ROWS).order_by(ReadingCase.id.desc()).limit(limit)
    if state != "all":
        query = query.where(ReadingCase.state == ReadingCaseState(state))
    return list(session.scalars(query).unique())


# --- the worklist (writes) --------------------------------------------------------------------


def _reviewer(session: Session, username: str, what: str) -> User:
    user = users.get_user(session, username)
    if not user.active:
        raise InputError(f"{what} {username!r} is deactivated; choose an active user")
    if user.role not in REVIEWERS:
        raise InputError(
            f"{what} {username!r} is a {user.role.value}; readers and adjudicators need a "
            "reviewing role (clinician or admin)"
        )
    return user


def assign(
    platform: Platform,
    actor: Actor,
    *,
    prediction_id: int,
    readers: list[str],
    adjudicator: str | None = None,
    due_date: date | None = None,
    note: str = "",
    via: str | None = None,
) -> ReadingCase:
    """Put a prediction on the worklist for ``readers`` (and ``adjudicator``); audited.

    :raises PermissionDenied: ``actor`` is not a researcher or admin.
    :raises NotFound: there is no such prediction.
    :raises InputError: no reader, a reader named twice, more than :data:`MAX_READERS`, a name
        that is no active reviewer, or an adjudicator who is also a reader.
    :raises Conflict: the prediction already has an open case.
    """
    require_role(actor, ASSIGNERS, "assign predictions to readers")
    names = [n.strip() for n in readers if n.strip()]
    if not names:
        raise InputError("name at least one reader")
    if len(set(names)) != len(names):
        raise InputError("a reader is named twice; each reader reads a case once")
    if len(names) > MAX_READERS:
        raise InputError(f"{len(names)} readers; a case has at most {MAX_READERS}")
    adjudicator = (adjudicator or "").strip() or None
    if adjudicator is not None and adjudicator in names:
        raise InputError(f"{adjudicator!r} is a reader; the adjudicator must be someone else")
    with platform.sessions.begin() as session:
        prediction = get_row(session, Prediction, prediction_id, "prediction")
        open_case = session.scalar(
            select(ReadingCase.id).where(
                ReadingCase.prediction_id == prediction.id,
                ReadingCase.state == ReadingCaseState.OPEN,
            )
        )
        if open_case is not None:
            raise Conflict(
                f"prediction {prediction.id} is already on the worklist (case {open_case}); "
                "cancel that case first to assign it again"
            )
        case = ReadingCase(
            prediction_id=prediction.id,
            adjudicator=_reviewer(session, adjudicator, "adjudicator") if adjudicator else None,
            due_date=due_date,
            note=note.strip(),
            created_by=actor.username,
        )
        case.readings = [Reading(reader=_reviewer(session, n, "reader")) for n in names]
        session.add(case)
        session.flush()
        audit.record(
            session,
            actor.username,
            "reading.assign",
            f"reading_case:{case.id}",
            prediction=prediction.id,
            readers=names,
            adjudicator=adjudicator,
            due_date=due_date.isoformat() if due_date else None,
            **({"via": via} if via else {}),
        )
    return case


def cancel_case(
    platform: Platform, actor: Actor, case_id: int, *, via: str | None = None
) -> ReadingCase:
    """Withdraw an open case from the worklist (its readings stay, read-only); audited.

    :raises Conflict: the case is not open.
    """
    require_role(actor, ASSIGNERS, "cancel reading cases")
    with platform.sessions.begin() as session:
        case = get_row(session, ReadingCase, case_id, "reading case")
        if case.state != ReadingCaseState.OPEN:
            raise Conflict(f"case {case.id} is {case.state.value}; only an open case is cancelled")
        case.state = ReadingCaseState.CANCELLED
        audit.record(
            session,
            actor.username,
            "reading.cancel",
            f"reading_case:{case.id}",
            **({"via": via} if via else {}),
        )
    return case


# --- a reader at work -------------------------------------------------------------------------


def _own_open_reading(session: Session, actor: Actor, reading_id: int) -> Reading:
    """``actor``'s own reading of an open case, not yet submitted."""
    require_role(actor, REVIEWERS, "read cases")
    reading = get_row(session, Reading, reading_id, "reading", options=_READING_ROWS)
    if reading.reader.username != actor.username:
        raise PermissionDenied(f"reading {reading.id} is {reading.reader.username}'s, not yours")
    if reading.case.state != ReadingCaseState.OPEN:
        raise Conflict(
            f"case {reading.case_id} is {reading.case.state.value}; it takes no more work"
        )
    if reading.submitted_at is not None:
        raise Conflict(f"reading {reading.id} is submitted; a submitted reading is final")
    return reading


def _copy_prediction(platform: Platform, reading: Reading) -> str:
    prediction = reading.case.prediction
    source = platform.resolve(prediction.mask_path)
    if not source.is_file():
        raise NotFound(f"the mask of prediction {prediction.id} is missing under RADSEG_HOME")
    target = platform.path("readings", f"case-{reading.case_id}", f"reading-{reading.id}.nii.gz")
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)
    return platform.relative(target)


def open_reading(
    platform: Platform, actor: Actor, reading_id: int, *, via: str | None = None
) -> Reading:
    """``actor`` opens their reading: the first time, their copy of the prediction is made and
    the clock starts; audited (``reading.open``, a view of patient data).

    :raises PermissionDenied: it is someone else's reading.
    :raises Conflict: the case is closed or the reading submitted.
    """
    with platform.sessions.begin() as session:
        reading = _own_open_reading(session, actor, reading_id)
        if not reading.mask_path:
            reading.mask_path = _copy_prediction(platform, reading)
        if reading.opened_at is None:
            reading.opened_at = utcnow()
        audit.record(
            session,
            actor.username,
            "reading.open",
            f"reading:{reading.id}",
            case=reading.case_id,
            prediction=reading.case.prediction_id,
            **({"via": via} if via else {}),
        )
    return reading


def reading_classes(prediction: Prediction, labels: np.ndarray) -> list[dict[str, Any]]:
    """The classes a reader may paint: the model's, and any label value the mask holds."""
    return [e.to_dict() for e in legend(prediction_classes(prediction), labels_present(labels))]


def paint_mask(
    platform: Platform,
    prediction: Prediction,
    stored: str,
    strokes: list[dict[str, Any]],
) -> int:
    """Paint ``strokes`` onto the mask file ``stored`` (a reading or an adjudication draft, on
    the prediction's grid), within the settings' limits; returns the number of strokes."""
    labels, geometry = read_volume(platform.resolve(stored))
    labels = labels.astype(np.uint8)
    entries = legend(prediction_classes(prediction), labels_present(labels))
    settings = platform.settings
    parsed = parse_strokes(
        strokes, labels.shape, [e.id for e in entries], max_points=settings.correction_max_points
    )
    painted = paint(labels, parsed, max_area=settings.correction_max_area)
    write_volume(platform.resolve(stored), painted, geometry)
    return len(parsed)


def paint_reading(
    platform: Platform,
    actor: Actor,
    reading_id: int,
    *,
    strokes: list[dict[str, Any]],
    via: str | None = None,
) -> Reading:
    """Paint brush/eraser ``strokes`` (``{z, class_id, radius, points}``, class 0 erases) onto
    ``actor``'s copy; audited (``reading.paint``).

    :raises InputError: a stroke does not fit the volume or its classes, or the save is over
        the settings' limits (see :mod:`radseg.workflows.corrections`).
    """
    with platform.sessions.begin() as session:
        reading = _own_open_reading(session, actor, reading_id)
        if not reading.mask_path:
            reading.mask_path = _copy_prediction(platform, reading)
            reading.opened_at = reading.opened_at or utcnow()
        count = paint_mask(platform, reading.case.prediction, reading.mask_path, strokes)
        reading.strokes += count
        audit.record(
            session,
            actor.username,
            "reading.paint",
            f"reading:{reading.id}",
            case=reading.case_id,
            strokes=count,
            slices=sorted({int(s["z"]) for s in strokes}),
            **({"via": via} if via else {}),
        )
    return reading


def submit_reading(
    platform: Platform,
    actor: Actor,
    reading_id: int,
    *,
    decision: str,
    comment: str = "",
    via: str | None = None,
) -> Reading:
    """``actor`` submits their reading with a decision (``accepted``, ``needs_edit``,
    ``rejected``); final. Records the time since the first opening; once two or more readers
    have submitted, queues an ``agreement`` job. Audited (``reading.submit``).

    :raises InputError: an unknown decision.
    """
    if decision not in {d.value for d in DECISIONS}:
        names = ", ".join(d.value for d in DECISIONS)
        raise InputError(f"decision must be one of: {names}; got {decision!r}")
    with platform.sessions.begin() as session:
        reading = _own_open_reading(session, actor, reading_id)
        if not reading.mask_path:  # submitted without opening: the prediction as it is
            reading.mask_path = _copy_prediction(platform, reading)
        now = utcnow()
        reading.opened_at = reading.opened_at or now
        reading.submitted_at = now
        reading.seconds = max(0.0, (now - reading.opened_at).total_seconds())
        reading.decision = ReviewStatus(decision)
        reading.comment = comment.strip()
        session.flush()
        submitted = [r for r in reading.case.readings if r.submitted_at is not None]
        job = None
        if len(submitted) >= 2:
            job = queue_job(
                session,
                platform,
                actor,
                AGREEMENT_KIND,
                {"case_id": reading.case_id},
                target=f"reading_case:{reading.case_id}",
            )
        audit.record(
            session,
            actor.username,
            "reading.submit",
            f"reading:{reading.id}",
            case=reading.case_id,
            decision=decision,
            seconds=round(reading.seconds, 1),
            agreement_job=job.id if job else None,
            **({"via": via} if via else {}),
        )
    return reading


def record_view(platform: Platform, actor: Actor, target: str, *, via: str | None = None) -> None:
    """Audit that ``actor`` looked at a case or a reading (``reading.view``: patient data)."""
    require_role(actor, VIEWERS, "look at readings")
    with platform.sessions.begin() as session:
        audit.record(
            session, actor.username, "reading.view", target, **({"via": via} if via else {})
        )
