"""The int8 engine of the volume predictor: built once, measured, chosen per model, checked.

A seeded, untrained ResNet-18 semantic FPN on 64² slices and a tiny dataset version (6 train
slices to calibrate on, 3 val slices to measure agreement on). Untrained weights give class
scores that are close everywhere, so int8 disagrees with float32 on some voxels: the tests use
that to see the fall-back, and a setting of 0 to see int8 chosen. ``auto`` tries bf16 before
int8 where the CPU has native bfloat16; here the CPU is said to have none (the capability
detection is the one thing replaced), so ``auto`` considers int8 as on such a CPU
(``test_d2_bf16.py`` tests the order).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import PredictRequest
from radseg.errors import InputError
from radseg_plugins.models.detectron2 import Detectron2Backend
from radseg_plugins.models.detectron2.settings import Detectron2Settings
from tests.integration.d2_fixtures import (
    CLASSES,
    make_dataset_version,
    model_request,
    predict_reporting,
    require_detectron2,
    seeded_slices,
)


def make_model(work: Path) -> Path:
    """Seeded, untrained weights and the config predict takes; the weights file."""
    import torch

    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from radseg_plugins.models.detectron2.config import new_cfg, set_num_classes, template_path

    torch.manual_seed(1)
    cfg = new_cfg("semantic_fpn")
    cfg.merge_from_file(str(template_path("semantic_fpn")))
    set_num_classes(cfg, len(CLASSES))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PIXEL_MEAN = [60.0, 60.0, 50.0]
    cfg.MODEL.PIXEL_STD = [60.0, 60.0, 50.0]
    work.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(build_model(cfg), save_dir=str(work)).save("model_final")
    classes = [{"id": c.id, "name": c.name} for c in CLASSES]
    config = {"architecture": "semantic_fpn", "cfg_yaml": cfg.dump(), "classes": classes}
    (work / "config.json").write_text(json.dumps(config))
    return work / "model_final.pth"


def slices(count: int = 4) -> np.ndarray:
    return seeded_slices(count)


def predict(
    weights: Path,
    dataset: Path | None,
    *,
    min_dice: float,
    check_every: int = 25,
    engine: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The backend's prediction of :func:`slices` and what it reported."""
    return predict_reporting(
        weights, dataset, slices(), min_dice=min_dice, check_every=check_every, engine=engine
    )


def int8_files(model_dir: Path) -> tuple[Path, Path]:
    (model,) = model_dir.glob("model-*.int8-*.onnx")
    return model, model.with_suffix(".json")


