"""The detectron2 compat module and the backend's pure parts (options, classes, label maps).

Tests that need detectron2 skip locally when it is missing and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from radseg.contracts import ClassInfo
from radseg.errors import InputError
from radseg_plugins.models.detectron2.data import ClassIndex
from radseg_plugins.models.detectron2.inference import (
    _as_rgb_slices,
    instances_to_labels,
    segmentation_metrics,
)
from radseg_plugins.models.detectron2.options import TrainOptions
from tests.integration.d2_fixtures import CLASSES, make_dataset_version, require_detectron2
from tests.support import require


@pytest.fixture
def compat() -> ModuleType:
    require_detectron2()
    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    return compat


@pytest.fixture
def stand_in(compat: ModuleType) -> ModuleType:
    require(
        not compat.has_compiled_ops(),
        "these tests need the pure-Python detectron2 (tools/install_detectron2.py): this one has "
        "its compiled ops, so the stand-in is not installed",
    )
    return compat


# --- the plugin stays light -----------------------------------------------------------------


def test_importing_the_plugin_imports_neither_torch_nor_detectron2() -> None:
    code = (
        "import sys, radseg_plugins.models.detectron2 as p; "
        "p.radseg_register_models(); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2')); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- compat ---------------------------------------------------------------------------------


def test_compat_makes_detectron2_importable(compat: ModuleType) -> None:
    import detectron2.data
    import detectron2.engine
    import detectron2.evaluation
    import detectron2.layers
    import detectron2.model_zoo
    import detectron2.projects.deeplab
    from detectron2.utils.collect_env import collect_env_info

    config = detectron2.model_zoo.get_config_file(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    )
    assert Path(config).is_file()
    assert detectron2.projects.deeplab.add_deeplab_config
    assert "detectron2" in collect_env_info()  # answers the compiler/CUDA version queries
    shim = sys.modules.get("pkg_resources")
    assert shim is None or hasattr(shim, "working_set"), "the pkg_resources shim leaked"


def test_apply_is_idempotent(compat: ModuleType) -> None:
    from detectron2.engine import AMPTrainer

    run_step = AMPTrainer.run_step
    compat.apply()
    compat.apply()
    assert AMPTrainer.run_step is run_step


#: run in a fresh interpreter (apply() acts once per process): optionally simulate a full
#: upstream build, apply the compat, and report what it changed and what it left as it was
_APPLY_IN_A_FRESH_PROCESS = """
import importlib.machinery, importlib.util, json, sys, types
import numpy as np, torch
from PIL import Image

full_build, old_dependencies = sys.argv[1] == "full", sys.argv[2] == "old"
if full_build:  # the compiled extension is built, on a CUDA machine
    compiled = types.ModuleType("detectron2._C")
    compiled.__spec__ = importlib.machinery.ModuleSpec("detectron2._C", None)
    sys.modules["detectron2._C"] = compiled
    torch.cuda.is_available = lambda: True
if old_dependencies:  # numpy < 1.24 and Pillow < 10 have the aliases; setuptools < 82 (on
    for name, builtin in (("int", int), ("float", float), ("bool", bool), ("str", str)):
        if name not in vars(np):  # sys.path, from argv[3]) still ships pkg_resources
            setattr(np, name, builtin)
    Image.LINEAR = Image.BILINEAR
    sys.path.insert(0, sys.argv[3])
before = {
    "numpy": sorted(n for n in ("int", "float", "bool", "str") if n not in vars(np)),
    "pillow": not hasattr(Image, "LINEAR"),
    "pkg_resources": importlib.util.find_spec("pkg_resources") is not None,
    "cuda": torch.cuda.is_available(),
}
from radseg_plugins.models.detectron2 import compat

compat.apply()
from detectron2.engine import AMPTrainer
from detectron2.evaluation import COCOEvaluator

nms, deform_conv, zoo, launch, defaults = (sys.modules[f"detectron2.{m}"] for m in (
    "layers.nms", "layers.deform_conv", "model_zoo.model_zoo", "engine.launch", "engine.defaults"))

