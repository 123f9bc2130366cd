"""The bf16 engine: the model's torch module in bfloat16 on a CPU with native bfloat16.

The backbone and head (:class:`.volume._Core`) are cast to bfloat16 and laid out channels-last,
and run by torch on the CPU; oneDNN runs their convolutions on the CPU's bfloat16 units (AMX
tiles or AVX512-BF16 dot products): about 2.5× float32 onnxruntime at 512² on a 2-core CPU
with AMX (docs/benchmarks.md). GroupNorm is cast too: keeping it in float32 (``torch.autocast``)
agreed with float32 a little better (by at most 0.004 per class on the models measured),
changed ``auto``'s choice for none of them and cost about 10 % more model time. The logits come
back as float32, so the post-processing (resize, arg-max, softmax, uncertainty) is float32's.

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

#: how the module is made; part of the record's key, so a change measures it again
RECIPE = "torch-bf16-channels-last-v1"
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

    def __init__(self, module: Any, dtype: Any) -> None:
        import torch

        self.dtype = dtype
        if dtype == torch.float32:
            self.module = module
            self.memory_format = torch.contiguous_format
        else:
            self.module = copy.deepcopy(module).to(dtype).to(memory_format=torch.channels_last)
            self.memory_format = torch.channels_last
        self.module.eval()

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(feeds["images"]).to(self.dtype)
            logits = self.module(x.contiguous(memory_format=self.memory_format))
            return [logits.float().contiguous().numpy()]
