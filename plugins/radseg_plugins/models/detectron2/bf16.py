"""The bf16 engine: the model's torch module in bfloat16 on a CPU with native bfloat16.

The backbone and head (:class:`.volume._Core`) are cast to bfloat16 and laid out channels-last,
and run by torch on the CPU; oneDNN runs their convolutions on the CPU's bfloat16 units (AMX
tiles or AVX512-BF16 dot products). Three recipes (:data:`RECIPES`), tried in this order:

1. ``torch-bf16-channels-last-v1``: the whole module in bfloat16, about 2.5× float32
   onnxruntime at 512² on a 2-core CPU with AMX, 1.6–1.8× on one with AVX512-BF16 only
   (docs/benchmarks.md);
2. ``torch-bf16-f32-stem-predictor-v1``: the first convolution (which sees the image's own
   values; in bfloat16 the normalised input keeps 8 bits of mantissa, about one grey level)
   and the head's predictor (the 1×1 convolution that makes the class scores, and the resize
   of those scores) stay float32: about 6 % more model time than the first, and on the models
   measured between the first and the third in agreement;
3. ``torch-bf16-f32-stem-head-v1``: the first convolution and the whole semantic head stay
   float32, the rest is bfloat16: about 1.4–1.8× the model time of the first, and on the
   models measured it disagreed with float32 half as much or less (the demo's model: lowest
   class 0.996 against 0.987).

A part is replaced where its parent calls it by attribute (``self.stem``, ``self.predictor``,
the core's ``head``); parts the parent calls from a list (a ResNet's stages, the FPN's
convolutions) cannot be, and are not offered.

The engine takes the first recipe whose measured agreement meets the setting. GroupNorm is cast
with the rest: keeping it in float32 (``torch.autocast``) agreed with float32 a little better
(by at most 0.004 per class on the models measured), changed ``auto``'s choice for none of them
and cost about 10 % more model time. The logits come back as float32, so the post-processing
(resize, arg-max, softmax, uncertainty) is float32's.

bfloat16 keeps float32's exponent and 8 bits of mantissa: a voxel whose two best classes
score within about 1 % of each other may change class. Whether that matters for a model is
measured, not assumed: the engine's agreement with float32 is measured and recorded like
int8's (:mod:`.reduced`), and ``auto`` uses it only where it meets the setting.

On a CPU without native bfloat16 torch emulates it, slower than float32: ``auto`` does not
consider it there, and ``engine="bf16"`` by name still runs, with a warning in the log.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: the recipes, fastest first: name → the parts of :class:`.volume._Core` kept in float32,
#: each as the dotted names it has in the architectures (the first one the model has is
#: taken: the semantic FPN's ResNet is ``backbone.bottom_up``, DeepLabV3+'s is ``backbone``).
#: A recipe's name is part of its record's key, so a change measures it again.
RECIPES: dict[str, tuple[tuple[str, ...], ...]] = {
    "torch-bf16-channels-last-v1": (),
    "torch-bf16-f32-stem-predictor-v1": (
        ("backbone.bottom_up.stem", "backbone.stem"),
        ("head.predictor",),
    ),
    "torch-bf16-f32-stem-head-v1": (("backbone.bottom_up.stem", "backbone.stem"), ("head",)),
}
#: the first recipe (the whole module in bfloat16)
RECIPE = next(iter(RECIPES))
#: how the model card names each recipe
RECIPE_WORDS = {
    "torch-bf16-channels-last-v1": "the whole model in bfloat16",
    "torch-bf16-f32-stem-predictor-v1": (
        "bfloat16, with the first convolution and the class-score layer in float32"
    ),
    "torch-bf16-f32-stem-head-v1": "bfloat16, with the first convolution and the head in float32",
}
#: the parts whose output is the class scores (a float32 part among them gives float32 scores)
LOGIT_PARTS = ("head", "head.predictor")
#: /proc/cpuinfo flags of a CPU that computes in bfloat16 natively
NATIVE_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX-BF16 or AVX512-BF16), read once
    from ``/proc/cpuinfo``; ``False`` where that file is not there (not Linux)."""
    return bool(cpu_flags() & set(NATIVE_FLAGS))


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of the first CPU in ``path`` (empty when it cannot be read)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


class TorchSession:
    """A torch module behind onnxruntime's session interface (``run(None, {"images": x})``
    → ``[logits]``), so the volume predictor's pipeline, its agreement measurement and its
    per-prediction check run it exactly as they run an onnxruntime session.

    ``dtype`` ``torch.bfloat16``: the module is a bfloat16, channels-last copy (the bf16 engine);
    ``torch.float32``: the module itself (the float32 reference where onnxruntime is not used).
    """

    def __init__(self, module: Any, dtype: Any, recipe: str = RECIPE) -> None:
        import torch

        self.dtype = dtype
        if dtype == torch.float32:
            self.module = module
            self.memory_format = torch.contiguous_format
        else:
            parts = float32_parts(module, recipe)
            self.module = _mixed(module, parts)
            self.memory_format = torch.channels_last
            if any(part.endswith("stem") for part in parts):
                self.dtype = torch.float32  # the float32 stem takes the input as it is
        self.module.eval()

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(feeds["images"]).to(self.dtype)
            logits = self.module(x.contiguous(memory_format=self.memory_format))
            return [logits.float().contiguous().numpy()]


def float32_parts(module: Any, recipe: str) -> tuple[str, ...]:
    """The dotted names of ``module``'s submodules that ``recipe`` keeps in float32.

    :raises ValueError: the model has none of the names of one of the recipe's parts (the
        recipe does not apply to this architecture).
    """
    names = []
    for candidates in RECIPES[recipe]:
        found = next((name for name in candidates if _has_submodule(module, name)), None)
        if found is None:
            raise ValueError(f"the model has no {' or '.join(candidates)} ({recipe})")
        names.append(found)
    return tuple(names)


def _has_submodule(module: Any, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _mixed(module: Any, float32_parts: tuple[str, ...]) -> Any:
    """A channels-last copy of ``module`` in bfloat16 but for ``float32_parts`` (dotted names
    of submodules), which stay float32 copies taking bfloat16 at their edges."""
    import torch

    mixed = copy.deepcopy(module).to(torch.bfloat16).to(memory_format=torch.channels_last)
    for name in float32_parts:
        parent_name, _, attribute = name.rpartition(".")
        parent = mixed.get_submodule(parent_name) if parent_name else mixed
        original = copy.deepcopy(module.get_submodule(name)).to(memory_format=torch.channels_last)
        # the head's output, and its predictor's, are the class scores: kept float32 from there
        # on (the head's last steps, the predictor and the resize of its scores, run in float32)
        output = torch.float32 if name in LOGIT_PARTS else torch.bfloat16
        setattr(parent, attribute, _float32_class()(original, output))
    return mixed


def _cast(value: Any, dtype: Any) -> Any:
    """``value``'s tensors (in dicts, lists and tuples too) as ``dtype``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cast(v, dtype) for v in value)
    return value


@functools.cache
def _float32_class() -> Any:
    """The class of a float32 submodule inside a bfloat16 module (made on first use, so that
    importing this module does not import torch)."""
    import torch

    class Float32(torch.nn.Module):
        """Its inputs go in as float32, its outputs come back as ``output`` (bfloat16 for the
        next bfloat16 part; the head's class scores stay float32)."""

        def __init__(self, module: Any, output: Any) -> None:
            super().__init__()
            self.module = module
            self.output = output

        def forward(self, *args: Any) -> Any:
            return _cast(self.module(*_cast(args, torch.float32)), self.output)

    return Float32
