"""Quality watched over time: a model version's weekly table, its control charts, and alerts.

When alerts are evaluated: right after each study-level review decision and after each saved
correction (:func:`evaluate_alerts`, called by :mod:`radseg.workflows.review` and
:mod:`radseg.workflows.corrections` once their own unit of work has committed), and on demand
with :func:`check_quality` (``radseg models quality NAME --check``, which also computes the
correction sizes of corrections saved before they were cached). A page view or an API read
only reads: it never records nor announces anything.

Each flagged week of each chart is recorded once (:class:`~radseg.db.models.QualityAlert`, a
unique key on version, chart and week), audited (``quality.alert``) and, after its commit,
announced once through the ``radseg_quality_alert`` hook. Two processes that evaluate the same
version at once race on the unique key: the loser records and announces nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radseg import audit, quality
from radseg.core import Platform
from radseg.db.models import (
    CorrectionSize,
    LabelSet,
    Model,
    ModelVersion,
    Prediction,
    QualityAlert,
)
from radseg.errors import NotFound
from radseg.imaging.volumes import read_volume
from radseg.roles import OPERATORS, Actor, require_role
from radseg.settings import Settings
from radseg.workflows.lookup import get_row

log = logging.getLogger(__name__)


# --- reads ----------------------------------------------------------------------------------------


def version_quality(session: Session, settings: Settings, version: ModelVersion) -> dict[str, Any]:
    """Everything the quality section shows for a model version: the rule's settings, the weekly
    table and its columns (``key``, ``label``, ``spec``: a format spec), the two charts and the
    recorded alerts (newest last)."""
    table = quality.weekly_table(session, version.id)
    charts = quality.control_charts(
        table,
        baseline_weeks=settings.quality_baseline_weeks,
        baseline_min=settings.quality_baseline_min,
    )
    return {
        "model": version.model.name,
        "model_version_id": version.id,
        "baseline_weeks": settings.quality_baseline_weeks,
        "baseline_min": settings.quality_baseline_min,
        "columns": [asdict(c) for c in quality.table_columns()],
        "weeks": table,
        "charts": {name: chart.to_dict() for name, chart in charts.items()},
        "alerts": [
            quality.alert_to_dict(a, version.model.name)
            for a in quality.recorded_alerts(session, version.id)
        ],
    }


def model_versions(session: Session, model: str) -> list[ModelVersion]:
    """The versions of the model named ``model``, oldest first.

    :raises NotFound: there is no such model (the message lists the models there are).
    """
    row = session.scalar(select(Model).where(Model.name == model))
    if row is None:
        names = ", ".join(session.scalars(select(Model.name).order_by(Model.name))) or "none yet"
        raise NotFound(f"there is no model {model!r}; models: {names}")
    return sorted(row.versions, key=lambda v: v.id)


# --- correction sizes (written with the correction) -----------------------------------------------


def record_correction_size(
    session: Session,
    prediction: Prediction,
    label_set: LabelSet,
    predicted: np.ndarray,
    reviewed: np.ndarray,
) -> CorrectionSize:
    """Cache how much ``label_set`` (a correction of ``prediction``) changed the prediction's
    mask ``predicted``, in the caller's unit of work."""
    dice, changed = quality.correction_size(predicted, reviewed)
    row = CorrectionSize(
        label_set_id=label_set.id, prediction_id=prediction.id, dice=dice, voxels_changed=changed
    )
    session.add(row)
    return row


def _mask(platform: Platform, path: str) -> np.ndarray:
    stored = platform.resolve(path)
    if not stored.is_file():
        raise NotFound(f"{path} is missing under RADSEG_HOME")
    return read_volume(stored)[0].astype(np.uint8)


def _fill_missing_sizes(platform: Platform, version_id: int) -> int:
    """Compute the sizes of the version's corrections that have none (saved before the cache
    existed); one unit of work per correction. Returns how many were added."""
    with platform.sessions() as session:
        missing = session.execute(
            select(LabelSet.id, Prediction.id)
            .join(Prediction, LabelSet.prediction_id == Prediction.id)
            .outerjoin(CorrectionSize, CorrectionSize.label_set_id == LabelSet.id)
            .where(Prediction.model_version_id == version_id, CorrectionSize.label_set_id.is_(None))
        ).all()
    for label_set_id, prediction_id in missing:
        with platform.sessions.begin() as session:
            label_set = get_row(session, LabelSet, label_set_id, "label set")
            prediction = get_row(session, Prediction, prediction_id, "prediction")
            record_correction_size(
                session,
                prediction,
                label_set,
                _mask(platform, prediction.mask_path),
                _mask(platform, label_set.path),
            )
    return len(missing)


