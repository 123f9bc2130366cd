"""Agreement between a case's readers, adjudication, sign-off, and the readers' statistics.

* :func:`compute_agreement` (the ``agreement`` job, queued by each submission once two readers
  have submitted) measures :mod:`radseg.imaging.agreement` over the submitted readings and
  stores the STAPLE and majority-vote consensus masks beside them.
* The adjudicator (an admin, when the case names none) starts from one mask — a reader's, a
  consensus or the prediction — (:func:`start_adjudication`), paints it
  (:func:`paint_adjudication`) and signs it off (:func:`sign_off`): it becomes the series'
  next label version with ``source = "adjudication"`` and a ``provenance`` naming the readers,
  the adjudicator, the method (the mask it started from), the prediction and its model
  version. The retrain loop treats it as a reviewed label version.
* :func:`reader_statistics` feeds the readers page: agreement per reader per class over the
  cases that every reader has submitted (so no blinded work shows), time per case, cases per
  week.

Every action is audited (``reading.agreement``, ``reading.adjudicate.start``,
``reading.adjudicate.paint``, ``reading.sign_off``).
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from radseg import audit
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import (
    LabelSet,
    Prediction,
    Reading,
    ReadingCase,
    ReadingCaseState,
    Role,
)
from radseg.errors import Conflict, InputError, NotFound, PermissionDenied
from radseg.imaging.agreement import agreement
from radseg.imaging.legend import labels_present, legend, prediction_classes
from radseg.imaging.volumes import read_volume, write_volume
from radseg.roles import REVIEWERS, VIEWERS, Actor, require_role
from radseg.storage import atomic_path
from radseg.workflows.lookup import get_row
from radseg.workflows.quality import evaluate_after, record_correction_size
from radseg.workflows.readings import paint_mask
from radseg.workflows.retrain import after_reviewed_label_version

#: the masks an adjudication can start from, besides ``reading:<id>``
CONSENSUS_SOURCES = ("staple", "majority")
SOURCES = (*CONSENSUS_SOURCES, "prediction")
#: what a signed-off label set's ``source`` says
ADJUDICATED = "adjudication"

_CASE_ROWS = [
    joinedload(ReadingCase.readings).joinedload(Reading.reader),
    joinedload(ReadingCase.adjudicator),
    joinedload(ReadingCase.prediction).joinedload(Prediction.series),
    joinedload(ReadingCase.prediction).joinedload(Prediction.model_version),
]


def _case(session: Session, case_id: int) -> ReadingCase:
    return get_row(session, ReadingCase, case_id, "reading case", options=_CASE_ROWS)


def _submitted(case: ReadingCase) -> list[Reading]:
    return [r for r in case.readings if r.submitted_at is not None]


def agreement_is_current(case: ReadingCase) -> bool:
    """The stored agreement covers exactly the case's submitted readings."""
    done = sorted(r.id for r in _submitted(case))
    return case.agreement is not None and sorted(case.agreement.get("readings", [])) == done


# --- agreement (a job) ------------------------------------------------------------------------


