"""The bf16 engine of the volume predictor: measured once, chosen per model, checked, cached.

A ResNet-18 semantic FPN trained for 30 iterations on the tiny two-shape dataset version (8
train slices, 4 val slices to measure agreement on): trained, its class scores are apart, and
bfloat16 changes few voxels' class, so ``auto`` takes bf16 at the default setting; a setting
of 1.0 (bfloat16 changes some voxel) and a failed per-prediction check show the fall-backs.
bf16 runs on any CPU (torch emulates bfloat16 where the CPU has no AMX or AVX512-BF16); only
the capability detection is replaced, to see what ``auto`` does on a CPU without it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import TrainRequest
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


def slices(count: int = 6) -> np.ndarray:
    return seeded_slices(count)


def predict(
    weights: Path,
    dataset: Path | None,
    *,
    min_dice: float = 0.99,
    check_every: int = 25,
    engine: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The backend's prediction of :func:`slices` and what it reported."""
    return predict_reporting(
        weights, dataset, slices(), min_dice=min_dice, check_every=check_every, engine=engine
    )


def bf16_records(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob("model-*.bf16-*.json"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_detectron2()
    return make_dataset_version(tmp_path_factory.mktemp("ds") / "v1", train=8, val=4, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """The weights of the trained model (with its ``config.json``); tests work on copies."""
    output = tmp_path_factory.mktemp("trained") / "model"
    config = {
        "architecture": "semantic_fpn",
        "iterations": 30,
        "batch_size": 4,
        "base_lr": 0.02,
        "num_workers": 0,
    }
    request = TrainRequest(dataset_dir=dataset, output_dir=output, classes=CLASSES, config=config)
    result = Detectron2Backend().train(request, lambda fraction, message: None)
    (output / "config.json").write_text(json.dumps(result.config))
    # the float32 ONNX model and the int8 model, cached in the folder the tests copy
    predict(Path(result.weights), dataset, engine="int8")
    return Path(result.weights)


@pytest.fixture
def weights(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained.parent, tmp_path / "model")) / trained.name


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU computes in bfloat16 natively, whatever the test machine's CPU is."""
    from radseg_plugins.models.detectron2 import bf16

    monkeypatch.setattr(bf16, "native_bf16", lambda: True)


def labels_dice(a: np.ndarray, b: np.ndarray, class_id: int) -> float:
    x, y = a == class_id, b == class_id
    return 2 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))


@pytest.mark.usefixtures("native")
def test_auto_takes_bf16_on_a_trained_model_measured_on_the_val_split(
    weights: Path, dataset: Path
) -> None:
    import torch

    result, facts = predict(weights, dataset)
    (record_file,) = bf16_records(weights.parent)
    record = json.loads(record_file.read_text())
    agreement = record["agreement"]
    # measured once on the val split of the model's dataset version, per class, recorded;
    # both classes are small on its 4 slices, so the 8 training slices are measured too
    assert record["engine"] == "bf16" and record["calibration"] is None
    assert agreement["slices"] == 4 + 8
    assert agreement["on"] == (
        "val split (v1) and 8 slices of its train split (disc, square: fewer than 2000 voxels "
        "on the val split)"
    )
    assert set(agreement["per_class"]) == {"disc", "square"}
    assert record["runtime"] == {"torch": torch.__version__}
    # trained, bfloat16 keeps the classes: auto takes bf16 at the default setting, not int8
    assert agreement["min_dice"] >= 0.99
    assert result.engine == facts["engine"] == "bf16"
    assert facts["bf16"]["agreement"] == agreement
    assert (
        facts["bf16"]["reason"]
        == f"lowest per-class Dice with float32 {agreement['min_dice']:.4f} ≥ 0.99"
    )
    assert "int8" not in facts and "int8_check" not in facts
    # the check samples at least 4 slices, here all 4 of the prediction
    assert facts["bf16_check"]["slices"] == 4 and facts["bf16_check"]["passed"] is True
    # its labels are float32's but for a few voxels
    f32, _ = predict(weights, dataset, engine="onnx")
    for class_id in (1, 2):
        assert labels_dice(result.labels, f32.labels, class_id) >= 0.99


