"""A trained semantic FPN for the inference benchmark: the demo's model on the demo's phantom.

The inference benchmark's own model is seeded and untrained: right for speed, wrong for int8,
whose agreement with float32 depends on what the weights learned (an untrained model's class
scores are nearly tied everywhere, so any rounding flips the arg-max). This trains the demo's
model (semantic FPN, ResNet-18, from scratch, the synthetic phantom's 5 classes through the
default CT recipe) on phantom slices of other patients (seeds 1 and 2 train, 3 validates; the
benchmark's volume is seed 0), at the demo's 128² by default. ``--tile`` cuts the training
slices into tiles (so that a CPU could train at 512²), but a model trained on tiles predicted
only background on whole 512² slices (GroupNorm's statistics over a tile are not those over a
slice), so the benchmark uses whole slices. Run::

    nice .venv/bin/python -m tests.bench.phantom_model --out var/bench-phantom --iterations 300
    .venv/bin/python -m tests.bench.inference --size 128 \
        --weights var/bench-phantom/model/model_final.pth

It writes the dataset version (``dataset/``) and the model (``model/``: weights and the
``config.json`` the benchmark reads, with the model's ``dataset_dir``: its calibration source).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_dataset(root: Path, patients: list[int], slices: int, size: int, tile: int) -> list[str]:
    """A dataset version (COCO, semantic label PNGs) from phantom patients; the class names.

    The last patient is the val split (whole slices), the others train (``tile``² tiles)."""
    from radseg.imaging.channels import hu_to_channels
    from radseg.imaging.synthetic import SYNTHETIC_CLASSES, _phantom

    for sub in ("images", "labels", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    categories = [{"id": c.id, "name": c.name} for c in SYNTHETIC_CLASSES]
    per_split: dict[str, list[dict[str, object]]] = {"train": [], "val": []}
    for n, seed in enumerate(patients):
        hu, labels = _phantom((slices, size, size), np.random.default_rng(seed), 12.0)
        images = hu_to_channels(hu)
        val = n == len(patients) - 1
        split = per_split["val" if val else "train"]
        step = size if val else tile
        for z in range(slices):
            for y in range(0, size, step):
                for x in range(0, size, step):
                    image = images[z, y : y + step, x : x + step]
                    label = labels[z, y : y + step, x : x + step]
                    if not val and image.max() == image.min():
                        continue  # a tile of air teaches nothing
                    name = f"p{seed}_{z:04d}_{y}_{x}"
                    Image.fromarray(image).save(root / "images" / f"{name}.png", compress_level=1)
                    Image.fromarray(label).save(root / "labels" / f"{name}.png", compress_level=1)
                    split.append(
                        {
                            "id": len(split) + 1,
                            "file_name": f"images/{name}.png",
                            "sem_seg_file_name": f"labels/{name}.png",
                            "height": step,
                            "width": step,
                            "series_instance_uid": f"phantom.{seed}",
                            "slice_index": z,
                            "spacing": [0.8, 0.8, 2.5],
                        }
                    )
    for split_name, records in per_split.items():
        coco = {"images": records, "annotations": [], "categories": categories}
        (root / "annotations" / f"instances_{split_name}.json").write_text(json.dumps(coco))
    return [c.name for c in SYNTHETIC_CLASSES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--slices", type=int, default=24, help="slices per phantom patient")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--tile", type=int, help="train on tiles of this size (default: whole)")
    args = parser.parse_args(argv)

    from radseg.contracts import TrainRequest
    from radseg.imaging.synthetic import SYNTHETIC_CLASSES
    from radseg_plugins.models.detectron2 import Detectron2Backend

    dataset = args.out / "dataset"
    write_dataset(dataset, [1, 2, 3], args.slices, args.size, args.tile or args.size)
    config = {
        "architecture": "semantic_fpn",
        "iterations": args.iterations,
        "batch_size": 4,
        "base_lr": 0.02,
        "num_workers": 0,
        "eval_period": 0,
    }
    started = time.perf_counter()

    def log(fraction: float, message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {fraction:.2f} {message}", file=sys.stderr)

    result = Detectron2Backend().train(
        TrainRequest(
            dataset_dir=dataset,
            output_dir=args.out / "model",
            classes=list(SYNTHETIC_CLASSES),
            config=config,
        ),
        log,
    )
    saved = {**result.config, "dataset_dir": str(dataset.resolve())}
    (args.out / "model" / "config.json").write_text(json.dumps(saved))
    print(json.dumps(result.metrics.get("val", {}).get("per_class", {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
