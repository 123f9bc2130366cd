"""Where the model doubts (:mod:`radseg.imaging.review_priority`): each signal and the rule
against numbers worked out by hand, and the training-split statistics read back from a dataset
version built by the real writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radseg.contracts import ClassInfo, Geometry, SeriesVolume, SliceRef
from radseg.imaging import review_priority as rp
from radseg.imaging.channels import ChannelRecipe
from radseg.imaging.dataset_version import build_dataset_version

LUNG = ClassInfo(id=1, name="lung_left", color=(0, 255, 0))
LIVER = ClassInfo(id=2, name="liver", color=(255, 0, 0))


def reference(**liver: object) -> dict[str, object]:
    """Four training series; lung_left always in one part; liver as given."""
    return {
        "rule": rp.RULE,
        "series": 4,
        "classes": {
            "lung_left": {
                "present": 4,
                "volume_ml": {"median": 1.0, "p05": 0.9, "p95": 1.1},
                "components": {"median": 1.0, "max": 1},
                "inconsistency": {"median": 0.1, "p95": 0.2},
            },
            "liver": {
                "present": 4,
                "volume_ml": {"median": 10.0, "p05": 9.0, "p95": 11.0},
                "components": {"median": 1.0, "max": 1},
                "inconsistency": {"median": 0.1, "p95": 0.2},
                **liver,
            },
        },
    }


def test_volume_components_and_inconsistency_of_a_mask() -> None:
    mask = np.zeros((4, 10, 10), dtype=bool)
    mask[0, 2:6, 2:6] = True
    mask[1, 2:6, 2:6] = True  # the same square: Dice 1 with slice 0
    mask[3, 2:6, 2:6] = True  # slice 2 is a gap: Dice 0 twice
    stats = rp.shape_stats(mask, rp.voxel_ml((0.5, 0.5, 2.0)))
    assert stats.volume_ml == pytest.approx(48 * 0.5 / 1000)
    assert stats.components == 2  # the gap splits it in 3-D
    assert stats.inconsistency == pytest.approx(1 - (1 + 0 + 0) / 3)


def test_a_mask_in_three_parts_is_flagged_against_one_in_training() -> None:
    labels = np.zeros((3, 20, 20), dtype=np.uint8)
    labels[1, 1:4, 1:4] = 1
    labels[1, 8:11, 8:11] = 1
    labels[1, 15:18, 15:18] = 1
    signals = rp.class_signals(labels, None, [LUNG], (10.0, 10.0, 10.0))
    assert signals["lung_left"]["components"] == 3
    assert signals["lung_left"]["volume_ml"] == pytest.approx(27.0)  # 27 voxels of 1 mL
    ref = reference()
    ref["classes"]["lung_left"]["volume_ml"] = {"median": 27.0, "p05": 25.0, "p95": 30.0}
    priority = rp.review_priority(signals, ref)
    assert priority.reason == "lung_left in 3 parts; training has 1"
    assert priority.score == pytest.approx(0.2 * 2)
    assert priority.scores == {"lung_left": {"components": 0.4}}


def test_a_volume_twice_the_training_median_is_scored_by_the_rule() -> None:
    signals = {"liver": {"volume_ml": 20.0, "components": 1, "inconsistency": 0.0}}
    priority = rp.review_priority(signals, reference())
    # hi = max(p95 11, 1.25 × median 10) = 12.5; score = log2(20 / 12.5) / 2
    assert priority.score == pytest.approx(np.log2(1.6) / 2, abs=1e-4)
    assert priority.reason == "liver volume 2.0× the training median"
    small = rp.review_priority({"liver": {**signals["liver"], "volume_ml": 2.0}}, reference())
    # lo = min(p05 9, 0.8 × median 10) = 8; score = log2(8 / 2) / 2 = 1
    assert small.score == pytest.approx(1.0)
    assert small.reason == "liver volume 0.2× the training median"
    usual = rp.review_priority({"liver": {**signals["liver"], "volume_ml": 12.0}}, reference())
    assert (usual.score, usual.reason) == (0.0, "nothing unusual")


def test_a_missing_class_and_one_training_never_has() -> None:
    missing = rp.review_priority(
        {"liver": {"volume_ml": 0.0, "components": 0, "inconsistency": 0.0}}, reference(present=3)
    )
    assert missing.score == 1.0
    assert missing.reason == "liver missing; training has it in 3 of 4 series"
    rare = rp.review_priority(
        {"liver": {"volume_ml": 0.0, "components": 0, "inconsistency": 0.0}}, reference(present=1)
    )
    assert rare.score == 0.0  # most training series lack it too
    ref = reference()
    ref["classes"]["liver"] = {"present": 0}
    predicted = {"liver": {"volume_ml": 3.0, "components": 1, "inconsistency": 0.0}}
    new = rp.review_priority(predicted, ref)
    assert (new.score, new.reason) == (0.5, "liver predicted; no training series has it")


def test_the_priority_is_the_mean_of_each_classs_worst_signal_with_the_largest_as_reason() -> None:
    signals = {
        "lung_left": {"volume_ml": 1.0, "components": 3, "inconsistency": 0.1},  # 0.4
        "liver": {"volume_ml": 20.0, "components": 1, "inconsistency": 0.45},  # 0.339 and 0.5
        "heart": {"volume_ml": 5.0, "components": 1, "inconsistency": 0.0},  # no reference: 0
        "spleen": {"volume_ml": 0.0, "components": 0, "inconsistency": 0.0},  # not predicted
    }
    priority = rp.review_priority(signals, reference())
    assert priority.score == pytest.approx((0.4 + 0.5 + 0.0) / 3, abs=1e-4)
    assert priority.reason == "liver changes shape between slices (0.45; training ≤ 0.20)"
    assert priority.scores["liver"] == {
        "volume": pytest.approx(0.339, abs=1e-3),
        "inconsistency": 0.5,
    }
    assert "heart" not in priority.scores and "spleen" not in priority.scores


def test_uncertainty_inside_at_the_border_and_the_doubtful_share() -> None:
    labels = np.zeros((1, 10, 10), dtype=np.uint8)
    labels[0, 3:7, 3:7] = 2  # 16 voxels; eroded by the in-plane cross: the 2 × 2 centre
    uncertainty = np.full(labels.shape, 0.2, dtype=np.float32)
    uncertainty[0, 4:6, 4:6] = 0.8
    signals = rp.class_signals(labels, uncertainty, [LIVER], (1.0, 1.0, 1.0))["liver"]
    assert signals["uncertainty_inside"] == pytest.approx(0.8)
    # the ring: the square grown by the cross (16 + 4 × 4 = 32) less the 4 centre voxels
    assert signals["uncertainty_border"] == pytest.approx(0.2)
    assert signals["doubtful_share"] == pytest.approx((28 * 0.2 + 4 * 0.8) / 16)
    priority = rp.review_priority({"liver": signals}, None)  # no training statistics known
    assert priority.score == pytest.approx(0.55)
    assert priority.reason == "liver: 55% of it uncertain"


def test_the_stored_map_round_trips_within_half_a_level() -> None:
    values = np.linspace(0, 1, 1001, dtype=np.float32).reshape(7, 11, 13)
    stored = rp.quantise_uncertainty(values)
    assert stored.dtype == np.uint8 and (stored[0, 0, 0], stored[-1, -1, -1]) == (0, 255)
    assert np.abs(rp.dequantise_uncertainty(stored) - values).max() <= 0.5 / 255 + 1e-7
    assert rp.quantise_uncertainty(np.array([-1.0, 2.0, np.nan])).tolist() == [0, 255, 255]


def test_the_slice_profile_and_the_most_doubtful_slices() -> None:
    u = np.zeros((4, 2, 2), dtype=np.float32)
    u[1] = 0.5
    u[3, 0, 0] = 1.0  # mean 0.25
    profile = rp.slice_profile(u)
    assert profile == [0.0, 0.5, 0.0, 0.25]
    assert rp.doubtful_slices(profile) == [1, 3]  # the sure slices are left out


def test_training_statistics_from_a_dataset_version_the_writer_built(tmp_path: Path) -> None:
    """Two training series: liver of 8 and 12 voxels, the second in two parts with empty slices
    between them that the writer leaves out; a test series that must not count."""
    recipe = ChannelRecipe()

    def series(uid: str, patient: str, parts: list[tuple[int, slice]]) -> SeriesVolume:
        labels = np.zeros((6, 8, 8), dtype=np.uint8)
        for z, rows in parts:
            labels[z, rows, 2:4] = LIVER.id
        return SeriesVolume(
            patient_key=patient,
            study_instance_uid=f"{uid}.0",
            series_instance_uid=uid,
            modality="CT",
            geometry=Geometry((8, 8, 6), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
            hu=np.zeros(labels.shape, dtype=np.float32),
            slices=[SliceRef(f"{uid}.{k}", k, (0.0, 0.0, 2.0 * k)) for k in range(6)],
            labels=labels,
        )

    items = [
        series("2.25.1", "a", [(1, slice(2, 4)), (2, slice(2, 4))]),  # 8 voxels, one part
        series("2.25.2", "b", [(0, slice(2, 5)), (4, slice(2, 5))]),  # 12 voxels, two parts
        series("2.25.3", "c", [(1, slice(0, 8))]),  # test split
    ]
    out = tmp_path / "v1"
    build_dataset_version(
        out,
        items,
        [LIVER],
        recipe,
        {"train": ["a", "b"], "val": [], "test": ["c"]},
        name="ds",
        version=1,
        keep_empty_ratio=0.0,
    )
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 4  # of 12 slices: the empty ones are left out
    stats = rp.reference_from_dataset(out, [LIVER, LUNG])
    assert stats["series"] == 2
    liver = stats["classes"]["liver"]
    assert liver["present"] == 2
    assert liver["volume_ml"]["median"] == pytest.approx((8 + 12) / 2 * 2 / 1000)
    assert liver["components"] == {"median": 1.5, "max": 2}
    assert stats["classes"]["lung_left"] == {"present": 0}


def test_the_signals_within_each_class_box_equal_those_over_the_whole_volume() -> None:
    """The per-class bounding box (one voxel of margin in-plane) changes no number: compared
    with erosion, dilation and labelling over the whole volume, structures at the edges too."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    smooth = ndimage.uniform_filter(rng.random((6, 20, 20)), 3)
    labels = np.digitize(smooth, np.quantile(smooth, [0.5, 0.8])).astype(np.uint8)
    uncertainty = rng.random(labels.shape).astype(np.float32)
    got = rp.class_signals(labels, uncertainty, [LUNG, LIVER], (1.0, 1.0, 1.0))
    for info in (LUNG, LIVER):
        mask = labels == info.id
        assert mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any()  # edges are hit
        grown = ndimage.binary_dilation(mask, structure=rp._IN_PLANE)
        inner = ndimage.binary_erosion(mask, structure=rp._IN_PLANE, border_value=1)
        ring = grown & ~inner
        signals = got[info.name]
        assert signals["uncertainty_inside"] == pytest.approx(uncertainty[inner].mean(), abs=1e-4)
        assert signals["uncertainty_border"] == pytest.approx(uncertainty[ring].mean(), abs=1e-4)
        share = uncertainty[grown].sum() / mask.sum()
        assert signals["doubtful_share"] == pytest.approx(share, abs=1e-4)
        parts = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
        assert signals["components"] == parts