def compute_agreement(
    platform: Platform,
    case_id: int,
    *,
    actor: str = "worker",
    progress: Callable[[float, str], None] | None = None,
) -> ReadingCase:
    """Measure agreement over case ``case_id``'s submitted readings; store the report and the
    two consensus masks (``readings/case-<id>/staple-<key>.nii.gz``, ``majority-<key>``, the
    key naming the readings combined); audited.

    :raises NotFound: no such case, or a mask file is missing.
    :raises Conflict: fewer than two readings are submitted.
    """
    with platform.sessions() as session:
        case = _case(session, case_id)
        done = _submitted(case)
        if len(done) < 2:
            raise Conflict(
                f"case {case.id} has {len(done)} submitted reading(s); agreement needs 2"
            )
        names = [r.reader.username for r in done]
        ids = [r.id for r in done]
        paths = [platform.resolve(r.mask_path) for r in done]
        prediction_path = platform.resolve(case.prediction.mask_path)
        known = prediction_classes(case.prediction)
        prediction_id = case.prediction_id
    for path in [*paths, prediction_path]:
        if not path.is_file():
            raise NotFound(
                f"case {case_id}: the mask file {path.name} is missing under RADSEG_HOME"
            )
    if progress:
        progress(0.1, f"reading {len(paths)} masks")
    masks = [read_volume(p)[0].astype(np.uint8) for p in paths]
    predicted, geometry = read_volume(prediction_path)
    predicted = predicted.astype(np.uint8)
    present = sorted(set().union(*(labels_present(m) for m in [*masks, predicted])))
    class_ids = [e.id for e in legend(known, present) if e.id != 0]
    if progress:
        progress(0.3, "STAPLE and majority vote")
    result = agreement(names, masks, predicted, class_ids)
    # Named by the readings they combine: two jobs of one case (two readers submitting at
    # once) never write the same file, and the report stored last is never older than the one
    # it replaces (checked under the row's lock below).
    key = hashlib.sha1(",".join(map(str, ids)).encode(), usedforsecurity=False).hexdigest()[:12]
    stored = {}
    for name, volume in (("staple", result.staple), ("majority", result.majority)):
        target = platform.path("readings", f"case-{case_id}", f"{name}-{key}.nii.gz")
        write_volume(target, volume, geometry)
        stored[name] = platform.relative(target)
    with platform.sessions.begin() as session:
        locked = session.scalars(
            select(ReadingCase).where(ReadingCase.id == case_id).with_for_update()
        ).one()
        if locked.agreement and len(locked.agreement.get("readings", [])) > len(ids):
            return _case(session, case_id)  # a later job already measured more readings
        case = _case(session, case_id)
        case.agreement = {
            **result.report,
            "readings": ids,
            "consensus": stored,
            "class_names": {str(e.id): e.name for e in legend(known, present)},
            "computed_at": utcnow().isoformat(),
        }
        audit.record(
            session,
            actor,
            "reading.agreement",
            f"reading_case:{case.id}",
            prediction=prediction_id,
            readings=ids,
            mean_pairwise_dice={
                c: v["mean_pairwise_dice"] for c, v in result.report["per_class"].items()
            },
        )
    if progress:
        progress(1.0, "agreement stored")
    return case


# --- adjudication -----------------------------------------------------------------------------


def _adjudicating_case(session: Session, actor: Actor, case_id: int) -> ReadingCase:
    """Case ``case_id``, open, every reading submitted, and ``actor`` its adjudicator."""
    require_role(actor, REVIEWERS, "adjudicate cases")
    case = _case(session, case_id)
    if case.adjudicator is not None:
        if case.adjudicator.username != actor.username:
            raise PermissionDenied(
                f"case {case.id} is adjudicated by {case.adjudicator.username}, not by you"
            )
    elif actor.role != Role.ADMIN:
        raise PermissionDenied(f"case {case.id} names no adjudicator; an admin adjudicates it")
    elif any(r.reader.username == actor.username for r in case.readings):
        raise PermissionDenied(
            f"you read case {case.id}; another admin adjudicates it (or assign an adjudicator)"
        )
    if case.state != ReadingCaseState.OPEN:
        raise Conflict(f"case {case.id} is {case.state.value}; it takes no more work")
    waiting = [r.reader.username for r in case.readings if r.submitted_at is None]
    if waiting:
        raise Conflict(
            f"case {case.id} waits for {len(waiting)} reader(s) to submit; adjudication starts "
            "when every reader has"
        )
    return case


def _source_path(case: ReadingCase, source: str) -> str:
    """The stored mask an adjudication starts from."""
    if source == "prediction":
        return case.prediction.mask_path
    if source in CONSENSUS_SOURCES:
        if not agreement_is_current(case):
            raise Conflict(
                f"case {case.id}'s consensus is not computed for every submitted reading yet "
                "(its agreement job has not run); start from a reading or the prediction, or "
                "wait for the job"
            )
        assert case.agreement is not None
        return str(case.agreement["consensus"][source])
    if source.startswith("reading:"):
        try:
            reading_id = int(source.removeprefix("reading:"))
        except ValueError:
            reading_id = -1
        reading = next((r for r in case.readings if r.id == reading_id), None)
        if reading is None:
            raise InputError(
                f"reading {source.removeprefix('reading:')!r} is not one of case {case.id}'s"
            )
        return reading.mask_path
    raise InputError(f"start from one of: {', '.join(SOURCES)} or reading:<id>; got {source!r}")


