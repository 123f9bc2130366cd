"""An :class:`~radseg.contracts.ExportRequest` on a real DICOM series, for exporter tests.

:func:`export_request` writes a synthetic CT series (real DICOM files, see
:mod:`radseg.imaging.synthetic`) and uses its ground-truth label volume as the "prediction", so
an exporter can be checked against voxels that are known exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from radseg.contracts import (
    AlgorithmInfo,
    ClassInfo,
    ExportCheck,
    ExportRequest,
    SliceRef,
    SourceSeries,
)
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.imaging.volumes import write_volume

__all__ = ["FlippingExporter", "export_request", "from_enhanced_source", "with_labels"]


def export_request(
    tmp_path: Path,
    *,
    shape: tuple[int, int, int] = (10, 64, 64),
    seed: int = 0,
    image_orientation_patient: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    options: dict[str, Any] | None = None,
    snomed: bool = True,
) -> tuple[ExportRequest, SyntheticStudy]:
    """A request for the synthetic phantom's labels on its own DICOM series.

    With ``snomed`` the liver class carries its SNOMED CT code (10200004), so exporters show
    they use a code when the class map has one and fall back when it has not.
    """
    study = write_synthetic_ct(
        tmp_path / f"study-{seed}",
        seed=seed,
        shape=shape,
        image_orientation_patient=image_orientation_patient,
    )
    volume_path = write_volume(tmp_path / f"study-{seed}" / "hu.nii", study.hu, study.geometry)
    classes = [
        ClassInfo(c.id, c.name, c.color, "10200004" if snomed and c.name == "liver" else None)
        for c in study.classes
    ]
    slices = [
        SliceRef(uid, k, tuple(float(v) for v in _position(study, k)))  # type: ignore[arg-type]
        for k, uid in enumerate(study.sop_instance_uids)
    ]
    request = ExportRequest(
        prediction_id=1,
        labels=study.labels.copy(),
        geometry=study.geometry,
        classes=classes,
        series=SourceSeries(
            study_instance_uid=study.study_instance_uid,
            series_instance_uid=study.series_instance_uid,
            modality="CT",
            patient_key=study.patient_id,
            slices=slices,
            instances=list(study.files),
            volume_path=volume_path,
            description="synthetic CT",
        ),
        algorithm=AlgorithmInfo(
            name="radseg semantic_fpn (model 'test')",
            version="model version 1",
            model_version_id=1,
            provenance={"dataset_version": 1, "config_hash": "0" * 64},
        ),
        options=dict(options or {}),
    )
    return request, study


def with_labels(request: ExportRequest, labels: np.ndarray) -> ExportRequest:
    """``request`` with other labels (e.g. an empty prediction, or one with a ring)."""
    return replace(request, labels=labels)


def _position(study: SyntheticStudy, k: int) -> np.ndarray:
    direction = np.asarray(study.geometry.direction, dtype=float).reshape(3, 3)
    return np.asarray(study.geometry.origin) + direction[:, 2] * study.geometry.spacing[2] * k


def from_enhanced_source(
    request: ExportRequest, study: SyntheticStudy, folder: Path
) -> tuple[ExportRequest, dict[float, int]]:
    """``request`` on one enhanced multi-frame CT instance made from ``study``'s files.

    The frames run head to feet, the reverse of the slice order, so an exporter must reference
    each slice by its frame number, not by its position in the file. Returns the request and
    the frame number at each slice's z position (mm, rounded to 1 µm).
    """
    import highdicom as hd
    import pydicom

    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in reversed(study.files)],
        series_instance_uid=hd.UID(),
        series_number=3,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    path = folder / "enhanced.dcm"
    enhanced.save_as(path)
    frame_at = {
        round(float(frame.PlanePositionSequence[0].ImagePositionPatient[2]), 3): f
        for f, frame in enumerate(enhanced.PerFrameFunctionalGroupsSequence, start=1)
    }
    slices = [
        SliceRef(
            str(enhanced.SOPInstanceUID),
            s.slice_index,
            s.image_position_patient,
            frame_at[round(s.image_position_patient[2], 3)],
        )
        for s in request.series.slices
    ]
    series = replace(request.series, slices=slices, instances=[path])
    return replace(request, series=series), frame_at


class FlippingExporter:
    """Writes the labels upside down: what a buggy exporter (or a flipped affine) does."""

    name: ClassVar[str] = "flipped"
    suffix: ClassVar[str] = ".npy"
    dicom: ClassVar[bool] = False

    def export(self, request: ExportRequest, out: Path) -> Path:
        np.save(out, request.labels[:, ::-1, :])
        return out

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        differ = int(np.count_nonzero(np.load(written) != request.labels))
        return [ExportCheck("voxels (numpy)", differ == 0, f"{differ} voxels differ")]
