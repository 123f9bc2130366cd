"""Measurements on one slice of an HU volume: a distance, and the HU statistics of a region.

Points are ``(x, y)`` in voxels of the slice, continuous: voxel ``(i, j)`` (column ``i``, row
``j``) covers ``[i, i + 1) × [j, j + 1)``, so its centre is ``(i + 0.5, j + 0.5)`` (what the viewer
gives for a click). ``spacing`` is ``(x, y)`` in mm (DICOM PixelSpacing reversed, the series'
geometry order), so anisotropic pixels are measured right. A region holds the voxels whose
centres lie inside its outline; its area is those voxels' count times one voxel's area, so the
area, mean and SD all describe the same voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from matplotlib.path import Path as Outline

#: what a measurement is: a ruler (two points), an ellipse (two opposite corners of its
#: bounding box) or a freehand region (its outline, closed from the last point to the first)
MeasurementKind = Literal["ruler", "ellipse", "freehand"]
MEASUREMENT_KINDS: tuple[str, ...] = get_args(MeasurementKind)
#: the points an outline may have (a freehand drag at 60 events per second for half a minute)
MAX_POINTS = 2000

Point = tuple[float, float]


@dataclass(frozen=True)
class RegionStats:
    """The voxels inside a region: how many, their area (mm²), and their HU mean and SD
    (population SD, ``ddof=0``; both ``None`` when no voxel centre is inside)."""

    voxels: int
    area_mm2: float
    mean_hu: float | None
    sd_hu: float | None


def distance_mm(start: Point, end: Point, spacing: Sequence[float]) -> float:
    """The length in mm of the segment from ``start`` to ``end`` (voxels) on the slice."""
    return math.hypot((end[0] - start[0]) * spacing[0], (end[1] - start[1]) * spacing[1])


def _centres(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    return np.arange(cols) + 0.5, np.arange(rows) + 0.5


def ellipse_mask(shape: tuple[int, int], corner: Point, opposite: Point) -> np.ndarray:
    """``(y, x)`` bool: the voxels whose centres lie inside the ellipse inscribed in the box
    with corners ``corner`` and ``opposite`` (boundary included)."""
    cx, cy = (corner[0] + opposite[0]) / 2, (corner[1] + opposite[1]) / 2
    rx, ry = abs(opposite[0] - corner[0]) / 2, abs(opposite[1] - corner[1]) / 2
    if rx == 0 or ry == 0:
        return np.zeros(shape, dtype=bool)
    xs, ys = _centres(shape)
    return ((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2 <= 1.0


def polygon_mask(shape: tuple[int, int], outline: Sequence[Point]) -> np.ndarray:
    """``(y, x)`` bool: the voxels whose centres lie inside the closed ``outline`` (even-odd
    rule, so a self-crossing outline leaves its overlaps out; a centre exactly on the outline
    may fall on either side)."""
    if len(outline) < 3:
        return np.zeros(shape, dtype=bool)
    xs, ys = _centres(shape)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    inside = Outline(np.asarray(outline, dtype=float), closed=False).contains_points(grid)
    return inside.reshape(shape)


def region_mask(
    shape: tuple[int, int], kind: MeasurementKind, points: Sequence[Point]
) -> np.ndarray:
    """The voxels of an ``ellipse`` (two corners) or ``freehand`` (outline) region."""
    if kind == "ellipse":
        return ellipse_mask(shape, points[0], points[-1])
    if kind == "freehand":
        return polygon_mask(shape, points)
    raise ValueError(f"a {kind} has no region; regions are ellipse and freehand")


def region_stats(hu_slice: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> RegionStats:
    """Count, area (mm²), HU mean and SD of the voxels of ``hu_slice`` where ``mask`` is set."""
    values = hu_slice[mask].astype(np.float64)
    voxels = int(values.size)
    area = voxels * float(spacing[0]) * float(spacing[1])
    if voxels == 0:
        return RegionStats(0, 0.0, None, None)
    return RegionStats(voxels, area, float(values.mean()), float(values.std()))
