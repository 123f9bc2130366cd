"""Brush and eraser strokes painted onto a label volume: pure numpy, no settings, no web.

Strokes are in voxel coordinates of one slice: ``{"z", "class_id" (0 erases), "radius",
"points": [[x, y], ...]}``. Each stroke paints discs of ``radius`` voxels at its points and along
the segments between them, so a fast mouse drag leaves no gaps. The browser paints the same
strokes on its preview; the server repeats them on the stored mask, so what is saved does not
depend on the screen's scale.

Painting costs in proportion to what is painted, never to the slice times the points (the first
painter tested every voxel of the slice against every segment: 20,000 points on a 512² slice
were five billion tests). The caller bounds one save: :func:`parse_strokes` takes the most
points, :func:`paint` the most voxels swept or painted; over them, an :class:`InputError` says
to save in smaller steps. :mod:`radseg.workflows.corrections` passes the settings
``correction_max_points`` and ``correction_max_area``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from radseg.errors import InputError

#: the widest brush, in voxels (the request schema documents the same bound)
MAX_RADIUS = 64


@dataclass(frozen=True)
class Stroke:
    z: int
    class_id: int
    radius: float
    points: tuple[tuple[float, float], ...]


def parse_strokes(
    raw: Any,
    shape: tuple[int, int, int],
    class_ids: Iterable[int],
    *,
    max_points: int,
) -> list[Stroke]:
    """Check strokes as JSON gives them against the volume ``shape`` ``(z, y, x)``, the known
    classes and ``max_points`` in all (the ``correction_max_points`` setting: the one limit on
    points); an :class:`InputError` names the first bad stroke."""
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
            raw_points = item["points"]
            if not isinstance(raw_points, list):
                raise TypeError
            if total + len(raw_points) > max_points:
                # before converting them: a list of millions is refused at its length
                raise InputError(f"more than {max_points} points; save in smaller steps")
            points = tuple((float(p[0]), float(p[1])) for p in raw_points)
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
        far = max(shape[1:]) + MAX_RADIUS
        if np.abs(points).max() > 2 * far:
            raise InputError(f"{where} has a point far outside the {shape[2]}×{shape[1]} slice")
        total += len(points)
        strokes.append(Stroke(z, class_id, radius, points))
    return strokes


@dataclass
class PaintCost:
    """What :func:`paint` did, counted: the measure its limits and tests use instead of time."""

    #: (segment, image row) pairs whose covered span was computed
    rows: int = 0
    #: voxels written: for each stroke, the voxels it covers (a voxel two strokes cover, twice)
    voxels: int = 0


def _covers(cx: np.ndarray, cy: np.ndarray, seg: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """The rule: a voxel centre ``(cx, cy)`` within the radius of segment ``seg`` (x0 y0 x1 y1).

    Evaluated as the first painter did, so that spans end on exactly the same voxels."""
    x0, y0, x1, y1 = seg.T
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    safe = np.where(length2 == 0, 1.0, length2)
    t = np.where(length2 == 0, 0.0, np.clip(((cx - x0) * dx + (cy - y0) * dy) / safe, 0.0, 1.0))
    px, py = x0 + t * dx, y0 + t * dy
    return (cx - px) ** 2 + (cy - py) ** 2 <= r2


def _spans(seg: np.ndarray, radius: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x range ``[left, right]`` of the capsule (segment ``seg`` widened by ``radius``) on
    the horizontal line ``y = cy``: the union of the discs at both ends and the band between
    them, one interval since a capsule is convex; ``left > right`` where the line misses it.
    Widened by a hair, so that rounding never drops a voxel whose centre lies on the edge."""
    x0, y0, x1, y1 = seg.T
    r = radius * (1 + 1e-9) + 1e-9
    inf = np.full_like(cy, np.inf)
    left, right = inf.copy(), -inf
    for px, py in ((x0, y0), (x1, y1)):
        h2 = r * r - (cy - py) ** 2
        h = np.sqrt(np.maximum(h2, 0.0))
        left = np.where(h2 >= 0, np.minimum(left, px - h), left)
        right = np.where(h2 >= 0, np.maximum(right, px + h), right)
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    length = np.sqrt(length2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # the band: 0 <= t(x) <= 1 along the segment and |distance(x)| <= r across it, where
        # t(x) = ((x - x0) dx + (cy - y0) dy) / length² and distance(x) = ((x - x0) dy
        # - (cy - y0) dx) / length are linear in x: each condition is an interval of x
        lo, hi = -inf, inf.copy()
        for a, b, low, high in (
            (dx / length2, ((cy - y0) * dy - x0 * dx) / length2, 0.0, 1.0),
            (dy / length, (-(cy - y0) * dx - x0 * dy) / length, -r, r),
        ):
            flat = a == 0
            ends = np.sort(np.stack([(low - b) / a, (high - b) / a]), axis=0)
            inside = (low <= b) & (b <= high)
            lo = np.maximum(lo, np.where(flat, np.where(inside, -np.inf, np.inf), ends[0]))
            hi = np.minimum(hi, np.where(flat, np.where(inside, np.inf, -np.inf), ends[1]))
    band = (length2 > 0) & (lo <= hi)
    left = np.where(band, np.minimum(left, lo), left)
    right = np.where(band, np.maximum(right, hi), right)
    return left, right


#: rows swept per batch of :func:`_row_spans` (about 100 bytes of temporaries each)
_BATCH_ROWS = 1 << 16


def _segments(strokes: list[Stroke]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stroke's segments ``(n, 4)`` (a dot: one of length 0), their radii and strokes."""
    segments, radii, owners = [], [], []
    for n, stroke in enumerate(strokes):
        points = np.asarray(stroke.points, dtype=np.float64)
        if len(points) == 1:
            points = np.repeat(points, 2, axis=0)
        segments.append(np.hstack([points[:-1], points[1:]]))
        radii.append(np.full(len(points) - 1, stroke.radius))
        owners.append(np.full(len(points) - 1, n))
    return np.vstack(segments), np.concatenate(radii), np.concatenate(owners)


def _row_range(seg: np.ndarray, radius: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose centre line a segment's capsule may reach (one extra each side)."""
    top = np.minimum(seg[:, 1], seg[:, 3]) - radius
    bottom = np.maximum(seg[:, 1], seg[:, 3]) + radius
    first = np.floor(np.clip(top - 0.5, 0, height)).astype(np.int64)
    last = np.ceil(np.clip(bottom - 0.5, -1, height - 1)).astype(np.int64)
    return first, np.maximum(last - first + 1, 0)


def _row_spans(
    segments: np.ndarray,
    radii: np.ndarray,
    owners: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The covered span of each segment on each row it sweeps, as ``[begin, end)`` positions on
    the line where strokes and rows never touch: ``(stroke * height + row) * (width + 1) + x``."""
    rows = int(count.sum())
    pair = np.repeat(np.arange(len(segments)), count)
    row = np.arange(rows) - np.repeat(np.cumsum(count) - count, count) + first[pair]
    seg, r2, cy = segments[pair], radii[pair] ** 2, row + 0.5
    left, right = _spans(seg, radii[pair], cy)
    hit = left <= right
    seg, r2, cy, row, owner = seg[hit], r2[hit], cy[hit], row[hit], owners[pair][hit]
    # the span's voxels: centres x + 0.5 in [left, right]; a rounding error on either side is
    # settled by the exact rule (the span was widened a hair, so only trimming is needed)
    start = np.ceil(np.clip(left[hit] - 0.5, -2, width + 1)).astype(np.int64)
    stop = np.floor(np.clip(right[hit] - 0.5, -2, width + 1)).astype(np.int64)
    start += ~_covers(start + 0.5, cy, seg, r2)
    stop -= ~_covers(stop + 0.5, cy, seg, r2)
    start, stop = np.maximum(start, 0), np.minimum(stop, width - 1)
    keep = start <= stop
    # merge each stroke's spans on a line where rows (and strokes) never touch: position
    # (stroke, row, x) → (stroke * height + row) * (width + 1) + x
    line = (owner[keep] * height + row[keep]) * (width + 1)
    return line + start[keep], line + stop[keep] + 1


def _merge_spans(begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of the spans ``[begin, end)``, as sorted, disjoint spans."""
    order = np.argsort(begin, kind="stable")
    begin, end = begin[order], end[order]
    reach = np.maximum.accumulate(end)
    fresh = np.ones(len(begin), dtype=bool)
    fresh[1:] = begin[1:] > reach[:-1]
    last = np.append(np.flatnonzero(fresh)[1:] - 1, len(reach) - 1)
    return begin[fresh], (reach[last] if len(reach) else end)


def paint(
    labels: np.ndarray,
    strokes: Iterable[Stroke],
    *,
    max_area: int | None = None,
    cost: PaintCost | None = None,
) -> np.ndarray:
    """A copy of ``labels`` ``(z, y, x)`` with the strokes applied in order.

    A voxel is painted when its centre lies within the radius of the stroke's path. The work
    is proportional to what is painted, not to the slice: for each segment and each image row
    its capsule reaches, the covered span is computed (not tested voxel by voxel); a stroke's
    spans are merged, so a dense drag paints each voxel once. ``max_area`` refuses (with an
    :class:`InputError`, before anything is written) strokes that would sweep or paint more
    voxels; ``cost`` receives the counts.
    """
    strokes = list(strokes)
    cost = cost if cost is not None else PaintCost()
    out = np.array(labels, copy=True)
    if not strokes:
        return out
    depth, height, width = out.shape
    segments, radii, owners = _segments(strokes)
    first, count = _row_range(segments, radii, height)
    cost.rows = int(count.sum())
    if max_area is not None and cost.rows > max_area:
        raise InputError(
            f"the strokes sweep {cost.rows} voxel rows; at most {max_area} per save: "
            "save in smaller steps"
        )
    # in batches of rows, so a save at the limit holds a few MB of temporaries, not a GB
    begins, ends = [], []
    swept = np.cumsum(count)
    done = 0
    while done < len(segments):
        budget = (int(swept[done - 1]) if done else 0) + _BATCH_ROWS
        upto = max(int(np.searchsorted(swept, budget, side="right")), done + 1)
        part = slice(done, upto)
        begin, end = _row_spans(
            segments[part], radii[part], owners[part], first[part], count[part], height, width
        )
        begin, end = _merge_spans(begin, end)  # a dense drag overlaps itself: keep it small
        begins.append(begin)
        ends.append(end)
        done = upto
    begin, end = _merge_spans(np.concatenate(begins), np.concatenate(ends))
    lengths = end - begin
    cost.voxels = int(lengths.sum())
    if max_area is not None and cost.voxels > max_area:
        raise InputError(
            f"the strokes paint {cost.voxels} voxels; at most {max_area} per save: "
            "save in smaller steps"
        )
    position = np.arange(cost.voxels) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    position += np.repeat(begin, lengths)
    line_of, x = np.divmod(position, width + 1)
    stroke_of, y = np.divmod(line_of, height)
    z = np.array([s.z for s in strokes], dtype=np.int64)[stroke_of]
    voxel = (z * height + y) * width + x
    # strokes apply in order: where several cover a voxel, the last one's class stays
    last = len(voxel) - 1 - np.unique(voxel[::-1], return_index=True)[1]
    classes = np.array([s.class_id for s in strokes], dtype=out.dtype)
    out.reshape(depth * height * width)[voxel[last]] = classes[stroke_of[last]]
    return out