def start_adjudication(
    platform: Platform, actor: Actor, case_id: int, *, source: str, via: str | None = None
) -> ReadingCase:
    """The adjudicator starts (or starts over) from ``source``: ``reading:<id>``, ``staple``,
    ``majority`` or ``prediction``; audited (``reading.adjudicate.start``).

    :raises PermissionDenied: ``actor`` is not the case's adjudicator (an admin, for a case
        without one).
    :raises Conflict: the case is closed, a reader has not submitted, or a consensus is asked
        for before its agreement job has run.
    :raises InputError: an unknown source.
    """
    with platform.sessions.begin() as session:
        case = _adjudicating_case(session, actor, case_id)
        stored = platform.resolve(_source_path(case, source))
        if not stored.is_file():
            raise NotFound(f"the {source} mask of case {case.id} is missing under RADSEG_HOME")
        target = platform.path("readings", f"case-{case.id}", "adjudication.nii.gz")
        with atomic_path(target) as partial:
            shutil.copyfile(stored, partial)
        case.draft_path = platform.relative(target)
        case.draft_source = source
        audit.record(
            session,
            actor.username,
            "reading.adjudicate.start",
            f"reading_case:{case.id}",
            source=source,
            **({"via": via} if via else {}),
        )
    return case


def paint_adjudication(
    platform: Platform,
    actor: Actor,
    case_id: int,
    *,
    strokes: list[dict[str, Any]],
    via: str | None = None,
) -> ReadingCase:
    """Paint ``strokes`` onto the adjudicator's draft; audited (``reading.adjudicate.paint``).

    :raises Conflict: the adjudication has not started (no mask chosen to start from).
    """
    with platform.sessions.begin() as session:
        case = _adjudicating_case(session, actor, case_id)
        if not case.draft_path:
            raise Conflict(f"case {case.id}: choose the mask to start from first")
        count = paint_mask(platform, case.prediction, case.draft_path, strokes)
        audit.record(
            session,
            actor.username,
            "reading.adjudicate.paint",
            f"reading_case:{case.id}",
            strokes=count,
            slices=sorted({int(s["z"]) for s in strokes}),
            **({"via": via} if via else {}),
        )
    return case


def _classes(prediction: Prediction, labels: np.ndarray) -> list[dict[str, Any]]:
    """The model's class rows as they are (names, colours, SNOMED codes), and a row for any
    label value in the mask that the model does not name."""
    known = [dict(row) for row in prediction_classes(prediction)]
    named = {int(row["id"]) for row in known}
    extra = [e.to_dict() for e in legend([], labels_present(labels)) if e.id not in named]
    return known + extra


def sign_off(platform: Platform, actor: Actor, case_id: int, *, via: str | None = None) -> LabelSet:
    """The adjudicator signs the draft off: it becomes the series' next label version
    (``source = "adjudication"``, with its provenance) and the case closes; audited
    (``reading.sign_off``).

    :raises Conflict: no draft yet, the case is closed or a reader has not submitted.
    """
    with platform.sessions.begin() as session:
        case = _adjudicating_case(session, actor, case_id)
        if not case.draft_path:
            raise Conflict(f"case {case.id}: choose the mask to start from, edit it, then sign off")
        prediction = case.prediction
        series = prediction.series
        labels, geometry = read_volume(platform.resolve(case.draft_path))
        labels = labels.astype(np.uint8)
        version = (
            session.scalar(
                select(func.max(LabelSet.version)).where(LabelSet.series_id == series.id)
            )
            or 0
        ) + 1
        target = platform.path("labels", series.series_instance_uid, f"v{version}.nii.gz")
        write_volume(target, labels, geometry)
        readings = sorted(case.readings, key=lambda r: r.id)
        label_set = LabelSet(
            series_id=series.id,
            source=ADJUDICATED,
            version=version,
            author=actor.username,
            classes=_classes(prediction, labels),
            path=platform.relative(target),
            prediction_id=prediction.id,
            provenance={
                "method": "adjudication",
                "started_from": case.draft_source,
                "readers": [r.reader.username for r in readings],
                "readings": [r.id for r in readings],
                "decisions": {
                    r.reader.username: r.decision.value if r.decision else None for r in readings
                },
                "adjudicator": actor.username,
                "reading_case": case.id,
                "prediction": prediction.id,
                "model_version": prediction.model_version_id,
                "mean_pairwise_dice": (
                    {c: v["mean_pairwise_dice"] for c, v in case.agreement["per_class"].items()}
                    if case.agreement and agreement_is_current(case)
                    else None
                ),
            },
        )
        session.add(label_set)
        session.flush()
        # the signed-off mask is the prediction's reviewed correction: its size joins the
        # version's quality over time like a single reviewer's correction
        predicted = read_volume(platform.resolve(prediction.mask_path))[0].astype(np.uint8)
        record_correction_size(session, prediction, label_set, predicted, labels)
        # ... and a reviewed label version the retrain policy counts
        after_reviewed_label_version(platform, session, label_set)
        case.state = ReadingCaseState.SIGNED_OFF
        case.label_set_id = label_set.id
        case.signed_off_at = utcnow()
        audit.record(
            session,
            actor.username,
            "reading.sign_off",
            f"reading_case:{case.id}",
            label_set=label_set.id,
            version=version,
            started_from=case.draft_source,
            **({"via": via} if via else {}),
        )
        prediction_id = prediction.id
    evaluate_after(platform, prediction_id)
    return label_set


