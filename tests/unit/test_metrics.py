"""radseg.metrics against medpy and DeepMind's surface-distance on the same masks.

radseg's surfaces are medpy's (voxels removed by a face-connected erosion), so Dice, IoU, HD95,
ASSD and the relative volume difference agree with ``medpy.metric.binary`` to 1e-9, and the
surface Dice agrees exactly with the same definition computed from medpy's surface distances.
surface-distance measures on voxel corners with area weights: its Dice equals ours exactly, its
distances differ by up to about a voxel (asserted with that bound, and why, below).
"""

from __future__ import annotations

import json
import math

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
import surface_distance as deepmind
from scipy import ndimage

from radseg.metrics import (
    binary_metrics,
    class_metrics,
    dataset_summary,
    spacing_zyx,
    study_summary,
    surface_distances,
)

SPACING_3D = (2.5, 0.7, 0.9)  # (z, y, x) mm: thick slices, anisotropic in-plane
SPACING_2D = (0.6, 1.3)


def blob(shape: tuple[int, ...], seed: int, threshold: float = 0.55) -> np.ndarray:
    """A random smooth mask: several irregular blobs, some touching the array's edge."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    return field > np.quantile(field, threshold)


def ellipsoid(
    shape: tuple[int, ...], centre: tuple[float, ...], radii_mm: float, spacing: tuple[float, ...]
) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    return d2 <= radii_mm**2


def medpy_surface_dice(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...], tol: float
) -> float:
    """Our surface Dice definition, built only from medpy's surface distances."""
    d_pg = medpy_binary.__surface_distances(p, g, spacing)
    d_gp = medpy_binary.__surface_distances(g, p, spacing)
    return float(((d_pg <= tol).sum() + (d_gp <= tol).sum()) / (d_pg.size + d_gp.size))


CASES = [
    pytest.param((20, 30, 26), SPACING_3D, 0, 1, id="3d-random"),
    pytest.param((16, 24, 24), SPACING_3D, 2, 3, id="3d-random-2"),
    pytest.param((48, 40), SPACING_2D, 4, 5, id="2d-random"),
]


@pytest.mark.parametrize(("shape", "spacing", "seed_p", "seed_g"), CASES)
def test_agrees_with_medpy(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed_p: int, seed_g: int
) -> None:
    p, g = blob(shape, seed_p), blob(shape, seed_g)
    ours = binary_metrics(p, g, spacing, tolerance_mm=1.5)
    assert ours.dice == pytest.approx(medpy_binary.dc(p, g), abs=1e-9)
    assert ours.iou == pytest.approx(medpy_binary.jc(p, g), abs=1e-9)
    assert ours.hd95 == pytest.approx(medpy_binary.hd95(p, g, spacing), abs=1e-9)
    assert ours.assd == pytest.approx(medpy_binary.assd(p, g, spacing), abs=1e-9)
    assert ours.volume_diff_rel == pytest.approx(medpy_binary.ravd(p, g), abs=1e-9)
    assert ours.volume_diff_mm3 == pytest.approx(
        (p.sum() - g.sum()) * float(np.prod(spacing)), abs=1e-6
    )
    assert ours.surface_dice == pytest.approx(medpy_surface_dice(p, g, spacing, 1.5), abs=1e-12)
    # the surface Dice is neither trivially 0 nor 1 on these masks
    assert 0.05 < ours.surface_dice < 0.95


