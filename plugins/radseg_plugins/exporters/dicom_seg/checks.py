"""The checks of a written SEG, read back with highdicom: segments, voxels, geometry, references.

Each check compares what ``highdicom.seg.segread`` gives back with the export request: the
segment labels with the class names, the voxels by source instance with the labels, every
frame's plane with the series' grid, and every frame's source reference with its own slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from radseg.contracts import ClassInfo, ExportCheck, ExportRequest, Geometry
from radseg.imaging.label_sources.seg import functional_group

__all__ = ["check_geometry", "check_references", "check_segments", "check_voxels"]

#: The frames' geometry must equal the series' grid to this many mm.
GEOMETRY_TOL_MM = 1e-3


def check_segments(seg: hd.seg.Segmentation, classes: Sequence[ClassInfo]) -> ExportCheck:
    numbers = list(seg.segment_numbers)
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    expected = [c.name for c in classes]
    if numbers != list(range(1, len(classes) + 1)) or labels != expected:
        return ExportCheck(
            "segments",
            False,
            f"segments {numbers} are labelled {labels}, expected 1-{len(classes)} labelled "
            f"{expected}",
        )
    return ExportCheck(
        "segments", True, f"{len(numbers)} segment(s) labelled {', '.join(labels)} in id order"
    )


def check_voxels(
    seg: hd.seg.Segmentation, request: ExportRequest, classes: Sequence[ClassInfo]
) -> ExportCheck:
    slices = request.series.slices
    try:
        if all(s.frame_number is None for s in slices):
            numbers = seg.get_pixels_by_source_instance(
                [s.sop_instance_uid for s in slices],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
        else:
            numbers = seg.get_pixels_by_source_frame(
                slices[0].sop_instance_uid,
                [int(s.frame_number or 0) for s in slices],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
    except Exception as exc:
        return ExportCheck(
            "voxels (highdicom)",
            False,
            f"highdicom cannot rebuild the label volume by source instance: "
            f"{type(exc).__name__}: {exc}",
        )
    # Segment number n is the n-th class by id (see the module doc).
    lut = np.zeros(max(int(numbers.max(initial=0)), len(classes)) + 1, dtype=np.int32)
    lut[1 : len(classes) + 1] = [c.id for c in classes]
    lut[len(classes) + 1 :] = -1  # a segment number the export never writes
    read = lut[numbers]
    expected = np.asarray(request.labels)
    nz, ny, nx = expected.shape
    if read.shape != expected.shape:
        return ExportCheck(
            "voxels (highdicom)",
            False,
            f"the SEG gives {read.shape} (z, y, x) voxels, the prediction has {expected.shape}",
        )
    differ = int(np.count_nonzero(read != expected))
    return ExportCheck(
        "voxels (highdicom)",
        differ == 0,
        f"{nz} slices × {ny}×{nx}: {differ} voxel(s) differ, {len(classes)} segment(s), "
        f"{int(seg.NumberOfFrames)} frame(s)",
    )


def _frame_slice(seg: Dataset, index: int, geometry: Geometry) -> tuple[int | None, float]:
    """The slice of ``geometry`` frame ``index`` lies on, and how far from it it is (mm)."""
    position = functional_group(seg, index, "PlanePositionSequence")
    if position is None:
        return None, float("inf")
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    offset = direction.T @ (
        np.asarray([float(v) for v in position.ImagePositionPatient]) - np.asarray(geometry.origin)
    )
    dz = float(geometry.spacing[2])
    k = round(offset[2] / dz)
    error = float(np.max(np.abs(offset - (0.0, 0.0, k * dz))))
    if not 0 <= k < geometry.size[2]:
        return None, error
    return k, error


def check_geometry(seg: hd.seg.Segmentation, request: ExportRequest) -> ExportCheck:
    geometry = request.geometry
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    iop = np.concatenate([direction[:, 0], direction[:, 1]])
    sx, sy, sz = (float(v) for v in geometry.spacing)
    problems: list[str] = []
    worst = 0.0
    frames = int(seg.NumberOfFrames)
    for i in range(frames):
        orientation = functional_group(seg, i, "PlaneOrientationSequence")
        measures = functional_group(seg, i, "PixelMeasuresSequence")
        if orientation is None or measures is None:
            problems.append(f"frame {i + 1} has no plane orientation or pixel measures")
            break
        cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        # A cosine error times the image's extent is the displacement it causes at the far edge.
        extent = max(geometry.size[0] * sx, geometry.size[1] * sy)
        if float(np.max(np.abs(cosines - iop))) * extent > GEOMETRY_TOL_MM:
            problems.append(f"frame {i + 1} orientation {cosines.round(6).tolist()} ≠ series")
            break
        row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
        if abs(row_spacing - sy) > GEOMETRY_TOL_MM or abs(column_spacing - sx) > GEOMETRY_TOL_MM:
            problems.append(
                f"frame {i + 1} pixel spacing {[row_spacing, column_spacing]} ≠ {[sy, sx]}"
            )
            break
        between = measures.get("SpacingBetweenSlices")
        if between is not None and abs(float(between) - sz) > GEOMETRY_TOL_MM:
            problems.append(f"SpacingBetweenSlices {float(between)} ≠ slice distance {sz}")
            break
        k, error = _frame_slice(seg, i, geometry)
        worst = max(worst, error)
        if k is None or error > GEOMETRY_TOL_MM:
            problems.append(f"frame {i + 1} lies {error:.4g} mm off the series' slices")
            break
    if (int(seg.Rows), int(seg.Columns)) != (geometry.size[1], geometry.size[0]):
        problems.append(
            f"frames are {seg.Rows}×{seg.Columns}, the series {geometry.size[1]}×{geometry.size[0]}"
        )
    source_frame = _source_frame_of_reference(request)
    if str(seg.get("FrameOfReferenceUID", "")) != source_frame:
        problems.append("FrameOfReferenceUID differs from the source series'")
    return _verdict(
        "geometry",
        problems,
        f"{frames} frame(s) on the series' slices (worst {worst:.1e} mm), orientation, pixel "
        f"spacing and slice distance equal to {GEOMETRY_TOL_MM:g} mm; same frame of reference",
    )


def _source_frame_of_reference(request: ExportRequest) -> str:
    if not request.series.instances:
        return ""
    ds = pydicom.dcmread(
        str(request.series.instances[0]),
        stop_before_pixels=True,
        specific_tags=["FrameOfReferenceUID"],
    )
    return str(ds.get("FrameOfReferenceUID", ""))


def _referenced(seg: Dataset, index: int) -> list[tuple[str, int | None]]:
    """The source (SOP Instance UID, frame number) pairs frame ``index`` was derived from."""
    derivation = functional_group(seg, index, "DerivationImageSequence")
    refs: list[tuple[str, int | None]] = []
    if derivation is None:
        return refs
    for item in derivation.get("SourceImageSequence", []):
        frames = item.get("ReferencedFrameNumber")
        if frames is None:
            refs.append((str(item.ReferencedSOPInstanceUID), None))
        else:
            for number in frames if isinstance(frames, Sequence) else [frames]:
                refs.append((str(item.ReferencedSOPInstanceUID), int(number)))
    return refs


def check_references(seg: hd.seg.Segmentation, request: ExportRequest) -> ExportCheck:
    slices = request.series.slices
    by_slice = {k: (s.sop_instance_uid, s.frame_number) for k, s in enumerate(slices)}
    known = {s.sop_instance_uid for s in slices}
    problems: list[str] = []
    if str(seg.StudyInstanceUID) != request.series.study_instance_uid:
        problems.append("StudyInstanceUID differs from the source study's")
    series_refs = {
        str(instance.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedInstanceSequence", [])
    }
    if series_refs - known:
        problems.append(
            f"{len(series_refs - known)} referenced instance(s) are not in the source series"
        )
    frames = int(seg.NumberOfFrames)
    referenced = 0
    for i in range(frames):
        refs = _referenced(seg, i)
        k, _ = _frame_slice(seg, i, request.geometry)
        if not refs:
            problems.append(f"frame {i + 1} references no source image")
            break
        if k is None or by_slice[k] not in refs:
            problems.append(f"frame {i + 1} references an instance other than its slice's")
            break
        referenced += 1
    return _verdict(
        "references",
        problems,
        f"{referenced} frame(s) reference the source instance of their own slice; "
        f"{len(series_refs)} referenced instance(s), all in the source series; same study",
    )


def _verdict(name: str, problems: list[str], passed: str) -> ExportCheck:
    """Check ``name``: failed with every problem, or passed with what was found equal."""
    if problems:
        return ExportCheck(name, False, "; ".join(problems))
    return ExportCheck(name, True, passed)
