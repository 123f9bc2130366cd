"""Gather what an exporter needs of one prediction into an :class:`~radseg.contracts.ExportRequest`.

The rows (prediction, model version, series, instances, a reviewer's correction) are read in
one read session; the label volume and the stored originals are read after it has closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.contracts import (
    AlgorithmInfo,
    ClassInfo,
    ExportRequest,
    Geometry,
    SliceRef,
    SourceSeries,
)
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction
from radseg.errors import InputError
from radseg.imaging.labels import index_to_patient
from radseg.imaging.volumes import read_volume
from radseg.workflows.adjudication import ADJUDICATED
from radseg.workflows.datasets import classes_from_rows

__all__ = ["build_request"]


@dataclass(frozen=True)
class _Rows:
    """What the database says of one prediction to export, read in one session."""

    mask_path: Path
    classes: list[ClassInfo]
    correction: str | None
    label_version: str | None
    algorithm: AlgorithmInfo
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    patient_key: str
    description: str
    volume_path: Path
    #: (SOPInstanceUID, slice index, frame number) of every instance of the series
    instances: list[tuple[str, int, int]]


def build_request(
    platform: Platform,
    prediction_id: int,
    options: Mapping[str, Any] | None = None,
    *,
    corrected: bool = False,
) -> ExportRequest:
    """Gather prediction ``prediction_id``'s labels, series and model into a request.

    :param corrected: export the latest reviewer's correction of the prediction (a label
        version saved from the viewer's brush) instead of the model's own output.
    :raises InputError: the prediction does not exist, its mask file is missing, or
        ``corrected`` is asked for and nobody corrected it.
    """
    with platform.sessions() as session:
        rows = _read_rows(platform, session, prediction_id, corrected=corrected)
    if not rows.mask_path.is_file():
        raise InputError(
            f"prediction {prediction_id}'s mask file is missing from the store; predict again"
        )
    labels, geometry = read_volume(rows.mask_path)
    originals = platform.path("studies", rows.study_instance_uid, rows.series_instance_uid)
    return ExportRequest(
        prediction_id=prediction_id,
        labels=labels.astype(np.uint8, copy=False),
        geometry=geometry,
        classes=rows.classes,
        series=SourceSeries(
            study_instance_uid=rows.study_instance_uid,
            series_instance_uid=rows.series_instance_uid,
            modality=rows.modality,
            patient_key=rows.patient_key,
            slices=_slice_refs(rows.instances, geometry),
            instances=sorted(originals.glob("*.dcm")) if originals.is_dir() else [],
            volume_path=rows.volume_path if rows.volume_path.is_file() else None,
            description=rows.description,
        ),
        algorithm=rows.algorithm,
        options=dict(options or {}),
        correction=rows.correction,
        label_version=rows.label_version,
    )


def _read_rows(
    platform: Platform, session: Session, prediction_id: int, *, corrected: bool
) -> _Rows:
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise InputError(
            f"prediction {prediction_id} does not exist; see `radseg predictions list`"
        )
    series, study = prediction.series, prediction.series.study
    mask_path = platform.resolve(prediction.mask_path)
    classes = classes_from_rows(prediction.model_version.config["classes"])
    correction = label_version = None
    if corrected:
        label_set = _latest_correction(session, prediction_id)
        mask_path = platform.resolve(label_set.path)
        classes = classes_from_rows(label_set.classes) or classes
        correction = f"label version {label_set.version} by {label_set.author or 'unknown'}"
        if label_set.source == ADJUDICATED:
            correction, label_version = _adjudicated(
                label_set, with_names=platform.settings.export_reader_names
            )
    return _Rows(
        mask_path=mask_path,
        classes=classes,
        correction=correction,
        label_version=label_version,
        algorithm=_algorithm(prediction),
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        patient_key=study.patient_key,
        description=series.description,
        volume_path=platform.resolve(series.volume_path),
        instances=[(i.sop_instance_uid, i.slice_index, i.frame_number) for i in series.instances],
    )


def _adjudicated(label_set: LabelSet, *, with_names: bool) -> tuple[str, str]:
    """What the descriptions of an adjudicated label version say: the version and how many
    readers, and their names and the adjudicator's only ``with_names`` (the setting
    ``export_reader_names``)."""
    provenance = label_set.provenance or {}
    readers = [str(r) for r in provenance.get("readers", [])]
    version = f"adjudicated label version {label_set.version}"
    if with_names:
        who = f"readers {', '.join(readers)}; adjudicator {provenance.get('adjudicator', '?')}"
    else:
        who = f"{len(readers)} reader{'s' if len(readers) != 1 else ''}"
    return f"{version} of {who}", version


def _latest_correction(session: Session, prediction_id: int) -> LabelSet:
    """The latest label version a reviewer saved for the prediction.

    :raises InputError: nobody corrected it.
    """
    label_set = session.scalars(
        select(LabelSet)
        .where(LabelSet.prediction_id == prediction_id)
        .order_by(LabelSet.version.desc())
    ).first()
    if label_set is None:
        raise InputError(
            f"prediction {prediction_id} has no correction to export; correct it in the "
            "viewer first, or export the prediction itself"
        )
    return label_set


def _algorithm(prediction: Prediction) -> AlgorithmInfo:
    """The model version that made ``prediction``, as DICOM's algorithm identification."""
    version = prediction.model_version
    architecture = str(version.config.get("architecture", version.model.backend))
    return AlgorithmInfo(
        name=f"radseg {architecture} (model {version.model.name!r})",
        version=f"model version {version.id}",
        model_version_id=version.id,
        provenance=dict(prediction.provenance or {}),
    )


def _slice_refs(instances: list[tuple[str, int, int]], geometry: Geometry) -> list[SliceRef]:
    """The series' slices in z order, each with its ImagePositionPatient on ``geometry``."""
    rows = sorted(instances, key=lambda row: row[1])
    # each slice's ImagePositionPatient: its first voxel centre, index (0, 0, k)
    positions = index_to_patient(np.asarray([(0, 0, k) for _, k, _ in rows]), geometry)
    return [
        SliceRef(
            sop_instance_uid=uid,
            slice_index=k,
            image_position_patient=(float(x), float(y), float(z)),
            frame_number=frame or None,
        )
        for (uid, k, frame), (x, y, z) in zip(rows, positions, strict=True)
    ]