def test_surface_distances_on_the_crop_equal_medpy_on_the_whole_array() -> None:
    shape = (30, 40, 36)
    p = np.zeros(shape, bool)
    g = np.zeros(shape, bool)
    p[3:9, 0:12, 5:20] = True  # touches the array's edge: no surface is invented there
    g[4:12, 2:14, 8:22] = True
    d_pg, d_gp = surface_distances(p, g, SPACING_3D)
    np.testing.assert_allclose(
        np.sort(d_pg), np.sort(medpy_binary.__surface_distances(p, g, SPACING_3D)), atol=1e-12
    )
    np.testing.assert_allclose(
        np.sort(d_gp), np.sort(medpy_binary.__surface_distances(g, p, SPACING_3D)), atol=1e-12
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_close_to_surface_distance_on_smooth_shapes(ndim: int) -> None:
    spacing = SPACING_3D if ndim == 3 else SPACING_2D
    shape = (24, 64, 60) if ndim == 3 else (80, 60)
    centre_g = tuple(n / 2 for n in shape)
    centre_p = tuple(c + (1.5 if i == ndim - 1 else 0) for i, c in enumerate(centre_g))
    g = ellipsoid(shape, centre_g, 18.0, spacing)
    p = ellipsoid(shape, centre_p, 16.0, spacing)
    ours = binary_metrics(p, g, spacing, tolerance_mm=2.0)
    distances = deepmind.compute_surface_distances(g, p, spacing)
    # Dice counts voxels in both packages: equal.
    assert ours.dice == pytest.approx(deepmind.compute_dice_coefficient(g, p), abs=1e-12)
    # Distances: surface-distance measures between voxel corners (surfels), radseg/medpy between
    # voxel centres of the boundary voxels, so each distance may differ by up to half a voxel
    # diagonal on each side. The bound asserted is one (largest) voxel spacing.
    voxel = max(spacing)
    robust = deepmind.compute_robust_hausdorff(distances, 95)
    assert abs(ours.hd95 - robust) <= voxel
    gt_to_pred, pred_to_gt = deepmind.compute_average_surface_distance(distances)
    assert abs(ours.assd - (gt_to_pred + pred_to_gt) / 2) <= voxel
    # Surface Dice: surfel areas on corners vs voxel counts on centres. Distances take few
    # distinct values on a grid, so when a tolerance falls between two of them the shares jump:
    # the two definitions differ by up to ~0.11 here (3D, 2 mm tolerance, 2.5 mm slices), and
    # agree once the tolerance exceeds every distance.
    for tolerance in (1.0, 2.0, 3.0, 4.0):
        ours_t = binary_metrics(p, g, spacing, tolerance_mm=tolerance).surface_dice
        theirs = deepmind.compute_surface_dice_at_tolerance(distances, tolerance)
        assert ours_t is not None and abs(ours_t - theirs) < 0.15, (tolerance, ours_t, theirs)
    assert binary_metrics(p, g, spacing, tolerance_mm=5.0).surface_dice == 1.0
    assert deepmind.compute_surface_dice_at_tolerance(distances, 5.0) == 1.0


def test_identical_masks_are_perfect() -> None:
    g = blob((12, 20, 20), 7)
    m = binary_metrics(g, g, SPACING_3D)
    assert (m.dice, m.iou, m.hd95, m.assd, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 1.0)
    assert m.volume_diff_mm3 == 0.0 and m.volume_diff_rel == 0.0


def test_empty_masks_are_defined() -> None:
    empty = np.zeros((6, 8, 8), bool)
    some = empty.copy()
    some[2:4, 2:5, 3:6] = True
    both = binary_metrics(empty, empty, SPACING_3D)
    assert both.dice is None and both.iou is None and both.hd95 is None
    assert both.assd is None and both.surface_dice is None
    assert both.volume_diff_mm3 == 0.0 and both.volume_diff_rel is None
    missed = binary_metrics(empty, some, SPACING_3D)  # nothing predicted
    assert missed.dice == 0.0 and missed.iou == 0.0 and missed.surface_dice == 0.0
    assert math.isinf(missed.hd95) and math.isinf(missed.assd)
    assert missed.volume_diff_rel == -1.0
    assert missed.volume_diff_mm3 == pytest.approx(-18 * 2.5 * 0.7 * 0.9)
    invented = binary_metrics(some, empty, SPACING_3D)  # predicted where there is nothing
    assert invented.dice == 0.0 and math.isinf(invented.hd95) and invented.volume_diff_rel is None
    assert json.loads(json.dumps(invented.to_json()))["hd95"] is None


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        binary_metrics(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.ones((3, 4), bool), np.ones((3, 4), bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        binary_metrics(np.ones((3, 4), bool), np.ones((3, 4), bool), (1.0, 0.0))


def test_per_class_study_and_dataset_summaries() -> None:
    truth = np.zeros((4, 16, 16), np.uint8)
    truth[1:3, 2:8, 2:8] = 1
    truth[1:3, 9:14, 9:14] = 2
    truth[0, 0, :3] = 255  # ignored: predicted class 1 there does not count
    pred = truth.copy()
    pred[pred == 255] = 1
    pred[1, 9:14, 9:14] = 0  # half of class 2 missed
    per_class = class_metrics(pred, truth, [1, 2, 3], spacing_zyx((0.8, 0.8, 3.0)))
    assert per_class[1].dice == 1.0
    assert per_class[2].dice == pytest.approx(2 * 25 / (25 + 50))
    assert per_class[3].dice is None  # in neither: undefined, not 1
    named = {"a": per_class[1], "b": per_class[2], "c": per_class[3]}
    study = study_summary(named)
    assert study["mean"]["dice"] == pytest.approx((1.0 + 2 / 3) / 2)  # type: ignore[index]
    other = {"a": binary_metrics(np.zeros((4, 4), bool), np.ones((4, 4), bool)), "b": per_class[2]}
    summary = dataset_summary({"s1": named, "s2": other})
    a = summary["per_class"]["a"]  # type: ignore[index]
    assert a["dice"]["mean"] == pytest.approx(0.5) and a["dice"]["n"] == 2
    assert a["hd95"]["n"] == 1 and a["hd95"]["inf"] == 1  # the missed study's inf is counted
    assert summary["mean_dice"] == pytest.approx((0.5 + 2 / 3) / 2)
    json.dumps(summary)  # JSON-able as stored in the database