@pytest.mark.usefixtures("native")
def test_where_every_class_is_large_enough_on_the_val_split_it_alone_is_measured(
    weights: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radseg_plugins.models.detectron2 import reduced

    monkeypatch.setattr(reduced, "AGREEMENT_MIN_VOXELS", 1)
    _, facts = predict(weights, dataset)
    agreement = facts["bf16"]["agreement"]
    assert agreement["slices"] == 4 and agreement["on"] == "val split (v1)"


@pytest.mark.usefixtures("native")
def test_below_the_setting_auto_tries_int8_then_predicts_in_float32(
    weights: Path, dataset: Path
) -> None:
    result, facts = predict(weights, dataset, min_dice=1.0)
    bf16_worst = facts["bf16"]["agreement"]["min_dice"]
    int8_worst = facts["int8"]["agreement"]["min_dice"]
    assert bf16_worst < 1.0 and int8_worst < 1.0  # both change some voxel's class
    assert result.engine == facts["engine"] == "onnx"
    assert facts["bf16"]["reason"] == f"lowest per-class Dice with float32 {bf16_worst:.4f} < 1.0"
    assert facts["int8"]["reason"] == f"lowest per-class Dice with float32 {int8_worst:.4f} < 1.0"
    assert facts["bf16"]["engine"] == facts["int8"]["engine"] == "onnx"
    # int8 was calibrated on all 8 training slices: none is left to add to its measurement
    assert facts["int8"]["agreement"]["slices"] == 4
    assert facts["int8"]["agreement"]["on"] == "val split (v1)"
    f32, _ = predict(weights, dataset, engine="onnx")
    assert np.array_equal(result.labels, f32.labels)  # float32's answer, voxel for voxel


@pytest.mark.usefixtures("native")
def test_a_failed_check_gives_float32s_answer_then_the_next_recipe_then_int8(
    weights: Path, dataset: Path
) -> None:
    from radseg_plugins.models.detectron2 import bf16
    from radseg_plugins.models.detectron2.volume import VolumePredictor

    request = model_request(weights, slices(), dataset_dir=dataset)
    recipes = list(bf16.RECIPES)
    assert len(recipes) == 3

    def fail_a_check() -> tuple[Any, Any]:
        """Load with a lenient setting, then predict what the val split was unlike: the
        check falls below the setting."""
        predictor = VolumePredictor.load(request, "cpu", min_dice=0.0)
        assert predictor.engine == "bf16"
        used = predictor.records["bf16"]
        predictor.min_dice = 1.0
        result, facts = predictor.predict_checked(slices(), check_every=1, batch_size=2)
        assert facts["bf16_check"]["slices"] == 6 and facts["bf16_check"]["passed"] is False
        assert result.engine == facts["engine"] == "onnx"
        return used, result

    f32, _ = predict(weights, dataset, engine="onnx")
    for n, recipe in enumerate(recipes):
        used, result = fail_a_check()
        assert used is not None and used.recipe == recipe
        assert np.array_equal(result.labels, f32.labels)  # float32's answer
        assert len(bf16_records(weights.parent)) == n + 1
        # remembered for these weights: even a lenient setting no longer takes that recipe;
        # bf16's next one is measured and predicts, and after the last one int8 does
        later, later_facts = predict(weights, dataset, min_dice=0.0)
        if n + 1 < len(recipes):
            assert later.engine == "bf16"
            assert later_facts["bf16"]["recipe"] == recipes[n + 1]
            assert later_facts["bf16"]["recipe_words"] == bf16.RECIPE_WORDS[recipes[n + 1]]
    assert later.engine == "int8"
    assert later_facts["bf16"]["reason"].startswith("a check on 6 predicted slices")
    assert later_facts["int8"]["reason"].startswith("lowest per-class Dice with float32")


def test_without_native_bf16_auto_passes_it_by_and_by_name_it_still_runs(
    weights: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from radseg_plugins.models.detectron2 import bf16

    monkeypatch.setattr(bf16, "native_bf16", lambda: False)
    result, facts = predict(weights, dataset, min_dice=0.0)
    assert result.engine == "int8"  # bf16 not measured, not used: int8 is auto's choice
    assert facts["bf16"] == {
        "engine": "int8",
        "min_dice_setting": 0.0,
        "measured": False,
        "reason": "this CPU has no native bfloat16 (AMX or AVX512-BF16); torch would emulate it",
    }
    assert not bf16_records(weights.parent)

    with caplog.at_level(logging.WARNING, logger="radseg_plugins.models.detectron2.volume"):
        forced, forced_facts = predict(weights, dataset, min_dice=0.0, engine="bf16")
    assert forced.engine == "bf16" and forced_facts["bf16"]["measured"] is True
    assert any("no native bfloat16" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("native")
def test_the_record_is_reused_and_measured_again_for_other_weights(
    weights: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from radseg_plugins.models.detectron2.volume import VolumePredictor

    predict(weights, dataset)
    (record_file,) = bf16_records(weights.parent)
    stamp = record_file.stat().st_mtime_ns
    measure = VolumePredictor._measure

    def not_again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("bf16 was measured again")

    # A second load (a new process would do the same) reuses the record, no dataset needed.
    monkeypatch.setattr(VolumePredictor, "_measure", not_again)
    again, facts = predict(weights, None)
    assert again.engine == "bf16" and facts["bf16"]["measured"] is True
    assert record_file.stat().st_mtime_ns == stamp

    # An unreadable record is measured again.
    monkeypatch.setattr(VolumePredictor, "_measure", measure)
    record_file.write_text("{torn")
    predict(weights, dataset)
    assert json.loads(record_file.read_text())["engine"] == "bf16"

    # Other weights under the same name: another record, measured for them.
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model = state["model"]
    name = next(k for k, v in model.items() if v.is_floating_point())
    model[name] = model[name] * 1.01
    torch.save(state, weights)
    _, facts = predict(weights, dataset)
    assert len(bf16_records(weights.parent)) == 2
    assert facts["bf16"]["measured"] is True


def test_the_settings_old_names_are_still_read() -> None:
    from pydantic import ValidationError

    old = Detectron2Settings.model_validate({"int8_min_dice": 0.5, "int8_check_every": 3})
    assert (old.reduced_precision_min_dice, old.reduced_precision_check_every) == (0.5, 3)
    with pytest.raises(ValidationError, match="set only reduced_precision_min_dice"):
        Detectron2Settings.model_validate({"int8_min_dice": 0.5, "reduced_precision_min_dice": 0.9})


def test_an_int8_record_written_before_bf16_existed_is_still_read(tmp_path: Path) -> None:
    from radseg_plugins.models.detectron2 import reduced

    model = tmp_path / "model-abc.int8-1234.onnx"
    model.write_bytes(b"an int8 model")
    old = {
        "model_file": model.name,
        "sha256": reduced.file_sha256(model),
        "onnxruntime": "1.32.0",
        "recipe": "qdq-u8s8-per-channel-minmax-v1",
        "calibration": {"split": "train", "slices": 6},
        "agreement": {
            "per_class": {"disc": 0.95, "square": None},
            "slices": 3,
            "on": "val split (v1)",
            "measured_at": "2026-12-05T16:00:00+00:00",
            "min_dice": 0.95,
        },
        "failed_check": None,
    }
    path = model.with_suffix(".json")
    path.write_text(json.dumps(old))
    record = reduced.EngineRecord.read(path, model=model)
    assert record is not None
    assert (record.engine, record.runtime) == ("int8", {"onnxruntime": "1.32.0"})
    assert record.agreement.min_dice == 0.95 and not record.usable(0.99)
    model.write_bytes(b"another model")  # not the file the record describes
    assert reduced.EngineRecord.read(path, model=model) is None


@pytest.mark.parametrize("architecture", ["semantic_fpn", "deeplabv3plus"])
def test_every_recipe_applies_to_both_semantic_architectures(architecture: str) -> None:
    """The recipes' float32 parts are named differently in the two architectures (the FPN's
    ResNet is ``backbone.bottom_up``, DeepLabV3+'s is the backbone itself): each recipe finds
    them in both, runs each of them, and gives float32 logits of the right shape, near
    float32's."""
    import torch

    require_detectron2()
    from radseg_plugins.models.detectron2 import bf16, compat

    compat.apply()
    from detectron2.modeling import build_model

    from radseg_plugins.models.detectron2.config import new_cfg, set_num_classes, template_path
    from radseg_plugins.models.detectron2.volume import _Core

    torch.manual_seed(0)
    cfg = new_cfg(architecture)
    cfg.merge_from_file(str(template_path(architecture)))
    set_num_classes(cfg, 2)
    cfg.MODEL.DEVICE = "cpu"
    core = _Core.build(build_model(cfg).eval())
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    reference = bf16.TorchSession(core, torch.float32).run(None, {"images": x})[0]
    for recipe in bf16.RECIPES:
        parts = bf16.float32_parts(core, recipe)
        assert all(core.get_submodule(name) is not None for name in parts)
        session = bf16.TorchSession(core, torch.bfloat16, recipe)
        # every float32 part takes part: its parent calls it (a part called from a list, a
        # ResNet stage, would be replaced in name only and stay bfloat16)
        ran: list[str] = []
        float32 = bf16._float32_class()
        for name, module in session.module.named_modules():
            if isinstance(module, float32):
                module.register_forward_hook(lambda *_, name=name, ran=ran: ran.append(name))
        (logits,) = session.run(None, {"images": x})
        assert sorted(ran) == sorted(parts)
        assert logits.dtype == np.float32 and logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()
