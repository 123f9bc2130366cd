"""The compiled ops a pure-Python detectron2 lacks: a stand-in ``detectron2._C`` and substitutes.

The stand-in answers the version queries of ``collect_env``/``default_setup`` and raises
:class:`MissingCompiledOpError`, naming the op, for the rotated-box ops and the raw
deformable-conv kernels; ``DeformConv``/``ModulatedDeformConv`` run through torchvision's
``deform_conv2d`` instead (same offset layout), and ``COCOEvaluator`` uses pycocotools'
``COCOeval``. :func:`.compat.apply` calls these only where no compiled extension is built; each
returns what it changed.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = [
    "MissingCompiledOpError",
    "install_c_stub",
    "patch_coco_evaluator",
    "patch_layers",
]

logger = logging.getLogger(__name__)

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


def install_c_stub(detectron2: types.ModuleType) -> list[str]:
    """Put the stand-in ``detectron2._C`` in place (no compiled extension is built)."""
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
    return ["detectron2._C stand-in"]


def patch_layers() -> list[str]:
    """Rotated NMS raises clearly; deformable convolution runs through torchvision."""
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
    return ["detectron2.layers: nms_rotated stand-in, deform_conv through torchvision"]


def patch_coco_evaluator() -> list[str]:
    """``COCOEvaluator`` always uses pycocotools' ``COCOeval`` (the fast one is compiled)."""
    from detectron2.evaluation import coco_evaluation

    evaluator = coco_evaluation.COCOEvaluator
    if getattr(evaluator.__init__, "_radseg_compat", False):
        return []
    original = evaluator.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_fast_impl", True):
            logger.info("COCOEvaluator: no compiled fast COCOeval; using pycocotools' COCOeval")
        kwargs["use_fast_impl"] = False
        original(self, *args, **kwargs)

    __init__._radseg_compat = True  # type: ignore[attr-defined]
    evaluator.__init__ = __init__
    return ["COCOEvaluator: pycocotools' COCOeval"]
