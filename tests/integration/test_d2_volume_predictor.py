"""The volume predictor against detectron2's own DefaultPredictor, with the same weights.

A seeded ResNet-18 semantic FPN (untrained: what matters is that both paths compute the same
function) predicts small slices through both engines; the label maps must match detectron2's
(Dice ≥ 0.999 per class, the benchmark's criterion), also with a test-time resize, BGR input,
flip TTA and per-class probabilities.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import PredictRequest
from radseg.errors import InputError
from radseg_plugins.models.detectron2 import Detectron2Backend
from tests.integration.d2_fixtures import make_slice, require_detectron2

CLASSES = [{"id": 3, "name": "liver"}, {"id": 7, "name": "spleen"}]


def make_model(work: Path, *, min_size_test: int = 0, input_format: str = "RGB") -> Path:
    """Seeded weights and the config the backend's predict takes; returns the weights file."""
    import torch

    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from radseg_plugins.models.detectron2.config import new_cfg, set_num_classes, template_path

    torch.manual_seed(0)
    cfg = new_cfg("semantic_fpn")
    cfg.merge_from_file(str(template_path("semantic_fpn")))
    set_num_classes(cfg, len(CLASSES))
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST = min_size_test
    cfg.INPUT.FORMAT = input_format
    cfg.MODEL.PIXEL_MEAN = [40.0, 60.0, 50.0]
    cfg.MODEL.PIXEL_STD = [30.0, 45.0, 35.0]
    model = build_model(cfg)
    work.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(model, save_dir=str(work)).save("model_final")
    config = {"architecture": "semantic_fpn", "cfg_yaml": cfg.dump(), "classes": CLASSES}
    (work / "config.json").write_text(json.dumps(config))
    return work / "model_final.pth"


