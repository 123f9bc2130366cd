"""Reader pages: my readings, the worklist, a case (agreement and adjudication), a reading in
the viewer, the readers' statistics, and the overlay images of readings and consensus masks.

Thin: the use cases of :mod:`radseg.workflows.readings` and
:mod:`radseg.workflows.adjudication` check the roles and the blinding; every overlay image
asks them again (a reading's mask is never served to someone who may not see it), and is
sent ``no-store``, since a reader's copy changes with each save. Each overlay has a twin for the
three planes (``.../overlay/<plane>/<index>.png``, as in :mod:`radseg.web.slices`, cut by
:mod:`radseg.web.plane_cuts`) under the same checks: the readers' viewer has three planes too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from radseg.db.models import ReadingCase, ReadingCaseState, Role, User
from radseg.errors import InputError
from radseg.imaging import channels
from radseg.imaging.legend import labels_present, legend, prediction_classes
from radseg.roles import REVIEWERS, VIEWERS
from radseg.web import plane_cuts, render
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db, volumes
from radseg.web.outcomes import form_refusals
from radseg.web.schemas import AssignForm, ReadingStrokes, SubmitReading, due_date
from radseg.web.shapes import reading_to_dict
from radseg.web.validation import form_fields, form_id, json_body
from radseg.workflows import adjudication, readings
from radseg.workflows.readings import ASSIGNERS

bp = Blueprint("readings", __name__)

PRESETS = tuple(
    (name.replace("_", " ").capitalize(), level, width)
    for name, (width, level) in channels.WINDOW_PRESETS.items()
)
#: the consensus and working masks of a case that have an overlay
CASE_MASKS = ("staple", "majority", "draft")


# --- overlay images ---------------------------------------------------------------------------


def _overlay(
    path: Path,
    classes: list[Any],
    z: int,
    what: str,
    pick: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Any:
    """Slice ``z`` of a mask drawn as an overlay, or the plane ``pick`` cuts out of it."""
    hidden = []
    raw = request.args.get("hide", "")
    try:
        hidden = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        abort(400, f"hide must be class ids separated by commas, got {raw!r}")
    mode = request.args.get("mode", "fill")
    if mode not in ("fill", "outline"):
        abort(400, f"a reading's overlay is drawn with mode fill or outline; got {mode!r}")
    db().rollback()  # the rows are read and checked; hold no transaction while rendering
    try:
        volume = volumes().get(path)
    except FileNotFoundError:
        abort(404, f"the {what} file is missing under RADSEG_HOME")
    if pick is None and not 0 <= z < volume.shape[0]:
        abort(404, f"{what} has slices 0 to {volume.shape[0] - 1}; there is no slice {z}")
    cut = volume[z] if pick is None else pick(volume)
    entries = tuple(legend(classes, labels_present(volume)))
    draw = render.labels_drawer(mode)
    data = render.png_bytes(draw(cut, entries, hidden=tuple(hidden)))
    response = Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/readings/<int:reading_id>/overlay/<int:z>.png")
@roles_required(*VIEWERS)
def reading_overlay(reading_id: int, z: int) -> Any:
    reading = readings.visible_reading(db(), current_actor(), reading_id)
    prediction = reading.case.prediction
    stored = reading.mask_path or prediction.mask_path  # not opened yet: the prediction
    path = current_platform().resolve(stored)
    return _overlay(path, prediction_classes(prediction), z, f"reading {reading_id}")


@bp.get("/readings/<int:reading_id>/overlay/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def reading_overlay_plane(reading_id: int, plane: str, index: int) -> Any:
    """A reading's mask in the axial, coronal or sagittal plane, with the blinding of its slices."""
    reading = readings.visible_reading(db(), current_actor(), reading_id)
    prediction = reading.case.prediction
    path = current_platform().resolve(reading.mask_path or prediction.mask_path)
    what = f"reading {reading_id}"
    _, cut = plane_cuts.plane_of(plane, index, prediction.series.geometry, what)
    return _overlay(path, prediction_classes(prediction), index, what, cut)


def _case_mask(case_id: int, which: str) -> tuple[ReadingCase, Path]:
    """A case a person may see, and the path of its mask ``which`` (its blinding checked)."""
    if which not in CASE_MASKS:
        abort(404, f"a case has the overlays {', '.join(CASE_MASKS)}; not {which!r}")
    actor = current_actor()
    case = readings.visible_case(db(), actor, case_id)
    readings.check_may_see_submitted(case, actor)
    return case, adjudication.case_mask_path(current_platform(), case, which)


@bp.get("/worklist/<int:case_id>/overlay/<which>/<int:z>.png")
@roles_required(*VIEWERS)
def case_overlay(case_id: int, which: str, z: int) -> Any:
    case, path = _case_mask(case_id, which)
    return _overlay(path, prediction_classes(case.prediction), z, f"case {case_id}'s {which}")


