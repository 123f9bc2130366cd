"""A reviewer's brush and eraser strokes on a prediction → the series' next label version.

The strokes (see :mod:`radseg.imaging.paint`) are painted onto the prediction's mask, or onto a
previous correction of it (``base_label_set``). One save is bounded by the settings
``correction_max_points`` and ``correction_max_area`` (voxels swept or painted); over them it is
refused with an :class:`~radseg.errors.InputError` that says to save in smaller steps.

The result is a :class:`~radseg.db.models.LabelSet` (source ``"review"``, the next version,
the reviewer as author, the prediction it corrects), which the next dataset build picks up as
the series' labels over any imported ones (radseg.label_versions). Every correction is audited
(``labels.correct``) and counted by the retrain policy (radseg.workflows.retrain). Its size against
the prediction (Dice, voxels changed) is cached with it for the quality charts, whose alerts are
then evaluated (:mod:`radseg.workflows.quality`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction
from radseg.errors import InputError, NotFound
from radseg.imaging.legend import LegendEntry, labels_present, legend, prediction_classes
from radseg.imaging.paint import Stroke, paint, parse_strokes
from radseg.imaging.volumes import read_volume, write_volume
from radseg.roles import REVIEWERS, Actor, require_role
from radseg.workflows.lookup import get_row
from radseg.workflows.quality import evaluate_after, record_correction_size
from radseg.workflows.retrain import after_reviewed_label_version


def _base_label_set(session: Session, prediction: Prediction, ident: int | None) -> LabelSet | None:
    if ident is None:
        return None
    base = session.get(LabelSet, ident)
    if base is None or base.series_id != prediction.series_id:
        raise InputError("base_label_set must be a label set of this prediction's series")
    return base


def base_labels(
    platform: Platform, prediction: Prediction, label_set: LabelSet | None
) -> np.ndarray:
    """What the strokes correct: the given label set (a previous correction) or the prediction.

    :raises NotFound: the file is missing from the store.
    """
    stored = platform.resolve(label_set.path if label_set is not None else prediction.mask_path)
    # checked here: the volume reader reports a missing file as a generic RuntimeError
    if not stored.is_file():
        what = f"label set {label_set.id}" if label_set is not None else "mask"
        raise NotFound(f"the {what} of prediction {prediction.id} is missing under RADSEG_HOME")
    array, _ = read_volume(stored)
    return array.astype(np.uint8)


def _next_label_version(
    platform: Platform,
    session: Session,
    prediction: Prediction,
    labels: np.ndarray,
    *,
    classes: list[dict[str, Any]],
    author: str,
) -> LabelSet:
    """Write ``labels`` as the series' next label version: the file first (atomically), then
    the row, in the caller's unit of work."""
    series = prediction.series
    version = (
        session.scalar(select(func.max(LabelSet.version)).where(LabelSet.series_id == series.id))
        or 0
    ) + 1
    geometry = Geometry.from_dict(series.geometry)
    target = platform.path("labels", series.series_instance_uid, f"v{version}.nii.gz")
    write_volume(target, labels.astype(np.uint8), geometry)
    label_set = LabelSet(
        series_id=series.id,
        source="review",
        version=version,
        author=author,
        classes=classes,
        path=platform.relative(target),
        prediction_id=prediction.id,
    )
    session.add(label_set)
    session.flush()
    return label_set


def _painted(
    platform: Platform,
    labels: np.ndarray,
    strokes: list[dict[str, Any]],
    entries: list[LegendEntry],
) -> tuple[np.ndarray, list[Stroke]]:
    """The strokes, checked against the volume and its classes, painted within the limits."""
    settings = platform.settings
    parsed = parse_strokes(
        strokes, labels.shape, [e.id for e in entries], max_points=settings.correction_max_points
    )
    return paint(labels, parsed, max_area=settings.correction_max_area), parsed


def _cache_size(
    platform: Platform,
    session: Session,
    prediction: Prediction,
    label_set: LabelSet,
    predicted: np.ndarray | None,
    corrected: np.ndarray,
) -> None:
    """Cache the correction's size against the prediction now, while the volumes are in memory
    (the quality pages read only this row); ``predicted`` is ``None`` when the strokes were
    painted on a previous correction: the prediction's mask is read again."""
    if predicted is None:
        predicted = base_labels(platform, prediction, None)
    record_correction_size(session, prediction, label_set, predicted, corrected)


def save_correction(
    platform: Platform,
    actor: Actor,
    prediction_id: int,
    *,
    strokes: list[dict[str, Any]],
    base_label_set: int | None = None,
    via: str | None = None,
) -> LabelSet:
    """Paint ``strokes`` (``{z, class_id, radius, points}``, class 0 erases) onto the prediction's
    mask, or onto the label set ``base_label_set`` (a previous correction of the same series),
    and store the result as the series' next label version, authored by ``actor``; audited.

    :raises PermissionDenied: ``actor`` is not a reviewer (clinician or admin).
    :raises NotFound: there is no such prediction, or its mask file is missing.
    :raises InputError: a stroke does not fit the volume or its classes, the save is over the
        settings' limits, or ``base_label_set`` is not a label set of this series.
    """
    require_role(actor, REVIEWERS, "correct predictions")
    with platform.sessions.begin() as session:
        prediction = get_row(session, Prediction, prediction_id, "prediction")
        base = _base_label_set(session, prediction, base_label_set)
        labels = base_labels(platform, prediction, base)
        # the model's classes, and any label value in the mask that it does not name
        known = base.classes if base is not None else prediction_classes(prediction)
        entries = legend(known, labels_present(labels))
        corrected, parsed = _painted(platform, labels, strokes, entries)
        label_set = _next_label_version(
            platform,
            session,
            prediction,
            corrected,
            classes=[e.to_dict() for e in entries],
            author=actor.username,
        )
        predicted = labels if base is None else None  # painted on the prediction itself
        _cache_size(platform, session, prediction, label_set, predicted, corrected)
        audit.record(
            session,
            actor.username,
            "labels.correct",
            f"label_set:{label_set.id}",
            prediction=prediction.id,
            series=prediction.series_id,
            version=label_set.version,
            strokes=len(parsed),
            slices=sorted({s.z for s in parsed}),
            **({"via": via} if via else {}),
        )
        # the retrain policy (setting retrain_after_reviewed) counts this reviewed version
        after_reviewed_label_version(platform, session, label_set)
    evaluate_after(platform, prediction_id)
    return label_set
