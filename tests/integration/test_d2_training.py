"""Training with validation: medical metrics every N iterations, the best checkpoint, early
stopping, the history (and its resume), pixel statistics of the training split, augmentations
that respect left and right, and a class count no head can disagree with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from radseg.contracts import ClassInfo, TrainRequest, TrainResult
from radseg.errors import InputError
from radseg.web.curves import read_validations, training_curves
from radseg_plugins.models.detectron2 import Detectron2Backend, Detectron2Settings
from radseg_plugins.models.detectron2.augment import flips_allowed, lateral_classes
from radseg_plugins.models.detectron2.options import TrainOptions
from tests.integration.d2_fixtures import (
    CLASSES,
    load_split_arrays,
    make_dataset_version,
    require_detectron2,
)

QUICK = {"architecture": "semantic_fpn", "batch_size": 2, "num_workers": 0}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_detectron2()
    return make_dataset_version(tmp_path_factory.mktemp("d2t") / "dataset", train=4, val=2)


def _train(dataset_dir: Path, output_dir: Path, config: dict[str, Any]) -> TrainResult:
    messages: list[str] = []
    request = TrainRequest(
        dataset_dir=dataset_dir, output_dir=output_dir, classes=CLASSES, config=config
    )
    result = Detectron2Backend().train(request, lambda f, m: messages.append(m))
    result.metrics["_messages"] = messages
    return result


def test_flips_are_refused_for_lateral_classes() -> None:
    names = ["lung_left", "Lung R", "kidney_l", "left adrenal", "heart", "liver", "spleen"]
    assert lateral_classes(names) == ["lung_left", "Lung R", "kidney_l", "left adrenal"]
    assert not flips_allowed(TrainOptions(), ["heart", "liver"])  # opt-in
    assert flips_allowed(TrainOptions(flip=True), ["heart", "liver", "trachea"])
    assert flips_allowed(TrainOptions(), ["heart"], random_flip="horizontal")
    with pytest.raises(InputError, match=r"lung_left.*swap left and right"):
        flips_allowed(TrainOptions(flip=True), ["lung_left", "heart"])
    with pytest.raises(InputError, match=r"INPUT\.RANDOM_FLIP"):
        flips_allowed(TrainOptions(), ["kidney_l"], random_flip="horizontal")
    assert not flips_allowed(TrainOptions(), ["kidney_l"], random_flip="vertical")


@pytest.mark.parametrize("architecture", ["semantic_fpn", "deeplabv3plus", "mask_rcnn"])
def test_flips_are_off_unless_asked_for(architecture: str, tmp_path: Path) -> None:
    """What the user guide says of ``radseg train --option flip=…``, read from the path a
    training takes: the CLI's option parsing, the plugin's defaults, the template's cfg, the
    augmentation list and what the model version records."""
    require_detectron2()
    from radseg.cli.common import parse_assignment
    from radseg_plugins.models.detectron2 import compat, config

    compat.apply()
    import detectron2.data.transforms as T

    from radseg_plugins.models.detectron2.augment import build_augmentations
    from radseg_plugins.models.detectron2.data import ClassIndex
    from radseg_plugins.models.detectron2.training import predict_config

    index = ClassIndex.of([ClassInfo(1, "heart"), ClassInfo(2, "liver")])  # no side
    for given, flips in (((), False), (("flip=true",), True), (("flip=false",), False)):
        asked = dict(parse_assignment(o) for o in given)
        options = TrainOptions.from_config(
            Detectron2Backend()._with_defaults({"architecture": architecture, **asked})
        )
        cfg = config.build_train_cfg(
            options, num_classes=2, train_dataset="x", output_dir=tmp_path, device="cpu"
        )
        augs = build_augmentations(cfg, options, index.names, base_size=64)
        horizontal = [a for a in augs if isinstance(a, T.RandomFlip) and a.horizontal]
        assert bool(horizontal) is flips, (given, augs)
        assert predict_config(cfg, options, index)["augmentations"]["flip"] is flips


def test_training_refuses_a_flip_with_lateral_classes(tmp_path: Path) -> None:
    require_detectron2()
    dataset = make_dataset_version(tmp_path / "ds", train=1, val=0)
    request = TrainRequest(
        dataset_dir=dataset,
        output_dir=tmp_path / "m",
        classes=[ClassInfo(1, "lung_left"), ClassInfo(2, "lung_right")],
        config={**QUICK, "iterations": 1, "flip": True},
    )
    with pytest.raises(InputError, match="swap left and right"):
        Detectron2Backend().train(request)
    assert not (tmp_path / "m" / "model_final.pth").exists()


def test_no_head_can_disagree_with_the_dataset_class_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_detectron2()
    from radseg_plugins.models.detectron2 import compat, config

    compat.apply()
    for architecture in ("semantic_fpn", "mask_rcnn"):
        # A template that states wrong counts in every head is overruled by the dataset's.
        template = tmp_path / f"{architecture}.yaml"
        text = config.template_path(architecture).read_text()
        text = text.replace("MODEL:\n", "MODEL:\n  RETINANET:\n    NUM_CLASSES: 80\n", 1)
        template.write_text(text.replace("  ROI_HEADS:\n", "  ROI_HEADS:\n    NUM_CLASSES: 80\n"))
        monkeypatch.setattr(config, "template_path", lambda a, t=template: t)
        options = TrainOptions.from_config({"architecture": architecture})
        cfg = config.build_train_cfg(
            options, num_classes=5, train_dataset="x", output_dir=tmp_path, device="cpu"
        )
        counts = dict(config.num_classes_keys(cfg))
        assert counts["MODEL.ROI_HEADS.NUM_CLASSES"] == 5
        assert counts["MODEL.RETINANET.NUM_CLASSES"] == 5
        assert counts["MODEL.SEM_SEG_HEAD.NUM_CLASSES"] == 6  # + background
    for key in ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.RETINANET.NUM_CLASSES"):
        with pytest.raises(InputError, match="number of classes comes from the dataset"):
            TrainOptions.from_config({"overrides": {key: 3}})


def test_validates_keeps_the_best_and_resumes_the_history(
    dataset_dir: Path, tmp_path: Path
) -> None:
    import torch

    out = tmp_path / "model"
    first = _train(dataset_dir, out, {**QUICK, "iterations": 2, "eval_period": 1})
    history = json.loads((out / "history.json").read_text())["validations"]
    assert [e["iteration"] for e in history] == [1, 2]  # every iteration and after the last
    for entry in history:
        assert set(entry["dice"]) == {"disc", "square"}
        assert entry["loss"] is not None and entry["lr"] is not None
    best = max(history, key=lambda e: e["mean_dice"])
    assert first.metrics["best"] == {"iteration": best["iteration"], "mean_dice": best["mean_dice"]}
    assert first.weights == out / "model_best.pth"
    saved = torch.load(first.weights, map_location="cpu", weights_only=True)
    assert saved["iteration"] == best["iteration"]
    assert saved["mean_dice"] == pytest.approx(best["mean_dice"])
    assert set(saved) == {"model", "iteration", "mean_dice"}  # weights only, no optimizer
    assert (out / "last_checkpoint").read_text() == "model_final.pth"  # resume is not "best"
    # The 3D metrics of radseg.metrics per class, with the series' spacing
    volume = first.metrics["val"]["volume"]
    assert {"dice", "hd95", "assd", "surface_dice", "volume_diff_mm3"} <= set(
        volume["per_class"]["disc"]
    )
    assert any("validation at iter 1: mean Dice" in m for m in first.metrics["_messages"])
    # the pixel statistics are the training split's, in the order the model reads channels
    train_pngs = sorted((dataset_dir / "images").glob("train*.png"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in train_pngs])
    np.testing.assert_allclose(first.config["pixel_mean"], images.mean((0, 1, 2)), atol=1e-3)
    np.testing.assert_allclose(first.config["pixel_std"], images.std((0, 1, 2)), atol=1e-3)

    resumed = _train(dataset_dir, out, {**QUICK, "iterations": 3, "eval_period": 1})
    assert resumed.metrics["start_iteration"] == 2
    assert [e["iteration"] for e in resumed.metrics["history"]] == [1, 2, 3]  # no duplicates
    # the curves a job's page draws from the files this run and its resume wrote
    curves = training_curves(out / "metrics.json", read_validations(out / "history.json"))
    loss_x = [p[0] for p in curves["loss"]["raw"]]
    assert loss_x and loss_x == sorted(set(loss_x)) and loss_x[-1] == 2.0  # the last iteration
    assert [p[0] for p in curves["dice"]["mean"]] == [1.0, 2.0, 3.0]
    assert {k: [p[0] for p in v] for k, v in curves["dice"]["classes"].items()} == {
        "disc": [1.0, 2.0, 3.0],
        "square": [1.0, 2.0, 3.0],
    }


def test_early_stopping_by_patience(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    # No learning (lr 0): the second validation cannot beat the first, patience 1 stops there.
    result = _train(
        dataset_dir,
        out,
        {**QUICK, "iterations": 20, "eval_period": 1, "patience": 1, "base_lr": 0.0},
    )
    assert result.iterations == 2
    assert "stopped early at iteration 2" in result.metrics["stopped_early"]
    assert [e["iteration"] for e in result.metrics["history"]] == [1, 2]
    assert (out / "model_final.pth").is_file()  # the last state, for a resume
    assert result.weights == out / "model_best.pth"


def test_validation_metrics_agree_with_radseg_metrics(dataset_dir: Path, tmp_path: Path) -> None:
    """The validation's 3D numbers are radseg.metrics on the val slices put back together."""
    from radseg.contracts import PredictRequest
    from radseg.metrics import class_metrics

    result = _train(dataset_dir, tmp_path / "m", {**QUICK, "iterations": 1})
    images, labels = load_split_arrays(dataset_dir, "val")
    backend = Detectron2Backend(Detectron2Settings(predict_engine="torch"))
    predicted = backend.predict(
        PredictRequest(
            model_dir=tmp_path / "m",
            weights=result.weights,
            config=result.config,
            classes=CLASSES,
            images=images,
        )
    )
    expected = class_metrics(predicted, labels, [1, 2])
    studies = result.metrics["val"]["volume"]["studies"]
    (study,) = studies.values()  # the fixture's val slices are one series with spacing 1
    for class_id, name in ((1, "disc"), (2, "square")):
        assert study["per_class"][name]["dice"] == pytest.approx(expected[class_id].dice, abs=1e-3)


def test_refuses_bad_training_options() -> None:
    with pytest.raises(InputError, match="'pixel_stats'"):
        TrainOptions.from_config({"pixel_stats": "imagenet"})
    with pytest.raises(InputError, match=r"'patience' must be at least 1"):
        TrainOptions.from_config({"patience": 0})
    with pytest.raises(InputError, match="'flip' must be true or false"):
        TrainOptions.from_config({"flip": "yes"})
    assert TrainOptions.from_config({"iterations": 500}).validation_period() == 50
    assert TrainOptions.from_config({"iterations": 50}).validation_period() == 0
