"""Where the model doubts: score a new prediction for review and keep its uncertainty map.

:func:`score_prediction` turns a backend's :class:`~radseg.contracts.PredictOutput` into what
the prediction row keeps (``priority``, ``priority_reason``, ``quality``) by the rule of
:mod:`radseg.imaging.review_priority`; :func:`training_reference` gives the model version's
training-split statistics the rule compares with, computed once and kept on the version
(at training time, or here the first time an older version predicts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radseg.contracts import ClassInfo, Geometry
from radseg.core import Platform
from radseg.db.models import ModelVersion
from radseg.imaging import review_priority as rp
from radseg.imaging.volumes import write_volume
from radseg.workflows.datasets import classes_from_rows

logger = logging.getLogger(__name__)


def reference_of_dataset(dataset_dir: Path, classes: list[ClassInfo]) -> dict[str, Any] | None:
    """The training split's statistics of a built dataset version, or ``None`` (logged) when its
    files cannot be read: a prediction is then ranked by its uncertainty alone."""
    try:
        return rp.reference_from_dataset(dataset_dir, classes)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("no training statistics from %s: %s", dataset_dir, exc)
        return None


def training_reference(platform: Platform, model_version_id: int) -> dict[str, Any] | None:
    """The model version's stored training statistics; made and stored now if it has none."""
    with platform.sessions() as session:
        version = session.get(ModelVersion, model_version_id)
        if version is None:
            return None
        if version.reference_stats is not None:
            return version.reference_stats
        dataset_dir = platform.resolve(version.dataset_version.path)
        classes = classes_from_rows(version.config["classes"])
    stats = reference_of_dataset(dataset_dir, classes)
    if stats is None:
        return None
    with platform.sessions.begin() as session:
        version = session.get(ModelVersion, model_version_id)
        if version is not None and version.reference_stats is None:
            version.reference_stats = stats
    return stats


@dataclass(frozen=True)
class Scored:
    """What a prediction row keeps of its review priority."""

    priority: float
    reason: str
    quality: dict[str, Any]


def score_prediction(
    labels: np.ndarray,
    stored_uncertainty: np.ndarray | None,
    method: str,
    classes: list[ClassInfo],
    geometry: Geometry,
    reference: dict[str, Any] | None,
) -> Scored:
    """Signals, priority and reason for a predicted label volume and its stored (uint8)
    uncertainty map; scored from the stored map, so a re-score gives the same numbers."""
    uncertainty = (
        rp.dequantise_uncertainty(stored_uncertainty) if stored_uncertainty is not None else None
    )
    signals = rp.class_signals(labels, uncertainty, classes, geometry.spacing)
    priority = rp.review_priority(signals, reference)
    profile = rp.slice_profile(uncertainty) if uncertainty is not None else []
    for name, scores in priority.scores.items():
        signals[name]["scores"] = scores
    quality = {
        "rule": rp.RULE,
        "uncertainty": method if uncertainty is not None else None,
        "reference_series": int(reference.get("series", 0)) if reference else 0,
        "classes": signals,
        "slices": profile,
        "doubtful_slices": rp.doubtful_slices(profile),
    }
    return Scored(priority.score, priority.reason, quality)


def write_uncertainty(path: Path, stored: np.ndarray, geometry: Geometry) -> Path:
    """The uint8 map in the series' geometry, as a compressed NIfTI next to the mask."""
    return write_volume(path, stored, geometry)
