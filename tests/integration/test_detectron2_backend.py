"""The detectron2 backend on a CPU: train, resume, evaluate and predict, through the compat.

Every architecture trains a couple of iterations on a tiny synthetic dataset version, resumes
into a longer run from its checkpoint, reports validation metrics and predicts label maps.
The slow tests show that semantic FPN actually learns and that ``launch`` trains with two
(gloo) processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from radseg.contracts import ModelBackend, PredictRequest, TrainRequest, TrainResult
from radseg_plugins.models.detectron2 import Detectron2Backend, radseg_register_models
from radseg_plugins.models.detectron2.config import cfg_from_saved
from tests.integration.d2_fixtures import (
    CLASSES,
    load_split_arrays,
    make_dataset_version,
    require_detectron2,
)
from tests.support import require

#: keep CPU runs short: no data-loader processes, two images per iteration
QUICK = {"batch_size": 2, "num_workers": 0}
#: Mask R-CNN for 64-pixel slices: smaller anchors, fewer proposals and sampled RoIs
SMALL_OVERRIDES: dict[str, dict[str, object]] = {
    "semantic_fpn": {},
    "deeplabv3plus": {},
    "mask_rcnn": {
        "MODEL.ANCHOR_GENERATOR.SIZES": [[8], [16], [32], [64], [128]],
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 400,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 200,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
        "MODEL.ROI_MASK_HEAD.CONV_DIM": 64,
    },
}


class Progress:
    """A ProgressFn that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        assert 0.0 <= fraction <= 1.0, (fraction, message)
        self.calls.append((fraction, message))

    def losses(self) -> list[float]:
        return [float(m.split("loss=")[1]) for _, m in self.calls if "loss=" in m]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_detectron2()
    return make_dataset_version(tmp_path_factory.mktemp("d2") / "dataset")


def _train(
    dataset_dir: Path, output_dir: Path, config: dict[str, object], progress: Callable[..., None]
) -> TrainResult:
    request = TrainRequest(
        dataset_dir=dataset_dir, output_dir=output_dir, classes=CLASSES, config=config
    )
    return Detectron2Backend().train(request, progress)


def test_plugin_registers_the_backend() -> None:
    (backend,) = radseg_register_models()
    assert backend is Detectron2Backend
    assert backend.name == "detectron2"
    assert set(backend.architectures) == {"semantic_fpn", "deeplabv3plus", "mask_rcnn"}
    assert isinstance(Detectron2Backend(), ModelBackend)


@pytest.mark.parametrize("architecture", ["semantic_fpn", "deeplabv3plus", "mask_rcnn"])
def test_trains_resumes_evaluates_and_predicts(
    architecture: str, dataset_dir: Path, tmp_path: Path
) -> None:
    import torch

    output_dir = tmp_path / "model"
    config = {"architecture": architecture, **QUICK, "overrides": SMALL_OVERRIDES[architecture]}
    progress = Progress()

    first = _train(dataset_dir, output_dir, {**config, "iterations": 2}, progress)
    assert first.iterations == 2
    assert first.weights == output_dir / "model_final.pth"
    assert first.weights.is_file()
    assert (output_dir / "config.yaml").is_file()
    assert first.metrics["start_iteration"] == 0
    assert any(m.startswith("iter 2/2 loss=") for _, m in progress.calls)
    val = first.metrics["val"]
    assert val["images"] == 2
    assert set(val["per_class"]) == {"disc", "square"}
    if architecture == "mask_rcnn":
        assert {"bbox", "segm"} <= set(val["coco"])
    json.dumps(first.metrics, allow_nan=False)
    json.dumps(first.config, allow_nan=False)
    assert first.config["architecture"] == architecture
    assert first.config["num_classes"] == 2

    # A re-run asking for more iterations continues from the checkpoint, not from 0.
    second = _train(dataset_dir, output_dir, {**config, "iterations": 4}, Progress())
    assert second.metrics["start_iteration"] == 2
    assert second.iterations == 4
    checkpoint = torch.load(second.weights, map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 3  # the last iteration done, counted from 0
    assert "optimizer" in checkpoint["trainer"]["_trainer"]  # resumable optimizer state

    images, labels = load_split_arrays(dataset_dir, "val")
    predicted = Detectron2Backend().predict(
        PredictRequest(
            model_dir=output_dir,
            weights=second.weights,
            config=second.config,
            classes=CLASSES,
            images=images,
            batch_size=2,
        ),
        Progress(),
    )
    assert predicted.shape == labels.shape
    assert predicted.dtype == np.uint8
    assert set(np.unique(predicted)) <= {0, 1, 2}


def test_amp_on_cpu_resumes_and_resume_false_starts_over(dataset_dir: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "model"
    config = {"architecture": "semantic_fpn", **QUICK, "iterations": 1}
    _train(dataset_dir, output_dir, config, Progress())

    # Mixed precision (bfloat16 on a CPU), resumed from a checkpoint written without it.
    amp = _train(dataset_dir, output_dir, {**config, "iterations": 2, "amp": True}, Progress())
    assert (amp.metrics["start_iteration"], amp.iterations) == (1, 2)
    assert cfg_from_saved(amp.config, output_dir).SOLVER.AMP.ENABLED

    request = TrainRequest(
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        classes=CLASSES,
        config={**config, "iterations": 2},
        resume=False,
    )
    again = Detectron2Backend().train(request, Progress())
    assert again.metrics["start_iteration"] == 0
    assert again.iterations == 2


@pytest.mark.slow
def test_semantic_fpn_learns_the_shapes(tmp_path: Path) -> None:
    require_detectron2()
    dataset_dir = make_dataset_version(tmp_path / "dataset", train=8, val=4, seed=1)
    output_dir = tmp_path / "model"
    progress = Progress()
    config = {
        "architecture": "semantic_fpn",
        "iterations": 50,
        "batch_size": 4,
        "base_lr": 0.02,
        "num_workers": 0,
    }
    result = _train(dataset_dir, output_dir, config, progress)

    losses = progress.losses()
    assert losses[-1] < 0.5 * losses[0], losses
    val = result.metrics["val"]
    assert val["per_class"]["disc"]["dice"] > 0.5, val
    assert val["per_class"]["square"]["dice"] > 0.5, val

    # The saved model, loaded by predict on its own, agrees with the labels as well.
    images, labels = load_split_arrays(dataset_dir, "val")
    predicted = Detectron2Backend().predict(
        PredictRequest(
            model_dir=output_dir,
            weights=result.weights,
            config=result.config,
            classes=CLASSES,
            images=images,
            batch_size=3,
        ),
        Progress(),
    )
    for class_id in (1, 2):
        truth, guess = labels == class_id, predicted == class_id
        dice = 2 * np.count_nonzero(truth & guess) / (truth.sum() + guess.sum())
        assert dice > 0.5, (class_id, dice)


@pytest.mark.slow
def test_launch_trains_with_two_cpu_processes(dataset_dir: Path, tmp_path: Path) -> None:
    import torch

    require(
        not torch.cuda.is_available(),
        "this test needs a machine without CUDA: with CUDA, launch starts one NCCL process per "
        "GPU, not gloo CPU processes",
    )
    output_dir = tmp_path / "model"
    progress = Progress()
    config = {"architecture": "semantic_fpn", **QUICK, "iterations": 2, "num_gpus": 2}
    result = _train(dataset_dir, output_dir, config, progress)
    assert result.iterations == 2
    assert result.weights.is_file()
    assert result.metrics["val"]["images"] == 2
    assert progress.calls[-1] == (1.0, "trained 2 iterations in 2 processes")