# --- alerts ---------------------------------------------------------------------------------------


def _new_alerts(session: Session, settings: Settings, version: ModelVersion) -> list[QualityAlert]:
    known = {(a.chart, a.week) for a in quality.recorded_alerts(session, version.id)}
    report = quality.control_charts(
        quality.weekly_table(session, version.id),
        baseline_weeks=settings.quality_baseline_weeks,
        baseline_min=settings.quality_baseline_min,
    )
    added = []
    for chart in report.values():
        for point in chart.points:
            if not point.flagged or (chart.name, point.week) in known:
                continue
            assert chart.center is not None and point.limit is not None  # flagged: has limits
            alert = QualityAlert(
                model_version_id=version.id,
                chart=chart.name,
                week=point.week,
                value=point.value,
                center=chart.center,
                limit=point.limit,
                n=point.n,
                message=quality.alert_message(version.model.name, version.id, chart, point),
            )
            session.add(alert)
            added.append(alert)
    session.flush()
    for alert in added:
        audit.record(
            session,
            "radseg",
            "quality.alert",
            f"model_version:{version.id}",
            alert=alert.id,
            chart=alert.chart,
            week=alert.week,
        )
    return added


def evaluate_alerts(platform: Platform, model_version_id: int) -> list[dict[str, Any]]:
    """Record the model version's newly flagged weeks and announce each once through the
    ``radseg_quality_alert`` hook, after the commit. Returns the new alerts (as the hook got
    them); ``[]`` when another process recorded them first."""
    try:
        with platform.sessions.begin() as session:
            version = get_row(session, ModelVersion, model_version_id, "model version")
            alerts = [
                quality.alert_to_dict(a, version.model.name)
                for a in _new_alerts(session, platform.settings, version)
            ]
    except IntegrityError:
        log.info(
            "quality alerts of model version %s were recorded by another process", model_version_id
        )
        return []
    for alert in alerts:
        platform.plugins.notify_quality_alert(alert)
    return alerts


def evaluate_after(platform: Platform, prediction_id: int) -> None:
    """:func:`evaluate_alerts` for the prediction's model version, after a decision or a
    correction was committed: a failure is logged, never raised (the decision is stored; the
    next one, or ``radseg models quality NAME --check``, evaluates again)."""
    try:
        with platform.sessions() as session:
            version_id = session.scalar(
                select(Prediction.model_version_id).where(Prediction.id == prediction_id)
            )
        if version_id is not None:
            evaluate_alerts(platform, version_id)
    except Exception:
        log.exception("evaluating the quality alerts after prediction %s failed", prediction_id)


def check_quality(
    platform: Platform, actor: Actor, *, model: str, version_id: int | None = None
) -> dict[str, Any]:
    """Compute the missing correction sizes of the model's versions (or of one of them) and
    evaluate their alerts now; audited (``quality.check``).

    :returns: ``{"sizes_added": n, "alerts": [new alerts]}``.
    :raises PermissionDenied: ``actor`` is not an admin or researcher.
    :raises NotFound: there is no such model, or no such version of it, or a mask file is
        missing.
    """
    require_role(actor, OPERATORS, "check model quality")
    with platform.sessions() as session:
        ids = [v.id for v in model_versions(session, model)]
    if version_id is not None:
        if version_id not in ids:
            raise NotFound(f"model {model!r} has no version {version_id}; its versions: {ids}")
        ids = [version_id]
    added, alerts = 0, []
    for ident in ids:
        added += _fill_missing_sizes(platform, ident)
        alerts += evaluate_alerts(platform, ident)
    with platform.sessions.begin() as session:
        audit.record(
            session,
            actor.username,
            "quality.check",
            f"model:{model}",
            versions=ids,
            sizes_added=added,
            alerts=len(alerts),
        )
    return {"sizes_added": added, "alerts": alerts}
