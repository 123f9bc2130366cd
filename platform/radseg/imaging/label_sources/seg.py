"""DICOM Segmentation objects (SEG) → a label volume on an image series' grid.

Frames are placed by their PlanePositionSequence/PlaneOrientationSequence and PixelMeasures in
patient coordinates, never by the referenced SOP Instance UIDs: de-identification changes UIDs,
not positions, and a SEG may cover only some slices (highdicom omits empty frames by default) or
another grid altogether.

* A frame whose pixels fall on the image's voxel centres (same orientation and pixel spacing, its
  first pixel on a voxel centre) is copied in place — exact, and the usual case.
* Any other frame is resampled with nearest neighbour (``sitk.Resample``) as a slab around its
  plane, as thick as the SEG's SpacingBetweenSlices (else SliceThickness, else the image's slice
  distance).
* Frames entirely outside the image are skipped with a warning; a SEG with no frame on the image is
  refused (:class:`~radseg.errors.GeometryError`).

Segmentation types: BINARY (pixel 1 = in the frame's segment), FRACTIONAL (in the segment where
value / MaximumFractionalValue ≥ 0.5, for PROBABILITY and OCCUPANCY alike) and LABELMAP (the pixel
is the segment number). Class ids are the SegmentNumbers; names come from SegmentLabel, colours
from RecommendedDisplayCIELabValue (the palette's, :mod:`radseg.imaging.palette`, without one),
``snomed_code`` from SegmentedPropertyTypeCodeSequence when its scheme is SNOMED CT
(``SCT``/``SRT``). Where segments overlap, the higher segment number wins and a warning counts the
voxels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from highdicom.color import CIELabColor
from pydicom.dataset import Dataset

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import GeometryError, InputError
from radseg.imaging.label_sources import read_label_object
from radseg.imaging.labels import (
    IGNORE_LABEL,
    LabelVolume,
    classes_for_labels,
    patient_to_index,
)
from radseg.imaging.palette import class_color
from radseg.imaging.volumes import array_to_image

__all__ = ["SEG_SOP_CLASS_UID", "functional_group", "read_seg", "seg_classes"]

log = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
#: A frame is "on the grid" when its axes and first pixel are within this many voxels of it.
_ON_GRID_TOL = 1e-3


@dataclass(frozen=True)
class _Plane:
    position: np.ndarray  # (3,) LPS mm of the frame's first pixel centre
    row_cosines: np.ndarray  # (3,) direction of increasing column index
    column_cosines: np.ndarray  # (3,) direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness, mm


def read_seg(source: Path | Dataset, geometry: Geometry, *, name: str | None = None) -> LabelVolume:
    """Read a DICOM SEG (file or dataset) onto ``geometry``'s grid; see the module doc.

    :raises InputError: not a SEG, an unsupported layout, or segment numbers above 254.
    :raises GeometryError: no frame of the SEG lies on the image.
    """
    ds = read_label_object(source, "SEG")
    where = name or (Path(source).name if isinstance(source, str | Path) else "SEG")
    seg_type = str(ds.get("SegmentationType", "")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InputError(
            f"{where}: SegmentationType {seg_type or '(missing)'} is not BINARY, FRACTIONAL or "
            "LABELMAP"
        )
    classes = seg_classes(ds, where)
    frames = _frames(ds, where)
    planes = [_plane(ds, i, where) for i in range(len(frames))]
    segment_of_frame = _segment_numbers(ds, len(frames), seg_type, where)

    nx, ny, nz = geometry.size
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    owner = np.zeros_like(labels)  # segment that set each voxel, to count overlaps
    warnings: list[str] = []
    placed = skipped = overlapping = 0
    # Higher segment numbers last, so they win where segments overlap (stated in the doc).
    order = sorted(range(len(frames)), key=lambda i: segment_of_frame[i])
    max_fraction = float(ds.get("MaximumFractionalValue", 255) or 255)
    for i in order:
        frame = frames[i]
        if seg_type == "BINARY":
            values = (frame > 0).astype(np.uint8) * np.uint8(segment_of_frame[i])
        elif seg_type == "FRACTIONAL":
            values = (frame.astype(np.float32) / max_fraction >= 0.5).astype(np.uint8) * np.uint8(
                segment_of_frame[i]
            )
        else:
            if frame.max(initial=0) > IGNORE_LABEL - 1:
                raise InputError(f"{where}: LABELMAP values above 254 do not fit a label volume")
            values = frame.astype(np.uint8)
        if not values.any():
            # Nothing to place; still check it lies on the image, for the overlap test.
            placed += _frame_on_image(planes[i], frame.shape, geometry)
            continue
        landed = _frame_to_grid(values, planes[i], geometry)
        if landed is None:
            skipped += 1
            continue
        placed += 1
        where_on_grid, region = landed
        target, own = labels[where_on_grid], owner[where_on_grid]
        hit = region > 0
        overlapping += int(np.count_nonzero(hit & (own > 0) & (own != region)))
        target[hit] = region[hit]
        own[hit] = region[hit]
    if placed == 0:
        raise GeometryError(
            f"{where}: none of its {len(frames)} frame(s) lies on the image series; check that "
            "the SEG was made from this series (same FrameOfReferenceUID and positions)"
        )
    if skipped:
        warnings.append(f"{where}: {skipped} frame(s) outside the image series were skipped")
    if overlapping:
        warnings.append(
            f"{where}: segments overlap on {overlapping} voxel(s); the higher segment number won"
        )
    for message in warnings:
        log.warning("%s", message)
    return LabelVolume(
        labels=labels,
        classes=classes_for_labels(labels, classes),
        source="seg",
        warnings=warnings,
    )


def seg_classes(ds: Dataset, where: str = "SEG") -> list[ClassInfo]:
    """The class map of a SEG: one class per item of SegmentSequence (see the module doc)."""
    classes = []
    for item in ds.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        if number == 0 and str(ds.get("SegmentationType", "")).upper() == "LABELMAP":
            continue  # a LABELMAP may describe its background as segment 0
        if not 1 <= number < IGNORE_LABEL:
            raise InputError(
                f"{where}: segment number {number} does not fit a label volume (1-254); split "
                "the SEG"
            )
        label = str(item.get("SegmentLabel", "") or f"segment_{number}").strip()
        color: tuple[int, int, int] = class_color(number)
        if "RecommendedDisplayCIELabValue" in item:
            rgb = CIELabColor.from_dicom_value(
                [int(v) for v in item.RecommendedDisplayCIELabValue]
            ).to_rgb()
            color = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
        snomed = None
        codes = item.get("SegmentedPropertyTypeCodeSequence", [])
        if codes and str(codes[0].get("CodingSchemeDesignator", "")) in ("SCT", "SRT"):
            snomed = str(codes[0].CodeValue)
        classes.append(ClassInfo(number, label, color, snomed))
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        # Keep both, distinguishable: two segments named alike are two classes in a SEG.
        seen: dict[str, int] = {}
        renamed = []
        for c in classes:
            seen[c.name] = seen.get(c.name, 0) + 1
            renamed.append(
                c
                if seen[c.name] == 1
                else ClassInfo(c.id, f"{c.name}_{c.id}", c.color, c.snomed_code)
            )
        classes = renamed
    return classes


def _frames(ds: Dataset, where: str) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{where}: cannot decode the segmentation pixels: {exc}") from exc
    frames = np.asarray(pixels)
    if int(ds.get("NumberOfFrames", 1) or 1) == 1 and frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise InputError(f"{where}: expected frames of one sample per pixel, got {frames.shape}")
    return frames


def functional_group(ds: Dataset, index: int, sequence: str) -> Any:
    """Item of functional group ``sequence`` for frame ``index``: per-frame, else shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame) and sequence in per_frame[index]:
        return per_frame[index][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _plane(ds: Dataset, index: int, where: str) -> _Plane:
    position = functional_group(ds, index, "PlanePositionSequence")
    orientation = functional_group(ds, index, "PlaneOrientationSequence")
    measures = functional_group(ds, index, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None:
        raise InputError(
            f"{where}: frame {index + 1} has no plane position, orientation or pixel spacing; "
            "only SEGs of volumes in the patient coordinate system can be placed on a series"
        )
    iop = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
    spacing = [float(v) for v in measures.PixelSpacing]
    thickness = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
    return _Plane(
        position=np.asarray([float(v) for v in position.ImagePositionPatient]),
        row_cosines=iop[:3],
        column_cosines=iop[3:],
        pixel_spacing=(spacing[0], spacing[1]),
        thickness=float(thickness) if thickness else None,
    )


def _segment_numbers(ds: Dataset, count: int, seg_type: str, where: str) -> list[int]:
    if seg_type == "LABELMAP":
        return [0] * count
    numbers = []
    for i in range(count):
        ident = functional_group(ds, i, "SegmentIdentificationSequence")
        if ident is None:
            raise InputError(f"{where}: frame {i + 1} does not say which segment it holds")
        numbers.append(int(ident.ReferencedSegmentNumber))
    return numbers


def _frame_axes(plane: _Plane, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's first pixel, column step and row step in the image's continuous indices."""
    origin = patient_to_index(plane.position[None], geometry)[0]
    row_step, column_step = plane.pixel_spacing
    step_i = patient_to_index(plane.position + plane.row_cosines * column_step, geometry)[0]
    step_j = patient_to_index(plane.position + plane.column_cosines * row_step, geometry)[0]
    return origin, step_i - origin, step_j - origin


def _frame_on_image(plane: _Plane, shape: tuple[int, ...], geometry: Geometry) -> int:
    origin, _, _ = _frame_axes(plane, geometry)
    return int(-0.5 <= origin[2] < geometry.size[2] - 0.5)


Block = tuple[tuple[slice, slice, slice], np.ndarray]


def _frame_to_grid(values: np.ndarray, plane: _Plane, geometry: Geometry) -> Block | None:
    """Where ``values`` land on the grid: ``((z, y, x) slices, uint8 block)``, or ``None``.

    Off-grid frames are resampled onto the part of the grid around their slab only, so the cost
    is that of the frame, not of the whole volume.
    """
    nx, ny, nz = geometry.size
    rows, cols = values.shape
    origin, step_i, step_j = _frame_axes(plane, geometry)
    rounded = np.rint(origin)
    on_grid = (
        np.allclose(step_i, (1, 0, 0), atol=_ON_GRID_TOL)
        and np.allclose(step_j, (0, 1, 0), atol=_ON_GRID_TOL)
        and np.allclose(origin, rounded, atol=_ON_GRID_TOL)
    )
    if on_grid:
        x0, y0, z = (int(v) for v in rounded)
        if not 0 <= z < nz or x0 >= nx or y0 >= ny or x0 + cols <= 0 or y0 + rows <= 0:
            return None
        ys, xs = slice(max(y0, 0), min(y0 + rows, ny)), slice(max(x0, 0), min(x0 + cols, nx))
        block = values[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        return (slice(z, z + 1), ys, xs), block[None]

    thickness = plane.thickness or float(geometry.spacing[2])
    normal = np.cross(plane.row_cosines, plane.column_cosines)
    frame_geometry = Geometry(
        size=(cols, rows, 1),
        spacing=(plane.pixel_spacing[1], plane.pixel_spacing[0], thickness),
        origin=tuple(float(v) for v in plane.position),  # type: ignore[arg-type]
        direction=tuple(
            float(v)
            for v in np.column_stack([plane.row_cosines, plane.column_cosines, normal]).ravel()
        ),
    )
    # The slab's corners in the grid's continuous indices bound the voxels it can reach.
    corners = np.array(
        [[i, j, k] for i in (-0.5, cols - 0.5) for j in (-0.5, rows - 0.5) for k in (-0.5, 0.5)]
    )
    frame_axes = np.column_stack([plane.row_cosines, plane.column_cosines, normal])
    points = plane.position + (corners * frame_geometry.spacing) @ frame_axes.T
    index = patient_to_index(points, geometry)
    size = np.array([nx, ny, nz])
    lo = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(axis=0)).astype(int), size - 1)
    if np.any(hi < lo):
        return None
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    sub_origin = np.asarray(geometry.origin) + direction @ (lo * np.asarray(geometry.spacing))
    sub_size = hi - lo + 1
    reference = array_to_image(
        np.zeros(tuple(int(v) for v in sub_size[::-1]), dtype=np.uint8),
        Geometry(
            size=tuple(int(v) for v in sub_size),  # type: ignore[arg-type]
            spacing=geometry.spacing,
            origin=tuple(float(v) for v in sub_origin),  # type: ignore[arg-type]
            direction=geometry.direction,
        ),
    )
    resampled = sitk.Resample(
        array_to_image(values[None], frame_geometry),
        reference,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
    block = sitk.GetArrayFromImage(resampled)
    if not block.any():
        return None
    where = (
        slice(int(lo[2]), int(hi[2]) + 1),
        slice(int(lo[1]), int(hi[1]) + 1),
        slice(int(lo[0]), int(hi[0]) + 1),
    )
    return where, block