def slices(count: int = 5, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.stack([make_slice(rng, size)[0] for _ in range(count)])


def default_predictor_scores(weights: Path, images: np.ndarray) -> np.ndarray:
    """detectron2's DefaultPredictor, slice by slice: sem_seg scores ``(z, k, y, x)``."""
    from detectron2.engine import DefaultPredictor

    from radseg_plugins.models.detectron2.config import cfg_from_saved

    config = json.loads((weights.parent / "config.json").read_text())
    cfg = cfg_from_saved(config, weights.parent)
    cfg.MODEL.WEIGHTS = str(weights)
    predictor = DefaultPredictor(cfg)
    # Volumes are in the channel recipe's order (RGB); DefaultPredictor takes BGR and reverses
    # it again for an RGB model.
    bgr = [image[:, :, ::-1] for image in images]
    return np.stack([predictor(np.ascontiguousarray(b))["sem_seg"].numpy() for b in bgr])


def to_labels(scores: np.ndarray) -> np.ndarray:
    return np.array([0, 3, 7], np.uint8)[scores.argmax(1)]


def dice(a: np.ndarray, b: np.ndarray, class_id: int) -> float:
    x, y = a == class_id, b == class_id
    return 1.0 if not (x.any() or y.any()) else 2 * float((x & y).sum()) / (x.sum() + y.sum())


def predict(weights: Path, images: np.ndarray, **kwargs: Any) -> Any:
    config = json.loads((weights.parent / "config.json").read_text())
    request = PredictRequest(
        model_dir=weights.parent,
        weights=weights,
        config=config,
        classes=[],
        images=images,
        batch_size=2,
    )
    return Detectron2Backend().predict_volume(request, **kwargs)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB model that keeps the slices' size; its weights file."""
    require_detectron2()
    return make_model(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BGR model that resizes slices to 96 px at test time; its weights file."""
    require_detectron2()
    return make_model(tmp_path_factory.mktemp("resized"), min_size_test=96, input_format="BGR")


@pytest.mark.parametrize(("engine", "model"), [("onnx", "resized"), ("torch", "plain")])
def test_same_labels_as_default_predictor(
    request: pytest.FixtureRequest, engine: str, model: str
) -> None:
    weights: Path = request.getfixturevalue(model)
    images = slices()
    expected = to_labels(default_predictor_scores(weights, images))
    result = predict(weights, images, engine=engine)
    assert result.engine == engine
    assert result.labels.shape == images.shape[:3]  # resized back to the slices' size
    for class_id in (3, 7):
        assert (expected == class_id).any()  # the check below is not vacuous
        assert dice(result.labels, expected, class_id) >= 0.999


def test_flip_tta_and_probabilities(plain: Path) -> None:
    import torch

    weights = plain
    images = slices(3)
    scores = default_predictor_scores(weights, images)
    mirrored = default_predictor_scores(weights, images[:, :, ::-1])[..., ::-1]
    expected = (
        torch.from_numpy(scores).softmax(1) + torch.from_numpy(mirrored.copy()).softmax(1)
    ) / 2
    result = predict(weights, images, flip_tta=True, probabilities=True, engine="torch")
    assert result.probabilities is not None
    assert result.probabilities.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(result.probabilities, expected.numpy(), atol=2e-3)  # float16
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(1), 1.0, atol=3e-3)
    for class_id in (3, 7):
        assert dice(result.labels, to_labels(expected.numpy()), class_id) >= 0.999
    # the mirror changes the answer: TTA is really applied
    assert not np.array_equal(to_labels(scores), to_labels(expected.numpy()))


def test_slices_of_air_only_are_background_and_the_others_unchanged(plain: Path) -> None:
    """What ``PredictRequest.body_boxes`` says is air only is not run through the model: its
    labels are background (the untrained model would label some of it), its probability
    background's, its uncertainty 0; every other slice is exactly the full path's."""
    images = slices(5)
    engine = "onnx"
    whole = predict(plain, images, engine=engine, probabilities=True, uncertainty=True)
    assert (whole.labels[[0, 3]] != 0).any()  # the model would not have said background
    boxes = np.array([[0, 0, 0, 0], [2, 60, 1, 63], [0, 9, 0, 64], [0, 0, 0, 0], [5, 6, 7, 8]])
    config = json.loads((plain.parent / "config.json").read_text())
    request = PredictRequest(
        model_dir=plain.parent,
        weights=plain,
        config=config,
        classes=[],
        images=images,
        batch_size=2,
        body_boxes=boxes,
    )
    skipped = Detectron2Backend().predict_volume(
        request, engine=engine, probabilities=True, uncertainty=True
    )
    body = [1, 2, 4]
    np.testing.assert_array_equal(skipped.labels[body], whole.labels[body])
    assert whole.probabilities is not None and skipped.probabilities is not None
    np.testing.assert_array_equal(skipped.probabilities[body], whole.probabilities[body])
    assert not skipped.labels[[0, 3]].any()
    assert (skipped.probabilities[[0, 3], 0] == 1).all()
    assert not skipped.probabilities[[0, 3], 1:].any()
    assert skipped.uncertainty is not None and not skipped.uncertainty[[0, 3]].any()
    with pytest.raises(InputError, match=r"body_boxes must be \(z, 4\)"):
        Detectron2Backend().predict_volume(replace(request, body_boxes=boxes[:, :2]))


def test_refuses_what_it_cannot_run(plain: Path) -> None:
    with pytest.raises(InputError, match="unknown engine"):
        predict(plain, slices(1), engine="tensorrt")
    with pytest.raises(InputError, match="1 or 3 channels"):
        predict(plain, np.zeros((2, 8, 8, 2), np.uint8), engine="torch")


def test_onnx_export_is_cached_per_weights(resized: Path) -> None:
    """Last in the module: it replaces the weights of the ``resized`` model."""
    model_dir = resized.parent
    predict(resized, slices(1), engine="onnx")  # exports, unless a test before did
    (exported,) = model_dir.glob("model-*.onnx")
    stamp = exported.stat().st_mtime_ns
    predict(resized, slices(1), engine="onnx")
    assert exported.stat().st_mtime_ns == stamp  # reused, not exported again
    # New weights (same file name): a new export, never the stale one.
    make_model(model_dir, min_size_test=72)
    predict(resized, slices(1), engine="onnx")
    assert len(list(model_dir.glob("model-*.onnx"))) == 2
    assert not any(p.name.endswith(".tmp") for p in model_dir.iterdir())
    assert os.access(exported, os.R_OK)