untouched = {
    "detectron2._C": not getattr(sys.modules["detectron2._C"], "RADSEG_STAND_IN", False),
    "layers": nms.nms_rotated.__module__ == "detectron2.layers.nms"
    and getattr(deform_conv.deform_conv, "__self__", None) is deform_conv._DeformConv,
    "COCOEvaluator": COCOEvaluator.__init__.__module__.startswith("detectron2."),
    "AMPTrainer": AMPTrainer.run_step.__module__.startswith("detectron2."),
    "launch": launch._distributed_worker.__module__.startswith("detectron2."),
    "create_ddp_model": defaults.create_ddp_model.__module__.startswith("detectron2."),
    "pkg_resources": getattr(zoo.pkg_resources, "__file__", None) is not None,
}
print(json.dumps({"applied": compat.applied(), "before": before, "untouched": untouched}))
"""


def _apply_in_a_fresh_process(tmp_path: Path, build: str, dependencies: str) -> dict[str, Any]:
    require_detectron2()
    setuptools = tmp_path / "setuptools-81"
    setuptools.mkdir()
    (setuptools / "pkg_resources.py").write_text(
        "import importlib.resources\n"
        "def resource_filename(package, name):\n"
        "    return str(importlib.resources.files(package).joinpath(name))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _APPLY_IN_A_FRESH_PROCESS, build, dependencies, str(setuptools)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def _dependency_fixes(before: dict[str, Any]) -> set[str]:
    """What v0.6 needs of numpy, Pillow and setuptools that they lack (v0.6 names them all)."""
    fixes = {f"numpy alias np.{name}" for name in before["numpy"]}
    if before["pillow"]:
        fixes.add("Pillow alias Image.LINEAR")
    if not before["pkg_resources"]:
        fixes.add("pkg_resources shim for detectron2.model_zoo")
    return fixes


def test_on_a_full_build_with_its_dependencies_compat_changes_nothing(tmp_path: Path) -> None:
    result = _apply_in_a_fresh_process(tmp_path, "full", "old")
    assert result["applied"] == []
    assert all(result["untouched"].values()), result["untouched"]


def test_on_a_full_build_compat_fixes_only_what_the_dependencies_lack(tmp_path: Path) -> None:
    result = _apply_in_a_fresh_process(tmp_path, "full", "current")
    assert set(result["applied"]) == _dependency_fixes(result["before"])
    untouched = dict(result["untouched"], pkg_resources=True)
    assert all(untouched.values()), result["untouched"]  # the ops, AMP and launch: upstream's


def test_on_the_pure_python_tree_compat_patches_what_it_must(tmp_path: Path) -> None:
    result = _apply_in_a_fresh_process(tmp_path, "pure", "current")
    expected = _dependency_fixes(result["before"]) | {
        "detectron2._C stand-in",
        "detectron2.layers: nms_rotated stand-in, deform_conv through torchvision",
        "COCOEvaluator: pycocotools' COCOeval",
        "AMPTrainer: autocast on the model's device",
        "launch: each process applies the compat first; gloo without CUDA",
    }
    if not result["before"]["cuda"]:
        expected.add("create_ddp_model: no device_ids for CPU models")
    if "detectron2._C stand-in" not in result["applied"]:
        pytest.skip("detectron2 has its compiled ops here: this is not the pure-Python tree")
    assert set(result["applied"]) == expected
    patched = {key for key, same in result["untouched"].items() if not same}
    assert {"detectron2._C", "layers", "COCOEvaluator", "AMPTrainer", "launch"} <= patched


def test_rotated_ops_raise_an_error_naming_the_op(stand_in: ModuleType) -> None:
    import torch
    from detectron2.layers import ROIAlignRotated, batched_nms_rotated, nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 6.0, 30.0], [11.0, 10.0, 4.0, 6.0, 0.0]])
    scores = torch.tensor([0.9, 0.8])
    with pytest.raises(stand_in.MissingCompiledOpError, match="'box_iou_rotated'"):
        pairwise_iou_rotated(boxes, boxes)
    with pytest.raises(NotImplementedError, match=r"'nms_rotated'.*rotated boxes"):
        nms_rotated(boxes, scores, 0.5)
    with pytest.raises(NotImplementedError, match="'nms_rotated'"):
        batched_nms_rotated(boxes, scores, torch.tensor([0, 0]), 0.5)
    pooler = ROIAlignRotated((2, 2), spatial_scale=1.0, sampling_ratio=0)
    rois = torch.tensor([[0.0, 8.0, 8.0, 4.0, 4.0, 15.0]])
    with pytest.raises(NotImplementedError, match="'roi_align_rotated_forward'"):
        pooler(torch.zeros(1, 1, 16, 16), rois)


def test_deformable_convolution_runs_through_torchvision(stand_in: ModuleType) -> None:
    import torch
    import torch.nn.functional as F
    from detectron2 import _C
    from detectron2.layers import DeformConv, ModulatedDeformConv

    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    conv = DeformConv(4, 8, kernel_size=3, padding=1, groups=2, deformable_groups=2)
    zero_offset = torch.zeros(2, 2 * 2 * 9, 9, 9)
    out = conv(x, zero_offset)
    expected = F.conv2d(x, conv.weight, padding=1, groups=2)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None

    modulated = ModulatedDeformConv(4, 8, kernel_size=3, padding=1, bias=True)
    out = modulated(x, torch.zeros(2, 18, 9, 9), torch.ones(2, 9, 9, 9))
    expected = F.conv2d(x, modulated.weight, modulated.bias, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # The raw kernels of the compiled extension still say what is missing.
    with pytest.raises(NotImplementedError, match=r"'deform_conv_forward'.*deformable"):
        _C.deform_conv_forward()


def test_evaluators_run_without_compiled_ops(stand_in: ModuleType, tmp_path: Path) -> None:
    import torch
    from detectron2.evaluation import COCOEvaluator, SemSegEvaluator

    from radseg_plugins.models.detectron2.data import ClassIndex, load_split, registered

    dataset_dir = make_dataset_version(tmp_path / "dataset", train=1, val=2)
    index = ClassIndex.of(CLASSES)
    splits = {"val": load_split(dataset_dir, "val", index, instances=True)}
    with registered(splits, index, dataset_dir=dataset_dir) as names:
        coco = COCOEvaluator(names["val"], tasks=("segm",), distributed=False)
        assert coco._use_fast_impl is False  # pycocotools' COCOeval, not the compiled one

        # SemSegEvaluator needs numpy's old np.int/np.float aliases.
        evaluator = SemSegEvaluator(
            names["val"], distributed=False, num_classes=3, ignore_label=255
        )
        evaluator.reset()
        for record in splits["val"]:
            truth = np.asarray(__import__("PIL.Image").Image.open(record["sem_seg_file_name"]))
            scores = torch.nn.functional.one_hot(torch.from_numpy(truth.astype(np.int64) % 3), 3)
            evaluator.process(
                [{"file_name": record["file_name"]}], [{"sem_seg": scores.permute(2, 0, 1).float()}]
            )
        result = evaluator.evaluate()["sem_seg"]
    assert result["mIoU"] == pytest.approx(100.0)


def test_amp_trainer_runs_on_cpu_in_bfloat16(compat: ModuleType) -> None:
    import itertools

    import torch
    from detectron2.engine import AMPTrainer

    seen: list[tuple[bool, torch.dtype]] = []

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            out = self.linear(torch.stack(batch))
            return {"loss": (out.float() ** 2).mean()}

    model = Tiny()
    before = model.linear.weight.detach().clone()
    data = itertools.repeat([torch.ones(4), torch.zeros(4)])
    trainer = AMPTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, 2)
    assert seen == [(True, torch.bfloat16)] * 2
    assert not torch.equal(before, model.linear.weight)
    trainer.load_state_dict(trainer.state_dict())  # the disabled CPU grad scaler round-trips


def _record_world(marker: str) -> None:
    import torch.distributed as dist
    from detectron2.utils import comm

    Path(marker).write_text(
        f"{comm.get_world_size()} {dist.get_backend() if dist.is_initialized() else '-'}"
    )


def test_launch_runs_one_cpu_process(compat: ModuleType, tmp_path: Path) -> None:
    from detectron2.engine import launch

    marker = tmp_path / "direct"
    launch(_record_world, 1, args=(str(marker),))
    assert marker.read_text() == "1 -"


def test_launch_worker_uses_gloo_without_cuda(compat: ModuleType, tmp_path: Path) -> None:
    """The worker each ``launch`` process runs, here in-process as a world of one."""
    import importlib

    import torch
    from detectron2.utils import comm

    require(
        not torch.cuda.is_available(),
        "this test needs a machine without CUDA: with CUDA, launch keeps its NCCL worker",
    )
    launch_module = importlib.import_module("detectron2.engine.launch")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    marker = tmp_path / "worker"
    try:
        launch_module._distributed_worker(
            0, _record_world, 1, 1, 0, f"tcp://127.0.0.1:{port}", (str(marker),)
        )
    finally:
        comm._LOCAL_PROCESS_GROUP = None
    assert marker.read_text() == "1 gloo"


# --- the number of classes ------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["semantic_fpn", "deeplabv3plus", "mask_rcnn"])
def test_class_count_is_written_to_every_head(
    compat: ModuleType, architecture: str, tmp_path: Path
) -> None:
    from detectron2.modeling import build_model

    from radseg_plugins.models.detectron2.config import build_train_cfg, num_classes_keys

    options = TrainOptions.from_config({"architecture": architecture})
    cfg = build_train_cfg(
        options, num_classes=3, train_dataset="x", output_dir=tmp_path, device="cpu"
    )
    heads = dict(num_classes_keys(cfg))
    assert {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "MODEL.RETINANET.NUM_CLASSES",
    } <= set(heads)
    for key, value in heads.items():
        assert value == (4 if key == "MODEL.SEM_SEG_HEAD.NUM_CLASSES" else 3), key

    model = build_model(cfg)
    if architecture == "mask_rcnn":
        assert model.roi_heads.box_predictor.cls_score.out_features == 3 + 1  # + background
        assert model.roi_heads.mask_head.predictor.out_channels == 3
    else:
        assert model.sem_seg_head.predictor.out_channels == 3 + 1


def test_overrides_cannot_set_the_class_count() -> None:
    with pytest.raises(InputError, match="number of classes comes from the dataset version"):
        TrainOptions.from_config({"overrides": {"MODEL.ROI_HEADS.NUM_CLASSES": 5}})


def test_overrides_apply_and_unknown_keys_are_refused(compat: ModuleType, tmp_path: Path) -> None:
    from radseg_plugins.models.detectron2.config import build_train_cfg

    options = TrainOptions.from_config(
        {
            "overrides": {
                "MODEL.RESNETS.NORM": "BN",
                "SOLVER.BASE_LR": 1,
                "INPUT.RANDOM_FLIP": "horizontal",
            }
        }
    )
    cfg = build_train_cfg(
        options, num_classes=2, train_dataset="x", output_dir=tmp_path, device="cpu"
    )
    assert (cfg.MODEL.RESNETS.NORM, cfg.SOLVER.BASE_LR, cfg.INPUT.RANDOM_FLIP) == (
        "BN",
        1.0,
        "horizontal",
    )
    assert cfg.MODEL.WEIGHTS == ""
    bad = TrainOptions.from_config({"overrides": {"MODEL.NO_SUCH_KEY": 1}})
    with pytest.raises(InputError, match=r"MODEL.NO_SUCH_KEY"):
        build_train_cfg(bad, num_classes=2, train_dataset="x", output_dir=tmp_path, device="cpu")


# --- options --------------------------------------------------------------------------------


def test_options_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown detectron2 option.*'iters'.*valid options"):
        TrainOptions.from_config({"iters": 5})
    with pytest.raises(InputError, match="unknown architecture 'unet'"):
        TrainOptions.from_config({"architecture": "unet"})
    with pytest.raises(InputError, match=r"resnet_depth.*50, 101, 152"):
        TrainOptions.from_config({"architecture": "deeplabv3plus", "resnet_depth": 18})
    with pytest.raises(InputError, match="never downloads"):
        TrainOptions.from_config({"weights": "detectron2://ImageNetPretrained/MSRA/R-50.pkl"})
    with pytest.raises(InputError, match="iterations"):
        TrainOptions.from_config({"iterations": 0})
    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"")
    options = TrainOptions.from_config({"iterations": 10.0, "weights": str(weights), "amp": True})
    assert (options.iterations, options.weights, options.amp) == (10, str(weights), True)


# --- classes and label maps -----------------------------------------------------------------


def test_class_index_maps_sparse_ids() -> None:
    index = ClassIndex.of([ClassInfo(7, "kidney"), ClassInfo(3, "liver")])
    assert index.names == ["liver", "kidney"]
    lut = index.label_to_semantic()
    assert (lut[0], lut[3], lut[7], lut[255], lut[5]) == (0, 1, 2, 255, 255)
    assert index.semantic_to_label().tolist() == [0, 3, 7]
    assert index.instance_to_label().tolist() == [3, 7]
    with pytest.raises(InputError, match="no classes"):
        ClassIndex.of([])


def test_instances_merge_with_the_higher_score_winning() -> None:
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True  # class index 0, score 0.6
    masks[1, 1:3] = True  # class index 1, score 0.9: wins row 1
    masks[2, 3] = True  # below the threshold
    labels = instances_to_labels(
        masks,
        np.array([0.6, 0.9, 0.3]),
        np.array([0, 1, 1]),
        np.array([3, 7], dtype=np.uint8),
        score_threshold=0.5,
    )
    assert labels[:, 0].tolist() == [3, 7, 7, 0]


def test_segmentation_metrics_ignore_255_and_skip_absent_classes() -> None:
    index = ClassIndex.of([*CLASSES, ClassInfo(3, "absent")])
    truth = np.array([[1, 1, 2, 255]], dtype=np.uint8)
    predicted = np.array([[1, 0, 2, 1]], dtype=np.uint8)
    metrics = segmentation_metrics([(predicted, truth)], index)
    assert metrics["per_class"]["disc"] == {"dice": pytest.approx(2 / 3), "iou": pytest.approx(0.5)}
    assert metrics["per_class"]["square"] == {"dice": 1.0, "iou": 1.0}
    assert metrics["per_class"]["absent"] == {"dice": None, "iou": None}
    assert metrics["mean_dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(2 / 3)


def test_grey_slices_become_three_channels() -> None:
    grey = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    assert _as_rgb_slices(grey).shape == (2, 2, 2, 3)
    with pytest.raises(InputError, match="uint8"):
        _as_rgb_slices(grey.astype(np.float32))


def _without(monkeypatch: pytest.MonkeyPatch, *absent: str) -> None:
    """Make ``find_spec`` report ``absent`` missing and every other module present."""
    from radseg_plugins.models.detectron2 import compat

    def find_spec(name: str, *args: Any) -> object | None:
        return None if name in absent else object()

    monkeypatch.setattr(compat.importlib.util, "find_spec", find_spec)


def test_training_and_prediction_need_no_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    from radseg_plugins.models.detectron2 import compat

    _without(monkeypatch, "onnxruntime")
    compat.require_model_stack()  # prediction falls back to torch without it


def test_a_missing_model_stack_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from radseg.errors import PluginError
    from radseg_plugins.models.detectron2 import compat

    _without(monkeypatch, "torchvision", "omegaconf")
    with pytest.raises(PluginError, match=r"needs torchvision, omegaconf, .*`models` extra"):
        compat.require_model_stack()
