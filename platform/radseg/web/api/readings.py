"""``/api/worklist``, ``/api/readings``, ``/api/readers``: several readers per prediction.

Thin: the use cases of :mod:`radseg.workflows.readings` and
:mod:`radseg.workflows.adjudication` check the roles, the blinding and the states; their typed
errors become statuses in :mod:`radseg.web.errors` (another reader's unsubmitted work: 403).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify

from radseg.errors import InputError
from radseg.roles import REVIEWERS, VIEWERS
from radseg.web.api import VIA, bp
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.schemas import (
    AssignRequest,
    ReadingStrokes,
    StartAdjudication,
    SubmitReading,
    WorklistQuery,
    due_date,
)
from radseg.web.shapes import label_set_to_dict, reading_case_to_dict, reading_to_dict
from radseg.web.validation import bad_request, json_body, query_args
from radseg.workflows import adjudication, readings
from radseg.workflows.readings import ASSIGNERS


def _case_view(case_id: int, status: int = 200) -> Any:
    actor = current_actor()
    case = readings.visible_case(db(), actor, case_id)
    shown = reading_case_to_dict(
        case, show_work=readings.may_see_submitted(case, actor), username=actor.username
    )
    return jsonify(shown), status


# --- the worklist -----------------------------------------------------------------------------


@bp.get("/worklist")
@roles_required(*ASSIGNERS)
def worklist() -> Any:
    args = query_args(WorklistQuery)
    actor = current_actor()
    rows = readings.worklist(db(), state=args.state)
    return jsonify(
        cases=[reading_case_to_dict(c, show_work=True, username=actor.username) for c in rows]
    )


@bp.post("/worklist")
@roles_required(*ASSIGNERS)
def assign() -> Any:
    data = json_body(AssignRequest)
    try:
        due = due_date(data.due_date)
    except InputError as exc:
        bad_request(exc)
    case = readings.assign(
        current_platform(),
        current_actor(),
        prediction_id=data.prediction_id,
        readers=list(data.readers),
        adjudicator=data.adjudicator,
        due_date=due,
        note=data.note or "",
        via=VIA,
    )
    return _case_view(case.id, 201)


@bp.get("/worklist/<int:case_id>")
@roles_required(*VIEWERS)
def case(case_id: int) -> Any:
    return _case_view(case_id)


@bp.post("/worklist/<int:case_id>/cancel")
@roles_required(*ASSIGNERS)
def cancel(case_id: int) -> Any:
    readings.cancel_case(current_platform(), current_actor(), case_id, via=VIA)
    return _case_view(case_id)


@bp.get("/worklist/<int:case_id>/agreement")
@roles_required(*VIEWERS)
def agreement(case_id: int) -> Any:
    """The agreement report; 403 for a reader who has not submitted."""
    actor = current_actor()
    found = readings.visible_case(db(), actor, case_id)
    readings.check_may_see_submitted(found, actor)
    return jsonify(
        case_id=found.id,
        current=adjudication.agreement_is_current(found),
        agreement=found.agreement,
    )


@bp.post("/worklist/<int:case_id>/adjudication")
@roles_required(*REVIEWERS)
def start_adjudication(case_id: int) -> Any:
    data = json_body(StartAdjudication)
    adjudication.start_adjudication(
        current_platform(), current_actor(), case_id, source=data.source, via=VIA
    )
    return _case_view(case_id)


@bp.post("/worklist/<int:case_id>/adjudication/strokes")
@roles_required(*REVIEWERS)
def paint_adjudication(case_id: int) -> Any:
    data = json_body(ReadingStrokes)
    adjudication.paint_adjudication(
        current_platform(),
        current_actor(),
        case_id,
        strokes=[s.model_dump() for s in data.strokes],
        via=VIA,
    )
    return _case_view(case_id)


@bp.post("/worklist/<int:case_id>/sign-off")
@roles_required(*REVIEWERS)
def sign_off(case_id: int) -> Any:
    label_set = adjudication.sign_off(current_platform(), current_actor(), case_id, via=VIA)
    return jsonify(label_set_to_dict(label_set)), 201


# --- a reader's own queue ---------------------------------------------------------------------


@bp.get("/readings")
@roles_required(*REVIEWERS)
def my_readings() -> Any:
    rows = readings.my_queue(db(), current_actor(), include_submitted=True)
    return jsonify(readings=[reading_to_dict(r, show_work=True) for r in rows])


@bp.get("/readings/<int:reading_id>")
@roles_required(*VIEWERS)
def reading(reading_id: int) -> Any:
    found = readings.visible_reading(db(), current_actor(), reading_id)
    return jsonify(reading_to_dict(found, show_work=True))


@bp.post("/readings/<int:reading_id>/open")
@roles_required(*REVIEWERS)
def open_reading(reading_id: int) -> Any:
    found = readings.open_reading(current_platform(), current_actor(), reading_id, via=VIA)
    return jsonify(reading_to_dict(found, show_work=True))


@bp.post("/readings/<int:reading_id>/strokes")
@roles_required(*REVIEWERS)
def paint_reading(reading_id: int) -> Any:
    data = json_body(ReadingStrokes)
    found = readings.paint_reading(
        current_platform(),
        current_actor(),
        reading_id,
        strokes=[s.model_dump() for s in data.strokes],
        via=VIA,
    )
    return jsonify(reading_to_dict(found, show_work=True))


@bp.post("/readings/<int:reading_id>/submit")
@roles_required(*REVIEWERS)
def submit_reading(reading_id: int) -> Any:
    data = json_body(SubmitReading)
    found = readings.submit_reading(
        current_platform(),
        current_actor(),
        reading_id,
        decision=data.decision,
        comment=data.comment or "",
        via=VIA,
    )
    return jsonify(reading_to_dict(found, show_work=True))


@bp.get("/readers")
@roles_required(*VIEWERS)
def readers() -> Any:
    return jsonify(adjudication.reader_statistics(db(), current_actor()))
