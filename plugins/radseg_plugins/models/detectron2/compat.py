"""Make detectron2 v0.6 run on current torch, numpy, Pillow and setuptools.

radseg installs detectron2 from the pure-Python v0.6 tree (``tools/install_detectron2.py``): no
compiled ``detectron2._C`` and dependencies years newer than the release. :func:`apply` adapts
that install in place, once per process, before anything else imports detectron2 submodules:

========================  ====================================================================
what broke                what :func:`apply` does
========================  ====================================================================
Pillow ≥ 10 removed       ``Image.LINEAR`` (a default argument, so ``import detectron2.data``
``Image.LINEAR``          fails) becomes an alias of ``Image.BILINEAR``, as it always was.
numpy ≥ 1.24 removed      ``np.int``/``np.float``/``np.str`` (and ``np.bool`` before numpy 2),
the builtin aliases       used by SemSegEvaluator, dataset statistics and masks, become the
                          builtins they used to alias. Each alias (numpy's and Pillow's) is
                          added only where the library lacks it and the installed detectron2's
                          code names it.
no ``detectron2._C``      a stand-in module answers the version queries of ``collect_env`` /
                          ``default_setup`` and raises :class:`MissingCompiledOpError`, naming
                          the op, for the rotated-box ops (``box_iou_rotated``,
                          ``nms_rotated``, ``roi_align_rotated_*``) and the raw deformable-conv
                          kernels. ``DeformConv``/``ModulatedDeformConv`` run through
                          torchvision's ``deform_conv2d`` instead (same offset layout).
                          ``COCOEvaluator`` uses pycocotools' official ``COCOeval``
                          (``use_fast_impl=False``), as the fast one is compiled.
setuptools ≥ 82 has no    if ``detectron2.model_zoo`` cannot import ``pkg_resources``, it is
``pkg_resources``         imported again with a minimal one (just ``resource_filename``) that
                          is removed from ``sys.modules`` again, so no other library sees a
                          fake ``pkg_resources``.
AMP asserts CUDA          ``AMPTrainer`` autocasts on the device its model is on, through
                          ``torch.autocast``/``torch.amp.GradScaler`` (v0.6 uses the deprecated
                          ``torch.cuda.amp``): float16 with grad scaling on CUDA, bfloat16
                          without (it needs none) on a CPU.
``launch`` asserts CUDA   without CUDA its processes use the gloo backend instead of NCCL, and
                          ``create_ddp_model`` leaves out ``device_ids`` for CPU models. With
                          or without, each spawned process applies the compat before it
                          imports detectron2 (unpickling v0.6's own worker would import
                          ``detectron2.engine`` first, and fail).
========================  ====================================================================

Every change is made only where its cause is present: an alias the library lacks and
detectron2's code names, a module that cannot be imported, no compiled ops; for AMP and
``launch`` (whose v0.6 code asserts CUDA, and whose spawned processes must apply this module
first on the pure-Python tree): no compiled ops, or no CUDA. So on a full upstream build (with
``detectron2._C``) on a CUDA machine, with dependencies that still have what its code uses,
:func:`apply` changes nothing. :func:`applied` lists what it changed in this process (and
:func:`apply` logs it at INFO); tests check a full build (simulated) and the pure-Python tree.

Not adapted here, but worth knowing: v0.6's ``DefaultTrainer`` checkpoints the iteration and the
LR scheduler but not the optimizer (its ``state_dict`` leaves out the inner trainer), so a run
resumed from a plain v0.6 checkpoint restarts its optimizer (momentum) while the iteration count
and LR schedule continue. radseg's trainer (:mod:`.trainer`) saves and restores the optimizer too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import logging
import re
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from radseg.errors import PluginError

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_applied = False
#: what :func:`apply` changed in this process, in order (:func:`applied`)
_patches: list[str] = []
#: what the patches replaced, for the wrappers that hand over to it
_originals: dict[str, Callable[..., Any]] = {}

#: the ops a full build's ``detectron2._C`` provides, and what needs them
ROTATED_OPS = (
    "box_iou_rotated",
    "nms_rotated",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
)
DEFORM_OPS = (
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
)
COCOEVAL_OPS = (
    "COCOevalAccumulate",
    "COCOevalEvaluateImages",
    "InstanceAnnotation",
    "ImageEvaluation",
)

INSTALL_HINT = (
    "install a detectron2 built with its C++/CUDA ops "
    "(https://detectron2.readthedocs.io/en/latest/tutorials/install.html) or use a model that "
    "does not need it"
)


class MissingCompiledOpError(NotImplementedError):
    """A detectron2 op that only exists in the compiled extension was called."""

    def __init__(self, op: str, what: str) -> None:
        self.op = op
        super().__init__(
            f"detectron2 op '{op}' ({what}) needs the compiled extension detectron2._C, which "
            f"this pure-Python detectron2 does not have; {INSTALL_HINT}"
        )


#: what the plugin needs beyond radseg's own dependencies: torch and torchvision (installed from
#: pinned wheels), the ``models`` extra (detectron2's run-time dependencies), detectron2 itself.
#: Not onnxruntime: training never uses it, and prediction runs on torch without it.
MODEL_STACK = ("torch", "torchvision", "fvcore", "iopath", "omegaconf")


def require_model_stack() -> None:
    """Refuse to train or predict, saying what to install, where the model stack is missing.

    The web image and a plain ``pip install radseg`` have no torch: the plugin still loads (it
    is listed, its settings are checked), and only this call says what is missing.

    :raises PluginError: naming the missing modules, the ``models`` extra and the install steps.
    """
    missing = [name for name in MODEL_STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise PluginError(
            f"the detectron2 model plugin needs {', '.join(missing)}, which this environment "
            "lacks; install torch and the `models` extra "
            "(`pip install -c tools/constraints.txt torch==2.14.1 torchvision==0.29.1 "
            "'radseg[models]'`: `make install` and docker/Dockerfile.worker do this), then "
            "detectron2 (`python tools/install_detectron2.py`)"
        )


def apply() -> None:
    """Adapt the installed detectron2 to this environment; safe to call any number of times.

    Imports torch and detectron2 (``layers``, ``model_zoo``, ``engine``, ``evaluation``), so call
    it where those imports are wanted anyway: inside ``train``/``predict``, never at import time.
    Raises :class:`radseg.errors.PluginError`, saying what to run, when detectron2 is not
    installed.
    """
    global _applied
    with _lock:
        if _applied:
            return
        try:
            import detectron2  # the package only: its __init__ names no alias and no op
        except ImportError as exc:
            raise PluginError(
                "detectron2 is not installed; run `.venv/bin/python tools/install_detectron2.py` "
                "(or `make install`) to install v0.6 into the environment"
            ) from exc
        used = names_used(detectron2)
        _alias_numpy(used)
        _alias_pillow(used)
        compiled = has_compiled_ops()
        if not compiled:
            _install_c_stub(detectron2)
        import detectron2.layers  # after the stub: it imports detectron2._C

        if not compiled:
            _patch_layers()
        _import_model_zoo()
        if not compiled:
            _patch_coco_evaluator()
        import torch

        cuda = torch.cuda.is_available()
        if not (compiled and cuda):
            _patch_amp_trainer()
            _patch_launch(cuda=cuda)
        _applied = True
        logger.info(
            "detectron2 compat (compiled ops: %s, CUDA: %s): %s",
            compiled,
            cuda,
            "; ".join(_patches) or "nothing to change",
        )


def applied() -> tuple[str, ...]:
    """What :func:`apply` changed in this process, in order; empty on a full build that needs
    nothing (or before :func:`apply`)."""
    return tuple(_patches)


#: the removed numpy and Pillow aliases v0.6 names (``np.int``, not ``np.int64``/``np.int_``)
_OLD_ALIASES = re.compile(r"\bnp\.(?:int|float|bool|str)\b|\bImage\.LINEAR\b")


def names_used(package: types.ModuleType) -> frozenset[str]:
    """The removed aliases (``np.int``, ``Image.LINEAR``) that ``package``'s source names."""
    found: set[str] = set()
    for root in getattr(package, "__path__", ()):
        for path in sorted(Path(root).rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            found.update(_OLD_ALIASES.findall(text))
    return frozenset(found)


def has_compiled_ops() -> bool:
    """Whether the installed detectron2 has its real compiled extension ``detectron2._C``."""
    module = sys.modules.get("detectron2._C")
    if module is not None:
        return not getattr(module, "RADSEG_STAND_IN", False)
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except (ImportError, ValueError):
        return False


# --- dependency aliases ---------------------------------------------------------------------


def _alias_numpy(used: frozenset[str]) -> None:
    import numpy as np

    for name, builtin in (("int", int), ("float", float), ("bool", bool), ("str", str)):
        if f"np.{name}" not in used or name in vars(np):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                getattr(np, name)  # numpy < 1.24 still answers, with a deprecation warning
                continue
            except AttributeError:
                pass
        setattr(np, name, builtin)
        _patches.append(f"numpy alias np.{name}")


def _alias_pillow(used: frozenset[str]) -> None:
    from PIL import Image

    if "Image.LINEAR" in used and not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR  # type: ignore[attr-defined]
        _patches.append("Pillow alias Image.LINEAR")


# --- the missing compiled extension ---------------------------------------------------------


def _missing(op: str, what: str) -> Callable[..., Any]:
    def op_stand_in(*args: Any, **kwargs: Any) -> Any:
        raise MissingCompiledOpError(op, what)

    op_stand_in.__name__ = op
    op_stand_in.__qualname__ = op
    return op_stand_in


class _StandInExtension(types.ModuleType):
    """``detectron2._C`` for a pure-Python install: version answers, and ops that raise."""

    RADSEG_STAND_IN = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"detectron2._C (radseg's stand-in for the compiled extension) has no {name!r}; "
            f"{INSTALL_HINT}"
        )