@bp.get("/worklist/<int:case_id>/overlay/<which>/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def case_overlay_plane(case_id: int, which: str, plane: str, index: int) -> Any:
    case, path = _case_mask(case_id, which)
    what = f"case {case_id}'s {which}"
    _, cut = plane_cuts.plane_of(plane, index, case.prediction.series.geometry, what)
    return _overlay(path, prediction_classes(case.prediction), index, what, cut)


# --- a reader's pages -------------------------------------------------------------------------


@bp.get("/readings")
@roles_required(*REVIEWERS)
def my_readings() -> Any:
    actor = current_actor()
    return render_template(
        "readings.html",
        readings=readings.my_queue(db(), actor, include_submitted=True),
        adjudications=readings.adjudication_queue(db(), actor),
    )


def _viewer_context(case: ReadingCase, overlay_template: str) -> dict[str, Any]:
    series = case.prediction.series
    known = prediction_classes(case.prediction)
    planes = plane_cuts.viewer_planes_of(series)
    return {
        "series": series,
        "planes": planes,
        "voxel_url": url_for("slices.voxel", series_id=series.id),
        "size": series.geometry.get("size", [0, 0, 0]),
        "spacing": series.geometry.get("spacing", [1.0, 1.0, 1.0]),
        "presets": PRESETS,
        "legend": legend(known),
        "overlay_tpl": overlay_template,
        "slice_tpl": url_for("slices.slice_png", series_id=series.id, z=0).replace(
            "/0.png", "/{z}.png"
        ),
    }


@bp.get("/readings/<int:reading_id>")
@roles_required(*VIEWERS)
def reading_page(reading_id: int) -> Any:
    """A reader's own open reading (opened: the copy is made, the clock starts), or a
    submitted reading for someone the blinding rule lets see it (read-only)."""
    actor = current_actor()
    reading = readings.visible_reading(db(), actor, reading_id)
    editable = (
        reading.reader.username == actor.username
        and reading.submitted_at is None
        and reading.case.state == ReadingCaseState.OPEN
        and actor.may(REVIEWERS)
    )
    if editable:
        reading = readings.open_reading(current_platform(), actor, reading_id)
        reading = readings.visible_reading(db(), actor, reading_id)
    else:
        readings.record_view(current_platform(), actor, f"reading:{reading.id}")
    template = url_for("readings.reading_overlay", reading_id=reading.id, z=0)
    return render_template(
        "reading.html",
        reading=reading,
        case=reading.case,
        editable=editable,
        decisions=readings.DECISIONS,
        correct_url=url_for("readings.paint_reading", reading_id=reading.id) if editable else "",
        **_viewer_context(reading.case, template.replace("/0.png", "/{z}.png")),
    )


@bp.post("/readings/<int:reading_id>/strokes")
@roles_required(*REVIEWERS)
def paint_reading(reading_id: int) -> Any:
    """The viewer's brush: JSON ``{"strokes": [...]}`` → the reading."""
    data = json_body(ReadingStrokes)
    reading = readings.paint_reading(
        current_platform(),
        current_actor(),
        reading_id,
        strokes=[s.model_dump() for s in data.strokes],
    )
    return jsonify(reading_to_dict(reading, show_work=True))


@bp.post("/readings/<int:reading_id>/submit")
@roles_required(*REVIEWERS)
@form_refusals("readings.my_readings")
def submit_reading(reading_id: int) -> Any:
    data = form_fields(SubmitReading)
    reading = readings.submit_reading(
        current_platform(),
        current_actor(),
        reading_id,
        decision=data.decision,
        comment=data.comment or "",
    )
    flash(f"Reading {reading.id} submitted ({data.decision.replace('_', ' ')}).", "info")
    return redirect(url_for("readings.case_page", case_id=reading.case_id), 303)


# --- the worklist and a case ------------------------------------------------------------------


@bp.get("/worklist")
@roles_required(*ASSIGNERS)
def worklist() -> Any:
    state = request.args.get("state", "open")
    if state not in readings.WORKLIST_STATES:
        state = "open"
    reviewers = db().scalars(
        select(User.username)
        .where(User.role.in_(REVIEWERS), User.active.is_(True))
        .order_by(User.username)
    )
    return render_template(
        "worklist.html",
        cases=readings.worklist(db(), state=state),
        state=state,
        states=readings.WORKLIST_STATES,
        reviewers=list(reviewers),
        prediction=request.args.get("prediction", ""),
    )


@bp.post("/worklist")
@roles_required(*ASSIGNERS)
@form_refusals("readings.worklist")
def assign() -> Any:
    """The worklist's form: a prediction id, reader checkboxes, an adjudicator, a due date."""
    prediction_id = form_id("prediction_id")
    if prediction_id is None:
        raise InputError("prediction_id: give the prediction's id")
    fields = form_fields(AssignForm)
    case = readings.assign(
        current_platform(),
        current_actor(),
        prediction_id=prediction_id,
        readers=[n[:80] for n in request.form.getlist("readers")],
        adjudicator=fields.adjudicator,
        due_date=due_date(fields.due_date),
        note=fields.note or "",
    )
    flash(f"Case {case.id}: prediction {case.prediction_id} assigned.", "info")
    return redirect(url_for("readings.case_page", case_id=case.id), 303)


@bp.get("/worklist/<int:case_id>")
@roles_required(*VIEWERS)
def case_page(case_id: int) -> Any:
    """A case: its readers and their state; with the right to see submitted work, the
    agreement and the masks side by side; for its adjudicator, the adjudication."""
    actor = current_actor()
    case = readings.visible_case(db(), actor, case_id)
    show_work = readings.may_see_submitted(case, actor)
    readings.record_view(current_platform(), actor, f"reading_case:{case.id}")
    adjudicates = case.state == ReadingCaseState.OPEN and (
        (case.adjudicator is not None and case.adjudicator.username == actor.username)
        or (case.adjudicator is None and actor.role == Role.ADMIN)
    )
    waiting = [r.reader.username for r in case.readings if r.submitted_at is None]
    gallery: list[tuple[str, str, str]] = []  # (label, overlay template, start-from source)
    if show_work:

        def template(url: str) -> str:
            return url.replace("/0.png", "/{z}.png")

        for r in case.readings:
            if r.submitted_at is not None:
                gallery.append(
                    (
                        f"Reader {r.reader.username}",
                        template(url_for("readings.reading_overlay", reading_id=r.id, z=0)),
                        f"reading:{r.id}",
                    )
                )
        if adjudication.agreement_is_current(case):
            for which, label in (("staple", "STAPLE consensus"), ("majority", "Majority vote")):
                overlay = url_for("readings.case_overlay", case_id=case.id, which=which, z=0)
                gallery.append((label, template(overlay), which))
        overlay = url_for("slices.overlay_png", prediction_id=case.prediction_id, z=0)
        gallery.append(("Prediction", template(overlay), "prediction"))
    draft_tpl = url_for("readings.case_overlay", case_id=case.id, which="draft", z=0)
    return render_template(
        "reading_case.html",
        case=case,
        show_work=show_work,
        adjudicates=adjudicates,
        waiting=waiting,
        agreement_current=adjudication.agreement_is_current(case),
        gallery=gallery,
        class_names=(case.agreement or {}).get("class_names", {}),
        can_assign=actor.may(ASSIGNERS),
        correct_url=url_for("readings.paint_adjudication", case_id=case.id),
        **_viewer_context(case, draft_tpl.replace("/0.png", "/{z}.png")),
    )


@bp.post("/worklist/<int:case_id>/adjudication")
@roles_required(*REVIEWERS)
@form_refusals("readings.my_readings")
def start_adjudication(case_id: int) -> Any:
    adjudication.start_adjudication(
        current_platform(), current_actor(), case_id, source=request.form.get("source", "")[:40]
    )
    return redirect(url_for("readings.case_page", case_id=case_id) + "#adjudication", 303)


@bp.post("/worklist/<int:case_id>/adjudication/strokes")
@roles_required(*REVIEWERS)
def paint_adjudication(case_id: int) -> Any:
    """The viewer's brush on the adjudicator's draft: JSON ``{"strokes": [...]}``."""
    data = json_body(ReadingStrokes)
    case = adjudication.paint_adjudication(
        current_platform(),
        current_actor(),
        case_id,
        strokes=[s.model_dump() for s in data.strokes],
    )
    return jsonify(case_id=case.id, started_from=case.draft_source)


@bp.post("/worklist/<int:case_id>/sign-off")
@roles_required(*REVIEWERS)
@form_refusals("readings.my_readings")
def sign_off(case_id: int) -> Any:
    label_set = adjudication.sign_off(current_platform(), current_actor(), case_id)
    flash(
        f"Signed off: label version {label_set.version} of the series is the adjudicated mask.",
        "info",
    )
    return redirect(url_for("readings.case_page", case_id=case_id), 303)


@bp.post("/worklist/<int:case_id>/cancel")
@roles_required(*ASSIGNERS)
@form_refusals("readings.worklist")
def cancel(case_id: int) -> Any:
    readings.cancel_case(current_platform(), current_actor(), case_id)
    flash(f"Case {case_id} is cancelled.", "info")
    return redirect(url_for("readings.worklist"), 303)


@bp.get("/readers")
@roles_required(*VIEWERS)
def readers_page() -> Any:
    return render_template(
        "readers.html", stats=adjudication.reader_statistics(db(), current_actor())
    )
