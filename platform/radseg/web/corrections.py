"""A reviewer's brush and eraser strokes → a new label version of the series.

Strokes are in voxel coordinates of one slice: ``{"z", "class_id" (0 erases), "radius",
"points": [[x, y], ...]}``. Each stroke paints discs of ``radius`` voxels at its points and along
the segments between them, so a fast mouse drag leaves no gaps. The browser paints the same
strokes on its preview; the server repeats them on the stored mask, so what is saved does not
depend on the screen's scale.

The result is a :class:`~radseg.db.models.LabelSet` (source ``"review"``, the next version,
the reviewer as author, the prediction it corrects), which the next dataset build picks up as
the series' latest labels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg.contracts import Geometry
from radseg.core import Platform
from radseg.db.models import LabelSet, Prediction
from radseg.errors import InputError
from radseg.imaging.volumes import read_volume, write_volume

MAX_RADIUS = 64
MAX_POINTS = 20_000


@dataclass(frozen=True)
class Stroke:
    z: int
    class_id: int
    radius: float
    points: tuple[tuple[float, float], ...]


def parse_strokes(raw: Any, shape: tuple[int, int, int], class_ids: Iterable[int]) -> list[Stroke]:
    """Check the JSON from the browser against the volume ``shape`` ``(z, y, x)`` and the known
    classes; an :class:`InputError` names the first bad stroke."""
    allowed = set(class_ids) | {0}
    if not isinstance(raw, list) or not raw:
        raise InputError("strokes must be a non-empty list of {z, class_id, radius, points}")
    strokes: list[Stroke] = []
    total = 0
    for n, item in enumerate(raw):
        where = f"stroke {n}"
        if not isinstance(item, Mapping):
            raise InputError(f"{where} is not an object")
        try:
            z = int(item["z"])
            class_id = int(item["class_id"])
            radius = float(item.get("radius", 2))
            points = tuple((float(p[0]), float(p[1])) for p in item["points"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise InputError(
                f"{where} needs z, class_id, radius and points [[x, y], ...] as numbers"
            ) from None
        if not 0 <= z < shape[0]:
            raise InputError(f"{where}: slice {z} is outside 0..{shape[0] - 1}")
        if class_id not in allowed:
            raise InputError(
                f"{where}: class {class_id} is not one of {sorted(allowed)} (0 erases)"
            )
        if not 0 < radius <= MAX_RADIUS:
            raise InputError(f"{where}: radius must be in (0, {MAX_RADIUS}]")
        if not points or not all(np.isfinite(points).ravel()):
            raise InputError(f"{where} has no points, or a point that is not a finite number")
        total += len(points)
        if total > MAX_POINTS:
            raise InputError(f"more than {MAX_POINTS} points; save in smaller steps")
        strokes.append(Stroke(z, class_id, radius, points))
    return strokes


def paint(labels: np.ndarray, strokes: Iterable[Stroke]) -> np.ndarray:
    """A copy of ``labels`` ``(z, y, x)`` with the strokes applied in order."""
    out = np.array(labels, copy=True)
    _, height, width = out.shape
    ys, xs = np.mgrid[0:height, 0:width]
    # a voxel is painted when its centre lies within radius of the stroke's path
    cx, cy = xs + 0.5, ys + 0.5
    for stroke in strokes:
        covered = np.zeros((height, width), dtype=bool)
        points = stroke.points if len(stroke.points) > 1 else stroke.points * 2
        r2 = stroke.radius**2
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            dx, dy = x1 - x0, y1 - y0
            length2 = dx * dx + dy * dy
            if length2 == 0:
                t = np.zeros_like(cx)
            else:
                t = np.clip(((cx - x0) * dx + (cy - y0) * dy) / length2, 0.0, 1.0)
            px, py = x0 + t * dx, y0 + t * dy
            covered |= (cx - px) ** 2 + (cy - py) ** 2 <= r2
        out[stroke.z][covered] = stroke.class_id
    return out


def base_labels(
    platform: Platform, prediction: Prediction, label_set: LabelSet | None
) -> np.ndarray:
    """What the strokes correct: the given label set (a previous correction) or the prediction."""
    path = label_set.path if label_set is not None else prediction.mask_path
    array, _ = read_volume(platform.resolve(path))
    return array.astype(np.uint8)


def save_correction(
    platform: Platform,
    session: Session,
    prediction: Prediction,
    labels: np.ndarray,
    *,
    classes: list[dict[str, Any]],
    author: str,
) -> LabelSet:
    """Write ``labels`` as the series' next label version (file first, atomically; then the row,
    not committed)."""
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
