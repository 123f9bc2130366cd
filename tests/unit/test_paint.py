"""Brush and eraser strokes (:mod:`radseg.imaging.paint`): the painter gives the first
painter's voxels at a cost proportional to what it paints (counted by :class:`PaintCost`, not
timed), one save is bounded, and the strokes are checked against the volume and its classes."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from radseg.errors import InputError
from radseg.imaging.paint import MAX_RADIUS, PaintCost, Stroke, paint, parse_strokes


def first_painter(labels: np.ndarray, strokes: list[Stroke]) -> np.ndarray:
    """The painter the issue measured (every voxel of the slice against every segment): the
    reference for which voxels a stroke covers."""
    out = np.array(labels, copy=True)
    _, height, width = out.shape
    ys, xs = np.mgrid[0:height, 0:width]
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


def _random_strokes(rng: np.random.Generator, on_grid: bool) -> list[Stroke]:
    strokes = []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(1, 8))
        if on_grid:  # half-voxel coordinates and radii: centres exactly on a disc's edge
            points = [(rng.integers(-4, 44) / 2, rng.integers(-4, 44) / 2) for _ in range(n)]
            radius = float(rng.integers(1, 12)) / 2
        else:  # some from far off the slice, across it
            reach = 45 if rng.random() < 0.8 else 140
            points = [(rng.uniform(-reach, reach), rng.uniform(-reach, reach)) for _ in range(n)]
            radius = float(rng.uniform(0.1, 8))
        pts = tuple((float(x), float(y)) for x, y in points)
        strokes.append(Stroke(int(rng.integers(0, 3)), int(rng.integers(0, 4)), radius, pts))
    return strokes


@pytest.mark.parametrize("on_grid", [True, False], ids=["ties", "any"])
def test_paint_covers_exactly_the_voxels_the_first_painter_did(on_grid: bool) -> None:
    rng = np.random.default_rng(11 if on_grid else 12)
    for _ in range(150):
        shape = (3, int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        labels = rng.integers(0, 3, shape).astype(np.uint8)
        strokes = _random_strokes(rng, on_grid)  # overlapping, off the edges, erasing (0)
        assert np.array_equal(paint(labels, strokes), first_painter(labels, strokes)), strokes


def _spiral(points: int, turns: float = 20) -> tuple[tuple[float, float], ...]:
    angle = np.linspace(0, 2 * np.pi * turns, points)
    radius = 200 * angle / angle[-1]
    xs, ys = 256 + radius * np.cos(angle), 256 + radius * np.sin(angle)
    return tuple(zip(xs.tolist(), ys.tolist(), strict=True))


def test_painting_costs_in_proportion_to_the_painted_area_not_the_slice() -> None:
    """The issue's case: one correction of 20,000 points on a 512² slice. The first painter
    made points × slice = 5.2 billion voxel tests; this one computes a span for each row each
    segment reaches and writes each covered voxel once."""
    labels = np.zeros((1, 512, 512), np.uint8)
    points, radius = _spiral(20_000), 3.0
    cost = PaintCost()
    painted = paint(labels, [Stroke(0, 1, radius, points)], cost=cost)
    area = int((painted == 1).sum())
    assert cost.voxels == area  # a voxel a dense drag passes 10 times is written once
    ys = np.array([y for _, y in points])
    rows_reached = np.abs(np.diff(ys)) + 2 * radius + 3  # the rows of each segment's capsule
    assert cost.rows <= rows_reached.sum()
    first_painter_cost = len(points) * 512 * 512
    assert cost.rows + cost.voxels < first_painter_cost / 20_000

    # 20,000 one-point strokes alternating brush and eraser: one span per row each reaches
    cost = PaintCost()
    strokes = [Stroke(0, n % 2, 2.0, (p,)) for n, p in enumerate(points)]
    paint(labels, strokes, cost=cost)
    assert cost.rows <= len(strokes) * (2 * 2 + 3) and cost.voxels <= len(strokes) * 16


def test_a_save_that_would_sweep_or_paint_too_much_is_refused_before_painting() -> None:
    labels = np.zeros((2, 64, 64), np.uint8)
    fill = Stroke(0, 1, 8.0, tuple((float(x), float(y)) for y in range(4, 64, 8) for x in (4, 60)))
    cost = PaintCost()
    paint(labels, [fill], cost=cost)
    assert cost.rows < cost.voxels  # rows are checked first, voxels once the spans are known
    with pytest.raises(InputError, match=rf"sweep {cost.rows} voxel rows; at most {cost.rows - 1}"):
        paint(labels, [fill], max_area=cost.rows - 1)
    with pytest.raises(InputError, match=rf"paint {cost.voxels} voxels; at most {cost.voxels - 1}"):
        paint(labels, [fill], max_area=cost.voxels - 1)
    assert np.array_equal(paint(labels, [fill], max_area=cost.voxels), paint(labels, [fill]))


def test_a_save_at_the_limits_holds_little_memory() -> None:
    """A wide brush dragged up and down 6,500 times sweeps 3.3 million rows (within the 4 Mi
    limit) yet paints one band: its spans are merged batch by batch, never all held at once
    (before: about 850 MB of temporaries for one save)."""
    import tracemalloc

    points = tuple((256.0 + (i % 2) * 0.5, 10.0 if i % 2 == 0 else 500.0) for i in range(6500))
    labels = np.zeros((3, 512, 512), dtype=np.uint8)
    cost = PaintCost()
    tracemalloc.start()
    try:
        out = paint(
            labels,
            [Stroke(z=1, class_id=1, radius=64.0, points=points)],
            max_area=4 << 20,
            cost=cost,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cost.rows > 3_000_000
    assert cost.voxels == int((out[1] == 1).sum()) and not out[0].any() and not out[2].any()
    assert peak < 64 * 1024**2


def test_paint_covers_voxels_whose_centre_is_within_the_radius_of_the_path() -> None:
    labels = np.zeros((2, 20, 30), np.uint8)
    dot = paint(labels, [Stroke(0, 3, 2.0, ((10.5, 5.5),))])
    ys, xs = np.mgrid[0:20, 0:30]
    expected = (xs + 0.5 - 10.5) ** 2 + (ys + 0.5 - 5.5) ** 2 <= 4.0
    assert np.array_equal(dot[0] == 3, expected) and not dot[1].any()
    assert expected.sum() == 13  # the 13 centres of a radius-2 disc on the grid

    # a fast drag (two far points) leaves a gap-free band, and the eraser removes it again
    line = paint(labels, [Stroke(1, 1, 1.0, ((2.0, 10.0), (27.0, 10.0)))])
    band = line[1] == 1
    assert band[9:11, 2:27].all() and not band[:8].any() and not band[12:].any()
    erased = paint(line, [Stroke(1, 0, 3.0, ((10.0, 10.0),))])
    assert not erased[1][8:12, 8:12].any() and erased[1][9, 20] == 1
    assert labels.sum() == 0  # the input is not modified


def _stroke(**fields: Any) -> dict[str, Any]:
    return {"z": 1, "class_id": 1, "radius": 2, "points": [[1, 1], [3, 4]], **fields}


def test_strokes_are_checked_against_the_volume_its_classes_and_the_limit() -> None:
    shape = (4, 16, 24)
    (stroke,) = parse_strokes([_stroke()], shape, [1, 2], max_points=10)
    assert stroke == Stroke(1, 1, 2.0, ((1.0, 1.0), (3.0, 4.0)))
    refused = {
        "strokes must be a non-empty list": [],
        "stroke 0 is not an object": [[1, 2]],
        "stroke 0 needs z, class_id, radius and points": [_stroke(points="x")],
        "stroke 1: slice 9 is outside 0..3": [_stroke(), _stroke(z=9)],
        "stroke 0: class 5 is not one of [0, 1, 2] (0 erases)": [_stroke(class_id=5)],
        f"stroke 0: radius must be in (0, {MAX_RADIUS}]": [_stroke(radius=MAX_RADIUS + 1)],
        "stroke 0 has no points": [_stroke(points=[])],
        "stroke 0 has a point far outside the 24×16 slice": [_stroke(points=[[1e300, 5]])],
        # the limit counts every stroke's points, and is checked before they are converted
        "more than 10 points; save in smaller steps": [_stroke(points=[[1, 1]] * 6)] * 2,
    }
    for message, raw in refused.items():
        with pytest.raises(InputError) as refusal:
            parse_strokes(raw, shape, [1, 2], max_points=10)
        assert str(refusal.value).startswith(message), (message, str(refusal.value))
