"""bf16 variants against float32 onnxruntime: the engine's full cast, and GroupNorm in float32.

A trained model's labels on phantom slices it never saw (the inference benchmark's volume),
from the float32 volume predictor and from two bfloat16 variants run through the same pipeline
(the session replaced, as the engine does): the engine's (the module cast to bfloat16,
channels-last: :class:`radseg_plugins.models.detectron2.bf16.TorchSession`) and autocast (the
float32 module, channels-last, under ``torch.autocast("cpu", dtype=torch.bfloat16)``, which
keeps GroupNorm and the other reductions in float32). Prints per variant the time per slice,
float32's time over its time, the per-class Dice against float32's labels and the share of
equal voxels. Run from the repository root::

    .venv/bin/python -m tests.bench.bf16_variants /tmp/ph1200/model --size 128 --slices 40
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class Autocast:
    """The float32 module, channels-last, under bfloat16 autocast (GroupNorm stays float32)."""

    def __init__(self, core: Any) -> None:
        import torch

        self.module = copy.deepcopy(core).to(memory_format=torch.channels_last)

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        x = torch.from_numpy(feeds["images"]).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return [self.module(x).float().contiguous().numpy()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="a trained model's folder (config.json)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=40)
    args = parser.parse_args(argv)

    import torch

    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    from radseg_plugins.models.detectron2.bf16 import TorchSession
    from radseg_plugins.models.detectron2.inference import load_model
    from radseg_plugins.models.detectron2.volume import VolumePredictor
    from tests.bench.inference import make_volume

    config = json.loads((args.model_dir / "config.json").read_text())
    weights = args.model_dir / "model_final.pth"
    cfg, model, index = load_model(config, args.model_dir, weights, config["classes"], "cpu")
    predictor = VolumePredictor(cfg, model, index, engine="onnx")  # exported to a temp folder
    images, _ = make_volume(args.slices, args.size)
    predictor(images[:4], batch_size=4)
    started = time.perf_counter()
    reference = predictor(images, batch_size=4).labels
    f32_seconds = time.perf_counter() - started
    print(
        f"\n{args.model_dir}: {args.slices} phantom slices of {args.size}², float32 onnxruntime "
        f"{1000 * f32_seconds / args.slices:.0f} ms/slice\n"
    )
    names = [c.name for c in index.classes]
    print(f"| variant | ms/slice | float32 / it | {' | '.join(names)} | equal voxels |")
    print(f"|---|---|---|{'---|' * len(names)}---|")
    variants = {
        "bf16 cast, channels-last (the engine)": TorchSession(predictor.core, torch.bfloat16),
        "autocast bf16, channels-last (GroupNorm float32)": Autocast(predictor.core),
    }
    for name, session in variants.items():
        predictor._session = session
        predictor(images[:4], batch_size=4)
        started = time.perf_counter()
        labels = predictor(images, batch_size=4).labels
        seconds = time.perf_counter() - started
        dices = []
        for info in index.classes:
            a, b = labels == info.id, reference == info.id
            total = int(a.sum() + b.sum())
            dices.append(f"{2 * int((a & b).sum()) / total:.4f}" if total else "-")
        print(
            f"| {name} | {1000 * seconds / args.slices:.0f} | {f32_seconds / seconds:.2f}× "
            f"| {' | '.join(dices)} | {float((labels == reference).mean()):.5f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
