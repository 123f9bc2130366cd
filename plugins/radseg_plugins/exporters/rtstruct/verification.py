"""The checks of a written RT Structure Set: its contours filled again, and its references.

The contours are rasterised twice — with radseg's reader
(:func:`~radseg.imaging.label_sources.rtstruct.read_rtstruct`, slices found by position) and with
an independent even-odd fill (matplotlib point-in-polygon, slices found by the referenced SOP
instance) — and each is compared with the request's labels by per-class Dice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from radseg.contracts import ExportCheck, ExportRequest
from radseg.errors import InputError

from .sources import SourceHeaders
from .writing import lo

__all__ = ["contour_check", "dice", "reference_check"]

#: Dice every class with voxels must reach when the written contours are filled again.
MIN_DICE = 0.98


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


def contour_check(request: ExportRequest, written: Path, ds: Dataset) -> ExportCheck:
    from radseg.imaging.label_sources.rtstruct import read_rtstruct

    try:
        ours = read_rtstruct(ds, request.geometry, name=written.name).labels
    except InputError as exc:
        return ExportCheck("contours re-rasterised", False, f"radseg's reader refused it: {exc}")
    try:
        independent = _fill_by_reference(ds, request)
    except (InputError, ValueError, AttributeError, IndexError) as exc:
        return ExportCheck("contours re-rasterised", False, f"the independent reader failed: {exc}")
    truth = np.asarray(request.labels)
    parts, failing = [], []
    for info in request.classes:
        expected = truth == info.id
        scores = [dice(filled == info.id, expected) for filled in (ours, independent)]
        voxels = int(np.count_nonzero(expected))
        if voxels or any(s < 1.0 for s in scores):
            parts.append(f"{info.name} {scores[0]:.4f}/{scores[1]:.4f} ({voxels} voxels)")
            if min(scores) < MIN_DICE:
                failing.append(info.name)
        else:
            parts.append(f"{info.name} empty")
    known = np.isin(truth, [c.id for c in request.classes])
    # Voxels of ids without a class are not exported, so they count as background here.
    truth = np.where(known, truth, 0)
    differ = [int(np.count_nonzero(filled != truth)) for filled in (ours, independent)]
    detail = (
        f"Dice radseg reader/even-odd matplotlib per class: {'; '.join(parts) or 'no classes'}; "
        f"{differ[0]}/{differ[1]} voxel(s) differ"
    )
    if failing:
        detail = f"Dice below {MIN_DICE} for {', '.join(failing)}. " + detail
    return ExportCheck("contours re-rasterised", not failing, detail)


def _fill_by_reference(ds: Dataset, request: ExportRequest) -> np.ndarray:
    """Fill every CLOSED_PLANAR contour onto the slice its ContourImageSequence names.

    Independent of radseg's reader: slices are found by the referenced SOP instance (and frame),
    points are projected on that slice's plane (its ImagePositionPatient and the row/column
    axes), and pixels are tested with matplotlib's point-in-polygon, combined even-odd.
    """
    from matplotlib.path import Path as MplPath

    geometry = request.geometry
    nx, ny, nz = geometry.size
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(geometry.spacing, dtype=float)
    slice_of = {(s.sop_instance_uid, s.frame_number): s for s in request.series.slices}
    ids = {c.id for c in request.classes}
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in ids:
            raise InputError(f"ROI number {number} is not a class id")
        inside: dict[int, np.ndarray] = {}
        for contour in roi.get("ContourSequence", []):
            if contour.ContourGeometricType != "CLOSED_PLANAR":
                continue
            image = contour.ContourImageSequence[0]
            frame = image.get("ReferencedFrameNumber")
            ref = slice_of.get((str(image.ReferencedSOPInstanceUID), int(frame) if frame else None))
            if ref is None:
                raise InputError(f"a contour of ROI {number} references no slice of the series")
            k = ref.slice_index
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            offset = points - np.asarray(ref.image_position_patient)
            # Row/column axes are orthonormal, so a dot product gives the in-plane mm.
            x = offset @ direction[:, 0] / spacing[0]
            y = offset @ direction[:, 1] / spacing[1]
            off_plane = np.abs(offset @ direction[:, 2]).max()
            if off_plane > 0.05 * spacing[2]:
                raise InputError(
                    f"a contour of ROI {number} lies {off_plane:.3f} mm off the plane of the "
                    "slice it references"
                )
            # Only pixel centres in the contour's bounding box can be inside it.
            x0, x1 = max(int(np.ceil(x.min())), 0), min(int(np.floor(x.max())), nx - 1)
            y0, y1 = max(int(np.ceil(y.min())), 0), min(int(np.floor(y.max())), ny - 1)
            if x0 > x1 or y0 > y1:
                continue
            yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
            centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
            hit = MplPath(np.column_stack([x, y])).contains_points(centres).reshape(xx.shape)
            mask = inside.setdefault(k, np.zeros((ny, nx), dtype=bool))
            mask[y0 : y1 + 1, x0 : x1 + 1] ^= hit
        for k, mask in inside.items():
            labels[k][mask] = number
    return labels


def reference_check(request: ExportRequest, ds: Dataset) -> ExportCheck:
    problems: list[str] = []
    try:
        sources = SourceHeaders.read(request)
    except InputError as exc:
        return ExportCheck("references", False, f"the source series cannot be read: {exc}")
    frame_uid = sources.frame_of_reference_uid
    source_uids = set(sources.sop_classes)
    frames = list(ds.get("ReferencedFrameOfReferenceSequence", []))
    if [str(f.FrameOfReferenceUID) for f in frames] != [frame_uid]:
        problems.append("ReferencedFrameOfReferenceSequence does not name the source's frame")
    rois = list(ds.get("StructureSetROISequence", []))
    if any(str(r.ReferencedFrameOfReferenceUID) != frame_uid for r in rois):
        problems.append("an ROI names another FrameOfReferenceUID than the source's")
    series_uids, listed = set(), set()
    for frame in frames:
        for study in frame.get("RTReferencedStudySequence", []):
            if str(study.ReferencedSOPInstanceUID) != str(sources.first.StudyInstanceUID):
                problems.append("the referenced study is not the source's")
            for series in study.get("RTReferencedSeriesSequence", []):
                series_uids.add(str(series.SeriesInstanceUID))
                listed |= {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence}
    if series_uids != {str(sources.first.SeriesInstanceUID)}:
        problems.append(f"{len(series_uids)} referenced series, not the source series alone")
    if listed != source_uids:
        problems.append(
            f"ContourImageSequence lists {len(listed)} instance(s), the source has "
            f"{len(source_uids)} ({len(listed - source_uids)} foreign)"
        )
    per_contour = [
        str(image.ReferencedSOPInstanceUID)
        for roi in ds.get("ROIContourSequence", [])
        for contour in roi.get("ContourSequence", [])
        for image in contour.get("ContourImageSequence", [])
    ]
    foreign = sum(uid not in source_uids for uid in per_contour)
    if foreign:
        problems.append(f"{foreign} contour(s) reference an instance outside the source series")
    if str(ds.get("StudyInstanceUID", "")) != str(sources.first.StudyInstanceUID):
        problems.append("StudyInstanceUID is not the source's")
    names = [str(r.ROIName) for r in sorted(rois, key=lambda r: int(r.ROINumber))]
    expected = [lo(c.name) for c in sorted(request.classes, key=lambda c: c.id)]
    if names != expected:
        problems.append(f"ROI names {names} differ from the class names {expected}")
    detail = (
        f"frame of reference, study and series are the source's; {len(listed)} listed and "
        f"{len(per_contour)} per-contour instance reference(s) all in the source's "
        f"{len(source_uids)}; {len(rois)} ROI name(s) equal the class names"
    )
    return ExportCheck("references", not problems, "; ".join(problems) if problems else detail)