@pytest.fixture(scope="module", autouse=True)
def no_native_bf16() -> Iterator[None]:
    from radseg_plugins.models.detectron2 import bf16

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bf16, "native_bf16", lambda: False)
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_detectron2()
    return make_dataset_version(tmp_path_factory.mktemp("ds") / "v1", train=6, val=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> tuple[Path, dict[str, Any]]:
    """A model whose int8 engine was built (with a setting of 0: int8 chosen); the weights
    and what the first prediction reported. Tests work on copies of its folder."""
    weights = make_model(tmp_path_factory.mktemp("built") / "model")
    result, facts = predict(weights, dataset, min_dice=0.0)
    assert result.engine == "int8"
    return weights, facts


def copy_of(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    weights = built[0]
    return Path(shutil.copytree(weights.parent, tmp_path / "model")) / weights.name


def test_built_once_per_weights_with_its_agreement_recorded(
    built: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radseg_plugins.models.detectron2 import int8

    weights, facts = built
    _, record_file = int8_files(weights.parent)
    record = json.loads(record_file.read_text())
    # calibrated on the training split, measured on the val split, per class, both stored
    assert record["calibration"] == {"split": "train", "slices": 6}
    agreement = record["agreement"]
    assert agreement["slices"] == 3 and agreement["on"] == "val split (v1)"
    assert set(agreement["per_class"]) == {"disc", "square"}
    assert facts["engine"] == "int8"
    assert facts["int8"]["agreement"] == agreement
    assert facts["int8"]["measured"] is True and facts["int8"]["min_dice_setting"] == 0.0
    # every int8 prediction is checked against float32 on sampled slices: every 25th, and at
    # least 4 (here all 4 of the prediction)
    assert facts["int8_check"]["slices"] == 4 and facts["int8_check"]["passed"] is True

    # A second load (a new process would do the same) reuses the cached model and record.
    copy = copy_of(built, tmp_path)
    stamp = int8_files(copy.parent)[0].stat().st_mtime_ns

    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the int8 model was built again")

    monkeypatch.setattr(int8, "quantize", no_rebuild)
    again, _ = predict(copy, None, min_dice=0.0)  # no dataset needed once it is cached
    assert again.engine == "int8"
    assert int8_files(copy.parent)[0].stat().st_mtime_ns == stamp


def test_the_check_samples_only_the_slices_that_were_run(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Slices of air only (``body_boxes``) are background in both engines' answers: the
    per-prediction check compares the slices int8 predicted, not ones it never ran."""
    weights = copy_of(built, tmp_path)
    facts: dict[str, Any] = {}
    request = model_request(
        weights,
        slices(),
        batch_size=2,
        report=facts.update,
        body_boxes=np.array([[0, 0, 0, 0], [1, 60, 2, 50], [0, 0, 0, 0], [3, 9, 0, 64]]),
    )
    settings = Detectron2Settings(reduced_precision_min_dice=0.0, reduced_precision_check_every=1)
    result = Detectron2Backend(settings).predict_volume(request)
    assert result.engine == "int8"
    assert facts["int8_check"]["slices"] == 2  # slices 1 and 3, every one of them
    assert not result.labels[[0, 2]].any()


def test_float32_where_the_agreement_is_below_the_setting(
    built: tuple[Path, dict[str, Any]], tmp_path: Path, dataset: Path
) -> None:
    weights = copy_of(built, tmp_path)
    measured = built[1]["int8"]["agreement"]["min_dice"]
    assert measured < 0.999  # untrained weights: int8 changes some voxels' class
    result, facts = predict(weights, dataset, min_dice=0.999)
    assert result.engine == "onnx"
    f32, _ = predict(weights, dataset, min_dice=0.999, engine="onnx")
    assert np.array_equal(result.labels, f32.labels)  # float32's answer, voxel for voxel
    assert facts["int8"]["engine"] == "onnx"
    reason = f"lowest per-class Dice with float32 {measured:.4f} < 0.999"
    assert facts["int8"]["reason"] == reason
    assert "int8_check" not in facts


def test_a_failed_check_gives_float32s_answer_and_keeps_the_model_on_float32(
    built: tuple[Path, dict[str, Any]], tmp_path: Path, dataset: Path
) -> None:
    from radseg_plugins.models.detectron2.volume import VolumePredictor

    weights = copy_of(built, tmp_path)
    config = json.loads((weights.parent / "config.json").read_text())
    request = PredictRequest(
        model_dir=weights.parent,
        weights=weights,
        config=config,
        classes=[],
        images=slices(),
        dataset_dir=dataset,
    )
    predictor = VolumePredictor.load(request, "cpu", min_dice=0.0)
    assert predictor.engine == "int8"
    # What a prediction unlike the val split does: its check falls below the setting.
    predictor.min_dice = 1.0
    result, facts = predictor.predict_checked(slices(), check_every=1, batch_size=2)
    assert facts["int8_check"]["slices"] == 4
    assert facts["int8_check"]["passed"] is False
    assert facts["int8_check"]["min_dice"] < 1.0
    assert result.engine == facts["engine"] == "onnx"
    f32, _ = predict(weights, dataset, min_dice=0.0, engine="onnx")
    assert np.array_equal(result.labels, f32.labels)
    # remembered for these weights: even a lenient setting stays on float32 from now on
    later, later_facts = predict(weights, dataset, min_dice=0.0)
    assert later.engine == "onnx"
    assert later_facts["int8"]["reason"].startswith("a check on 4 predicted slices")


def test_corrupt_cache_files_are_rebuilt(
    built: tuple[Path, dict[str, Any]], tmp_path: Path, dataset: Path
) -> None:
    from radseg_plugins.models.detectron2 import reduced

    weights = copy_of(built, tmp_path)
    model, record_file = int8_files(weights.parent)
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # a torn file under the real name
    result, _ = predict(weights, dataset, min_dice=0.0)
    assert result.engine == "int8"
    record = json.loads(record_file.read_text())
    assert reduced.file_sha256(model) == record["sha256"]  # rebuilt whole, and recorded

    (f32,) = [p for p in weights.parent.glob("model-*.onnx") if ".int8-" not in p.name]
    f32.write_bytes(b"not an onnx model")
    result, _ = predict(weights, dataset, min_dice=0.0, engine="onnx")
    assert result.engine == "onnx"
    assert f32.stat().st_size > 1000  # exported again
    assert not [p for p in weights.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_int8_by_name_needs_a_model_or_a_dataset(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    weights = copy_of(built, tmp_path)
    for path in int8_files(weights.parent):
        path.unlink()  # the float32 model stays cached; no int8 model for these weights
    with pytest.raises(InputError, match="training split"):
        predict(weights, None, min_dice=0.0, engine="int8")
    # "auto" without a dataset to calibrate on predicts in float32 and says int8 is unmeasured
    result, facts = predict(weights, None, min_dice=0.0)
    assert result.engine == "onnx"
    assert facts["int8"] == {"engine": "onnx", "min_dice_setting": 0.0, "measured": False}
