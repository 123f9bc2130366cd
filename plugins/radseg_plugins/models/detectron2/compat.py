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

The stand-in for the compiled ops lives in :mod:`.compat_ops`, the AMP and ``launch`` changes in
:mod:`.compat_cpu`; this module decides what to apply and applies it.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radseg.errors import PluginError

from .compat_cpu import original_launch_worker, patch_amp_trainer, patch_launch, run_on_gloo
from .compat_ops import MissingCompiledOpError, install_c_stub, patch_coco_evaluator, patch_layers

__all__ = [
    "MODEL_STACK",
    "MissingCompiledOpError",
    "applied",
    "apply",
    "has_compiled_ops",
    "names_used",
    "require_model_stack",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_applied = False
#: what :func:`apply` changed in this process, in order (:func:`applied`)
_patches: list[str] = []


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
            _patches.extend(install_c_stub(detectron2))
        import detectron2.layers  # after the stub: it imports detectron2._C

        if not compiled:
            _patches.extend(patch_layers())
        _import_model_zoo()
        if not compiled:
            _patches.extend(patch_coco_evaluator())
        import torch

        cuda = torch.cuda.is_available()
        if not (compiled and cuda):
            _patches.extend(patch_amp_trainer())
            _patches.extend(patch_launch(cuda=cuda, worker=_distributed_worker))
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


def _distributed_worker(local_rank: int, *launch_args: Any) -> None:
    """What each process ``launch`` starts runs first: the compat, then the real worker.

    ``launch_args`` are v0.6's ``_distributed_worker``'s after the rank (``main_func,
    world_size, num_gpus_per_machine, machine_rank, dist_url, args[, timeout]``), passed on as
    they came. ``torch.multiprocessing.spawn`` starts fresh interpreters, so the parent's patches
    are not there; and the function it is given is unpickled before anything runs, so it must
    live in a module that imports without detectron2 (unpickling v0.6's own worker imports
    ``detectron2.engine``, which fails before the compat). With CUDA this hands over to v0.6's
    worker (NCCL); without, :func:`.compat_cpu.run_on_gloo` does the same on gloo.
    """
    import torch

    apply()
    original = original_launch_worker()
    if torch.cuda.is_available() and original is not None:
        original(local_rank, *launch_args)
        return
    run_on_gloo(local_rank, *launch_args)
