"""The detectron2 backend's per-voxel uncertainty (:func:`radseg_plugins.models.detectron2.volume.
voxel_uncertainty`): hand-worked softmaxes, then a real (tiny, untrained) semantic FPN through
both engines against detectron2's own ``DefaultPredictor`` scores, and the plugin contract: a
request without ``uncertainty`` still gets a bare label array."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from radseg.contracts import PredictOutput, PredictRequest
from radseg_plugins.models.detectron2 import Detectron2Backend
from radseg_plugins.models.detectron2.settings import Detectron2Settings
from tests.integration.d2_fixtures import model_request, require_detectron2
from tests.integration.test_d2_volume_predictor import (
    default_predictor_scores,
    make_model,
    slices,
)


def test_the_uncertainty_of_hand_worked_softmaxes() -> None:
    import torch

    from radseg_plugins.models.detectron2.volume import voxel_uncertainty

    def at(*p: float) -> torch.Tensor:
        return torch.tensor(p, dtype=torch.float32).reshape(1, len(p), 1, 1)

    assert voxel_uncertainty(at(1, 0, 0)).item() == pytest.approx(0.0, abs=1e-6)
    assert voxel_uncertainty(at(1 / 3, 1 / 3, 1 / 3)).item() == pytest.approx(1.0)
    assert voxel_uncertainty(at(0.5, 0.5, 0)).item() == pytest.approx(math.log(2) / math.log(3))
    # two passes sure of different classes: their mean is only 0.63 unsure, they disagree fully
    first, second = at(1, 0, 0), at(0, 1, 0)
    mean = (first + second) / 2
    assert voxel_uncertainty(mean, (first, second)).item() == pytest.approx(1.0)
    # passes that agree: the entropy alone
    assert voxel_uncertainty(mean, (mean, mean)).item() == pytest.approx(math.log(2) / math.log(3))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_detectron2()
    return make_model(tmp_path_factory.mktemp("doubt"))


def request_for(weights: Path, images: np.ndarray, *, uncertainty: bool) -> PredictRequest:
    request: PredictRequest = model_request(weights, images, batch_size=2, uncertainty=uncertainty)
    return request


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(1) / math.log(p.shape[1])


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_the_uncertainty_is_the_softmax_entropy_of_detectron2s_scores(
    weights: Path, engine: str
) -> None:
    images = slices(3)
    expected = entropy(softmax(default_predictor_scores(weights, images)))
    backend = Detectron2Backend(Detectron2Settings(predict_engine=engine))
    out = backend.predict(request_for(weights, images, uncertainty=True))
    assert isinstance(out, PredictOutput)
    assert out.method == "softmax entropy"
    assert out.uncertainty is not None and out.uncertainty.shape == images.shape[:3]
    assert expected.std() > 0.01  # the comparison is not between two constants
    np.testing.assert_allclose(out.uncertainty.astype(np.float32), expected, atol=3e-3)
    bare = backend.predict(request_for(weights, images, uncertainty=False))
    assert isinstance(bare, np.ndarray) and np.array_equal(bare, out.labels)


def test_with_flip_tta_the_larger_of_entropy_and_the_passes_disagreement(weights: Path) -> None:
    images = slices(3)
    first = softmax(default_predictor_scores(weights, images))
    second = softmax(default_predictor_scores(weights, images[:, :, ::-1])[..., ::-1])
    mean = (first + second) / 2
    expected = np.maximum(entropy(mean), np.abs(first - second).sum(1) / 2)
    result = Detectron2Backend().predict_volume(
        request_for(weights, images, uncertainty=True),
        uncertainty=True,
        flip_tta=True,
        engine="torch",
    )
    assert result.uncertainty_method.startswith("softmax entropy and flip TTA disagreement")
    assert result.uncertainty is not None
    np.testing.assert_allclose(result.uncertainty.astype(np.float32), expected, atol=3e-3)
    assert (np.abs(first - second).sum(1) / 2 > entropy(mean)).any()  # the disagreement counts