def _install_c_stub(detectron2: types.ModuleType) -> None:
    stub: Any = _StandInExtension(
        "detectron2._C", "Stand-in for detectron2's compiled ops (radseg compat); none is built."
    )
    stub.__spec__ = importlib.machinery.ModuleSpec("detectron2._C", loader=None)
    stub.__file__ = "<radseg stand-in: detectron2._C is not built>"
    stub.get_compiler_version = lambda: "none (pure-Python detectron2, no compiled ops)"
    stub.get_cuda_version = lambda: "none (pure-Python detectron2, no compiled ops)"
    stub.has_cuda = lambda: False
    for op in ROTATED_OPS:
        setattr(stub, op, _missing(op, "rotated boxes"))
    for op in DEFORM_OPS:
        setattr(stub, op, _missing(op, "deformable convolution"))
    for op in COCOEVAL_OPS:
        setattr(stub, op, _missing(op, "COCOEvaluator fast mode; pass use_fast_impl=False"))
    sys.modules["detectron2._C"] = stub
    detectron2._C = stub  # type: ignore[attr-defined]
    _patches.append("detectron2._C stand-in")


def _patch_layers() -> None:
    import torch
    from torchvision.ops import deform_conv2d

    nms: Any = sys.modules["detectron2.layers.nms"]
    deform: Any = sys.modules["detectron2.layers.deform_conv"]
    layers: Any = sys.modules["detectron2.layers"]

    # torch.ops.detectron2.nms_rotated is registered by the extension; without it the lookup
    # fails with a message that does not say why.
    nms_rotated = _missing("nms_rotated", "rotated boxes")
    nms.nms_rotated = nms_rotated
    layers.nms_rotated = nms_rotated

    def deform_conv(
        input: torch.Tensor,
        offset: torch.Tensor,
        weight: torch.Tensor,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        im2col_step: int = 64,
    ) -> torch.Tensor:
        # torchvision infers groups from weight.shape[1] and deformable groups from the
        # offset's channels; the offset layout ((dy, dx) per kernel tap and group) is the same.
        return deform_conv2d(
            input, offset, weight, stride=stride, padding=padding, dilation=dilation
        )

    def modulated_deform_conv(
        input: torch.Tensor,
        offset: torch.Tensor,
        mask: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        deformable_groups: int = 1,
    ) -> torch.Tensor:
        return deform_conv2d(
            input,
            offset,
            weight,
            bias=bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=mask,
        )

    deform.deform_conv = deform_conv
    deform.modulated_deform_conv = modulated_deform_conv
    _patches.append("detectron2.layers: nms_rotated stand-in, deform_conv through torchvision")