def case_mask_path(platform: Platform, case: ReadingCase, which: str) -> Path:
    """The stored file of ``which`` (``staple``, ``majority``, ``draft``) of a case.

    :raises NotFound: it does not exist (yet).
    """
    if which == "draft" and case.draft_path:
        return platform.resolve(case.draft_path)
    if which in CONSENSUS_SOURCES and case.agreement and which in case.agreement["consensus"]:
        return platform.resolve(str(case.agreement["consensus"][which]))
    raise NotFound(f"case {case.id} has no {which} mask yet")


# --- the readers page -------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def reader_statistics(session: Session, actor: Actor) -> dict[str, Any]:
    """Per reader: agreement per class (mean Dice with the other readers, against the
    prediction and the STAPLE consensus; STAPLE sensitivity and specificity) over the cases
    every reader has submitted, with the number of cases each mean is over; time per case
    (mean and median seconds) and submitted cases per ISO week."""
    require_role(actor, VIEWERS, "look at the readers' statistics")
    cases = list(
        session.scalars(
            select(ReadingCase)
            .where(ReadingCase.state != ReadingCaseState.CANCELLED)
            .options(joinedload(ReadingCase.readings).joinedload(Reading.reader))
        ).unique()
    )
    metrics = ("dice_with_readers", "vs_prediction", "vs_staple", "sensitivity", "specificity")
    values: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: {m: [] for m in metrics})
    )
    class_names: dict[str, str] = {}
    for case in cases:
        complete = all(r.submitted_at is not None for r in case.readings)
        if not (complete and agreement_is_current(case)) or case.agreement is None:
            continue
        class_names.update(case.agreement.get("class_names", {}))
        for c, per in case.agreement["per_class"].items():
            for pair in per["pairwise_dice"]:
                if pair["dice"] is not None:
                    values[pair["a"]][c]["dice_with_readers"].append(pair["dice"])
                    values[pair["b"]][c]["dice_with_readers"].append(pair["dice"])
            for metric in metrics[1:]:
                for reader, value in per[metric].items():
                    if value is not None:
                        values[reader][c][metric].append(value)
    readers: dict[str, Any] = {}
    times: dict[str, list[float]] = defaultdict(list)
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in cases:
        for r in case.readings:
            if r.submitted_at is None:
                continue
            if r.seconds is not None:
                times[r.reader.username].append(r.seconds)
            year, week, _ = r.submitted_at.isocalendar()
            weeks[r.reader.username][f"{year}-W{week:02d}"] += 1
    for name in sorted(set(values) | set(times)):
        readers[name] = {
            "classes": {
                c: {m: _mean(v) for m, v in per.items()} | {"cases": len(per["vs_prediction"])}
                for c, per in sorted(values[name].items(), key=lambda kv: int(kv[0]))
            },
            "cases_submitted": len(times[name]),
            "mean_seconds": _mean(times[name]),
            "median_seconds": round(statistics.median(times[name]), 1) if times[name] else None,
            "cases_per_week": dict(sorted(weeks[name].items())),
        }
    return {"readers": readers, "class_names": class_names}
