"""Brush corrections: the painter gives the first painter's voxels at a cost proportional to
what it paints (counted by :class:`PaintCost`, not timed), and one save is bounded."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from radseg.core import Platform, create_platform
from radseg.errors import InputError
from radseg.web import create_app
from radseg.imaging.paint import PaintCost, Stroke, paint
from tests.unit.test_web import DEMO, log_in_as
from tests.unit.web_fixtures import *  # noqa: F403

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


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


@SQLITE_ONLY
def test_corrections_are_bounded_by_the_settings(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    strict = create_platform(
        web_platform.settings.model_copy(
            update={"correction_max_points": 50, "correction_max_area": 100}
        ),
        autoload=False,
        plugins=[DEMO],
    )
    client: FlaskClient = create_app(
        strict, {"TESTING": True, "WTF_CSRF_ENABLED": False}
    ).test_client()
    log_in_as(client, strict, "clinician")
    url = f"/predictions/{seeded['prediction']}/corrections"

    def save(points: list[Any], radius: float = 1, second: list[Any] | None = None) -> Any:
        stroke = {"z": 1, "class_id": 1, "radius": radius, "points": points}
        again = dict(stroke, z=2, points=points if second is None else second)
        return client.post(url, json={"strokes": [stroke, again]})

    # 26 + 25 points: over the 50 of the setting, refused before anything is painted
    response = save([[1, 1]] * 26, second=[[1, 1]] * 25)
    assert response.status_code == 400
    assert response.json["detail"] == "more than 50 points; save in smaller steps"
    far = save([[1, 1], [1e300, 5]])
    assert far.status_code == 400
    assert far.json["detail"] == "stroke 0 has a point far outside the 24×16 slice"
    # a 16 x 24 slice filled with a radius-12 brush, twice: more than 100 voxels
    response = save([[12, 8]], radius=12)
    assert response.status_code == 400
    assert "at most 100 per save: save in smaller steps" in response.json["detail"]
    assert save([[12, 8]], radius=2).status_code == 201
    strict.close()


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
