"""The per-class Dice a reduced-precision engine (bf16, int8) is judged by, and which classes
a per-prediction check judges at all, and when the measurement adds training slices (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from radseg.contracts import ClassInfo
from radseg_plugins.models.detectron2.data import ClassIndex
from radseg_plugins.models.detectron2.reduced import Agreement, DiceCounter
from radseg_plugins.models.detectron2.volume import CHECK_MIN_VOXELS


def _counter() -> tuple[DiceCounter, np.ndarray, np.ndarray]:
    """A large class whose border moved by 10 voxels, and a small one (two 150-voxel discs of
    a 128² slice) that lost 10 of its voxels."""
    index = ClassIndex.of([ClassInfo(1, "liver"), ClassInfo(2, "kidneys")])
    f32 = np.zeros((2, 128, 128), np.uint8)
    f32[:, 10:60, 10:60] = 1  # 2,500 voxels a slice
    f32[0, 80:90, 80:95] = 2  # 150
    f32[1, 80:90, 80:95] = 2
    reduced = f32.copy()
    reduced[0, 10, 10:20] = 0  # liver: 10 voxels fewer
    reduced[1, 80, 80:90] = 0  # kidneys: 10 voxels fewer
    counter = DiceCounter(index)
    counter.add(reduced, f32)
    return counter, reduced, f32


def test_dice_per_class_is_the_overlap_of_the_two_engines_labels() -> None:
    counter, reduced, f32 = _counter()
    dice = counter.per_class()
    for class_id, name in ((1, "liver"), (2, "kidneys")):
        a, b = reduced == class_id, f32 == class_id
        assert dice[name] == round(2 * (a & b).sum() / (a.sum() + b.sum()), 6)
    assert dice["kidneys"] is not None and dice["kidneys"] < 0.99 < dice["liver"]  # type: ignore[operator]


def test_a_check_does_not_judge_a_class_on_too_few_voxels() -> None:
    """10 voxels of a 300-voxel class make it fail a 0.99 bar; the check leaves it to the
    agreement measured on the whole val split and judges the large class alone."""
    counter, _, _ = _counter()
    judged = counter.per_class(min_voxels=CHECK_MIN_VOXELS)
    assert judged["kidneys"] is None
    assert judged["liver"] == counter.per_class()["liver"]
    check = Agreement(judged, 2, "slices sampled from a prediction")
    assert check.meets(0.99)
    assert not Agreement(counter.per_class(), 2, "slices sampled from a prediction").meets(0.99)


def test_a_class_neither_engine_predicts_has_no_dice() -> None:
    index = ClassIndex.of([ClassInfo(1, "liver"), ClassInfo(3, "spleen")])
    counter = DiceCounter(index)
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, :4] = 1
    counter.add(labels, labels)
    assert counter.per_class() == {"liver": 1.0, "spleen": None}


def test_the_classes_too_small_to_judge_on_the_val_split_are_named() -> None:
    """The kidneys (about 580 voxels of the two engines together) are too few for a 0.99 bar
    to mean anything: the measurement then adds training slices. A class neither engine
    predicts is not small, it is absent."""
    counter, _, _ = _counter()
    assert counter.sparse(2000) == ["kidneys"]
    assert counter.sparse(500) == []
    empty = DiceCounter(ClassIndex.of([ClassInfo(1, "liver"), ClassInfo(3, "tumour")]))
    empty.add(np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8))
    assert empty.sparse(2000) == []


def test_the_training_slices_added_leave_out_those_measured_and_calibrated_on(
    tmp_path: Path,
) -> None:
    from radseg_plugins.models.detectron2 import reduced

    dataset = tmp_path / "v1"
    (dataset / "annotations").mkdir(parents=True)
    train = [f"images/train_{i:03d}.png" for i in range(50)]
    (dataset / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": [{"id": i, "file_name": name} for i, name in enumerate(train)]})
    )
    paths = [dataset / name for name in train]
    more = reduced.more_agreement_slices(dataset, used=paths[:5], leave_out=paths[5:10])
    assert len(more) == reduced.AGREEMENT_SLICES  # evenly spread over the 40 left
    assert more[0] == paths[10] and more[-1] == paths[-1]
    assert not set(more) & set(paths[:10])
    assert reduced.more_agreement_slices(dataset, used=paths[:30], leave_out=paths[30:]) == []