def _patch_coco_evaluator() -> None:
    from detectron2.evaluation import coco_evaluation

    evaluator = coco_evaluation.COCOEvaluator
    if getattr(evaluator.__init__, "_radseg_compat", False):
        return
    original = evaluator.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_fast_impl", True):
            logger.info("COCOEvaluator: no compiled fast COCOeval; using pycocotools' COCOeval")
        kwargs["use_fast_impl"] = False
        original(self, *args, **kwargs)

    __init__._radseg_compat = True  # type: ignore[attr-defined]
    evaluator.__init__ = __init__
    _patches.append("COCOEvaluator: pycocotools' COCOeval")


# --- pkg_resources --------------------------------------------------------------------------


def _resource_filename(package_or_requirement: str, resource_name: str) -> str:
    return str(importlib.resources.files(package_or_requirement).joinpath(resource_name))


@contextlib.contextmanager
def _pkg_resources_for_import() -> Iterator[None]:
    """Provide ``pkg_resources.resource_filename`` while a module that imports it is imported.

    Only for a module that failed to import ``pkg_resources`` (setuptools ≥ 82 has none). The
    shim leaves ``sys.modules`` afterwards, so a later ``import pkg_resources`` elsewhere fails
    as it would without radseg.
    """
    shim = types.ModuleType(
        "pkg_resources", "radseg compat: the part of pkg_resources detectron2.model_zoo uses."
    )
    shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def _import_model_zoo() -> None:
    if "detectron2.model_zoo.model_zoo" in sys.modules:
        return
    try:
        importlib.import_module("detectron2.model_zoo")
        return
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    with _pkg_resources_for_import():
        importlib.import_module("detectron2.model_zoo")
    _patches.append("pkg_resources shim for detectron2.model_zoo")


