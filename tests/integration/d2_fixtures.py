"""A tiny dataset version for the detectron2 backend, laid out like the core's COCO writer's.

Each 64 x 64 slice shows up to two easy shapes on a noisy dark background: a bright disc
(class 1, "disc") and a bright square (class 2, "square"), each in its own colour, so that a
small model learns them in a few dozen iterations on a CPU. Labels are class-id PNGs with a few
ignore (255) pixels, annotations one RLE per (slice, class) as the writer makes them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from radseg.contracts import ClassInfo
from tests.support import require

SIZE = 64
CLASSES = [
    ClassInfo(id=1, name="disc", color=(255, 64, 64)),
    ClassInfo(id=2, name="square", color=(64, 255, 64)),
]
_COLOURS = {1: (230, 80, 60), 2: (70, 210, 90)}


def make_slice(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One RGB slice and its label map."""
    image = rng.integers(10, 50, size=(size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    # The disc on the left half, the square on the right: they never overlap.
    if rng.random() < 0.9:
        r = int(rng.integers(7, 12))
        cy, cx = int(rng.integers(r + 2, size - r - 2)), int(rng.integers(r + 2, size // 2 - 2))
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    if rng.random() < 0.9:
        s = int(rng.integers(12, 20))
        y0, x0 = int(rng.integers(2, size - s - 2)), int(rng.integers(size // 2 + 2, size - s - 1))
        labels[y0 : y0 + s, x0 : x0 + s] = 2
    for class_id, colour in _COLOURS.items():
        noise = rng.integers(-15, 15, size=(int((labels == class_id).sum()), 3))
        image[labels == class_id] = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    labels[0, :4] = 255  # a few ignored pixels, as the writer leaves for unlabelled regions
    return image, labels


def make_dataset_version(
    root: Path, *, train: int = 6, val: int = 2, seed: int = 0, size: int = SIZE
) -> Path:
    """Write a dataset version under ``root`` and return its directory (the test split is empty)."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "labels", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    categories = [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES]
    counts = {"train": train, "val": val, "test": 0}
    ann_id = 1
    for split, count in counts.items():
        images: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []
        for i in range(count):
            name = f"{split}{i:03d}"
            image, labels = make_slice(rng, size)
            Image.fromarray(image).save(root / "images" / f"{name}.png")
            Image.fromarray(labels).save(root / "labels" / f"{name}.png")
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": f"images/{name}.png",
                    "sem_seg_file_name": f"labels/{name}.png",
                    "height": size,
                    "width": size,
                    "series_instance_uid": f"1.2.826.0.1.{seed}.{split}",
                    "sop_instance_uid": f"1.2.826.0.1.{seed}.{split}.{i}",
                    "slice_index": i,
                }
            )
            for c in CLASSES:
                mask = labels == c.id
                if not mask.any():
                    continue
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": c.id,
                        "segmentation": {"size": [size, size], "counts": rle["counts"].decode()},
                        "area": float(mask_util.area(rle)),
                        "bbox": [float(v) for v in mask_util.toBbox(rle)],
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    manifest = {
        "classes": categories,
        "channels": 3,
        "recipe": {"kind": "synthetic"},
        "splits": counts,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def load_split_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(z, y, x, 3)`` and labels ``(z, y, x)`` of ``split``, in JSON order."""
    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    images = [
        np.asarray(Image.open(root / img["file_name"]).convert("RGB")) for img in coco["images"]
    ]
    labels = [np.asarray(Image.open(root / img["sem_seg_file_name"])) for img in coco["images"]]
    return np.stack(images), np.stack(labels)


def require_detectron2() -> None:
    """Skip when detectron2 is not installed; under ``CI=true`` fail instead (CI must not skip)."""
    require(
        importlib.util.find_spec("detectron2") is not None,
        "detectron2 is not installed; run `.venv/bin/python tools/install_detectron2.py`",
    )


def seeded_slices(count: int) -> np.ndarray:
    """``count`` slices of :func:`make_slice` from a fixed seed: what the reduced-precision
    engine tests predict."""
    rng = np.random.default_rng(11)
    return np.stack([make_slice(rng)[0] for _ in range(count)])


def model_request(weights: Path, images: np.ndarray, **fields: Any) -> Any:
    """A ``PredictRequest`` of ``images`` for the trained ``weights`` (their ``config.json``
    beside them), with ``fields`` (``batch_size``, ``dataset_dir``, ``report``, ...)."""
    from radseg.contracts import PredictRequest

    return PredictRequest(
        model_dir=weights.parent,
        weights=weights,
        config=json.loads((weights.parent / "config.json").read_text()),
        classes=[],
        images=images,
        **fields,
    )


def predict_reporting(
    weights: Path,
    dataset: Path | None,
    images: np.ndarray,
    *,
    min_dice: float,
    check_every: int = 25,
    engine: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The detectron2 backend's prediction of ``images`` with ``weights`` (their
    ``config.json`` beside them) and the facts it reported."""
    from radseg_plugins.models.detectron2 import Detectron2Backend
    from radseg_plugins.models.detectron2.settings import Detectron2Settings

    facts: dict[str, Any] = {}
    request = model_request(weights, images, batch_size=2, dataset_dir=dataset, report=facts.update)
    settings = Detectron2Settings(
        reduced_precision_min_dice=min_dice, reduced_precision_check_every=check_every
    )
    return Detectron2Backend(settings).predict_volume(request, engine=engine), facts