# --- CPU: mixed precision and multi-process launch ------------------------------------------


def _model_device_type(model: Any) -> str:
    for param in model.parameters():
        return str(param.device.type)
    return "cpu"


def _patch_amp_trainer() -> None:
    import time

    import torch
    from detectron2.engine import train_loop

    trainer_cls = train_loop.AMPTrainer
    if getattr(trainer_cls, "_radseg_compat", False):
        return

    def __init__(
        self: Any,
        model: Any,
        data_loader: Any,
        optimizer: Any,
        grad_scaler: Any = None,
        precision: torch.dtype | None = None,
    ) -> None:
        unsupported = "AMPTrainer does not support single-process multi-device training!"
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            assert not (model.device_ids and len(model.device_ids) > 1), unsupported
        assert not isinstance(model, torch.nn.DataParallel), unsupported
        train_loop.SimpleTrainer.__init__(self, model, data_loader, optimizer)
        self._amp_device = _model_device_type(model)
        on_cuda = self._amp_device == "cuda"
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self._amp_device, enabled=on_cuda)
        self.grad_scaler = grad_scaler
        self.precision = precision or (torch.float16 if on_cuda else torch.bfloat16)

    def run_step(self: Any) -> None:
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type=self._amp_device, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    trainer_cls.__init__ = __init__
    trainer_cls.run_step = run_step
    trainer_cls._radseg_compat = True
    _patches.append("AMPTrainer: autocast on the model's device")


def _patch_launch(*, cuda: bool) -> None:
    launch_module: Any = importlib.import_module("detectron2.engine.launch")
    if launch_module._distributed_worker is not _distributed_worker:
        _originals["launch_worker"] = launch_module._distributed_worker
        launch_module._distributed_worker = _distributed_worker
        _patches.append("launch: each process applies the compat first; gloo without CUDA")
    defaults: Any = importlib.import_module("detectron2.engine.defaults")
    if not cuda and not getattr(defaults.create_ddp_model, "_radseg_compat", False):
        defaults.create_ddp_model = _cpu_aware_ddp(defaults.create_ddp_model)
        engine: Any = sys.modules["detectron2.engine"]
        engine.create_ddp_model = defaults.create_ddp_model
        _patches.append("create_ddp_model: no device_ids for CPU models")


def _cpu_aware_ddp(create_ddp_model: Callable[..., Any]) -> Callable[..., Any]:
    def create(model: Any, **kwargs: Any) -> Any:
        if _model_device_type(model) == "cpu":
            kwargs.setdefault("device_ids", None)  # DDP refuses device_ids for CPU modules
        return create_ddp_model(model, **kwargs)

    create._radseg_compat = True  # type: ignore[attr-defined]
    return create


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple[Any, ...],
    timeout: Any = None,
) -> None:
    """What each process ``launch`` starts runs first: the compat, then the real worker.

    ``torch.multiprocessing.spawn`` starts fresh interpreters, so the parent's patches are not
    there; and the function it is given is unpickled before anything runs, so it must live in a
    module that imports without detectron2 (unpickling v0.6's own worker imports
    ``detectron2.engine``, which fails before the compat). With CUDA this hands over to v0.6's
    worker (NCCL); without, it does the same on gloo, without pinning a device.
    """
    import datetime

    import torch
    import torch.distributed as dist

    apply()
    original = _originals.get("launch_worker")
    if torch.cuda.is_available() and original is not None:
        original(
            local_rank,
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            dist_url,
            args,
            *(() if timeout is None else (timeout,)),
        )
        return
    from detectron2.utils import comm

    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(
        backend="gloo",
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout or datetime.timedelta(minutes=30),
    )
    if hasattr(comm, "create_local_process_group"):  # detectron2 > 0.6
        comm.create_local_process_group(num_gpus_per_machine)
    else:
        assert comm._LOCAL_PROCESS_GROUP is None
        num_machines = world_size // num_gpus_per_machine
        for i in range(num_machines):
            ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
            group = dist.new_group(ranks)
            if i == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
