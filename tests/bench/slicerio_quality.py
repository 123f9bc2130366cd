"""Quality run: semantic FPN on slicerio's chest CT, Dice per class on slices it never saw.

slicerio ships a chest CT (``CTChest4.nrrd``, 128×128×34, 3.05×3.05×10 mm) and a 7-segment
segmentation (``Segmentation.seg.nrrd``: ribs, cervical/thoracic/lumbar vertebral column,
right lung, left lung, tissue). The labels are resampled onto the CT grid (nearest), the CT goes
through radseg's default channel recipe (soft tissue, lung and bone windows), and the slices are
split by position: every fourth slice (z % 4 == 1) is the test set, one more in eight is the
validation set, the rest train. Training uses radseg's detectron2 backend as a job would:
validation every ``--eval-period`` iterations, the best checkpoint by mean Dice, early stopping,
flips off (the classes have sides), small rotations and scales. The test slices are then
predicted by the volume predictor and measured with :mod:`radseg.metrics`. Run::

    nice .venv/bin/python -m tests.bench.slicerio_quality --iterations 300 --image-size 64

Prints a Markdown table (Dice, IoU per class on the test slices; 2D HD95 per slice, averaged).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def load_ct_and_labels() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], list[str]]:
    """HU ``(z, y, x)``, labels on the same grid, spacing ``(x, y, z)`` and segment names."""
    import SimpleITK as sitk
    import slicerio

    ct_path = slicerio.get_testdata_file("CTChest4.nrrd")
    seg_path = slicerio.get_testdata_file("Segmentation.seg.nrrd")
    ct = sitk.ReadImage(ct_path)
    segmentation = slicerio.read_segmentation(seg_path, skip_voxels=True)
    names = [s["name"] for s in segmentation["segments"]]
    values = [int(s["labelValue"]) for s in segmentation["segments"]]
    if values != list(range(1, len(values) + 1)):
        raise SystemExit(f"unexpected label values {values}")
    labels_image = sitk.ReadImage(seg_path)  # one layer: a label map with its own geometry
    on_ct = sitk.Resample(labels_image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    labels = sitk.GetArrayFromImage(on_ct).astype(np.uint8)
    spacing = tuple(float(v) for v in ct.GetSpacing())
    return hu, labels, (spacing[0], spacing[1], spacing[2]), names


def split_of(z: int) -> str:
    if z % 4 == 1:
        return "test"
    if z % 8 == 3:
        return "val"
    return "train"


def write_dataset(
    root: Path,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    spacing: tuple[float, float, float],
) -> Path:
    """A dataset version directory as the COCO writer lays it out (semantic labels only)."""
    for sub in ("images", "labels", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n} for i, n in enumerate(names, start=1)]
    per_split: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for z in range(images.shape[0]):
        name = f"chest_{z:04d}"
        Image.fromarray(images[z]).save(root / "images" / f"{name}.png")
        Image.fromarray(labels[z]).save(root / "labels" / f"{name}.png")
        split = per_split[split_of(z)]
        split.append(
            {
                "id": len(split) + 1,
                "file_name": f"images/{name}.png",
                "sem_seg_file_name": f"labels/{name}.png",
                "height": int(images.shape[1]),
                "width": int(images.shape[2]),
                "series_instance_uid": "slicerio.CTChest4",
                "slice_index": z,
                "spacing": list(spacing),
            }
        )
    for split, records in per_split.items():
        coco: dict[str, object] = {"images": records, "annotations": [], "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def engine_agreement(
    backend: Any,
    request: Any,
    dataset: Path,
    f32: np.ndarray,
    classes: list[Any],
    engine: str,
) -> str:
    """A reduced-precision ``engine`` (``"bf16"`` or ``"int8"``, forced) on the test slices,
    against float32's labels: the per-class Dice, and its agreement as measured once on this
    dataset's val split (what ``auto`` decides by)."""
    from dataclasses import replace

    facts: dict[str, Any] = {}
    labels = backend.predict_volume(
        replace(request, dataset_dir=dataset, report=facts.update), engine=engine
    ).labels
    dices = []
    for c in classes:
        x, y = labels == c.id, f32 == c.id
        total = int(x.sum() + y.sum())
        dices.append(f"{c.name} {2 * int((x & y).sum()) / total:.4f}" if total else f"{c.name} -")
    measured = (facts.get(engine) or {}).get("agreement") or {}
    recipe = (facts.get(engine) or {}).get("recipe_words")
    return (
        f"{engine}{f' ({recipe})' if recipe else ''} vs float32 on the test slices, Dice per "
        f"class: {', '.join(dices)}; as "
        f"measured ({measured.get('slices')} slices of the {measured.get('on')}): lowest "
        f"{measured.get('min_dice')}; auto would take it: "
        f"{'yes' if (measured.get('min_dice') or 0) >= 0.99 else 'no'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--eval-period", type=int, default=100)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-lr", type=float, default=0.01)
    parser.add_argument("--image-size", type=int, help="train and predict at this size")
    parser.add_argument("--out", type=Path, help="keep the model here (default: a temp dir)")
    args = parser.parse_args(argv)

    from radseg.contracts import ClassInfo, PredictRequest, TrainRequest
    from radseg.imaging.channels import hu_to_channels
    from radseg.metrics import binary_metrics, class_metrics
    from radseg_plugins.models.detectron2 import Detectron2Backend

    hu, labels, spacing, names = load_ct_and_labels()
    images = hu_to_channels(hu)
    work = args.out or Path(tempfile.mkdtemp(prefix="radseg-slicerio-"))
    dataset = write_dataset(work / "dataset", images, labels, names, spacing)
    classes = [ClassInfo(i, n) for i, n in enumerate(names, start=1)]
    config = {
        "architecture": "semantic_fpn",
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "base_lr": args.base_lr,
        "num_workers": 0,
        "eval_period": args.eval_period,
        "patience": args.patience,
        "rotation_degrees": 10.0,
        "scale_range": 0.1,
        "tolerance_mm": 3.0,
    }
    if args.image_size:
        config["image_size"] = args.image_size
    started = time.perf_counter()

    def log(fraction: float, message: str) -> None:
        if "validation" in message or fraction >= 1.0:
            print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr)

    backend = Detectron2Backend()
    result = backend.train(
        TrainRequest(
            dataset_dir=dataset, output_dir=work / "model", classes=classes, config=config
        ),
        log,
    )
    train_seconds = time.perf_counter() - started

    test_z = [z for z in range(hu.shape[0]) if split_of(z) == "test"]
    request = PredictRequest(
        model_dir=work / "model",
        weights=result.weights,
        config=result.config,
        classes=classes,
        images=images[test_z],
        batch_size=8,
    )
    predicted = backend.predict_volume(request, engine="onnx").labels
    engine_lines = [
        engine_agreement(backend, request, dataset, predicted, classes, engine)
        for engine in ("bf16", "int8")
    ]
    truth = labels[test_z]
    pooled = class_metrics(predicted, truth, [c.id for c in classes])
    in_plane = (spacing[1], spacing[0])
    print(
        f"\nslicerio CTChest4: {len(test_z)} test slices (z % 4 == 1) never trained on; "
        f"{result.iterations} iterations in {train_seconds:.0f} s; weights {result.weights.name}"
        f" (best validation at {result.metrics.get('best')})\n"
    )
    print("| class | Dice | IoU | HD95 2D (mm, mean over slices) | test voxels |")
    print("|---|---|---|---|---|")
    for c in classes:
        m = pooled[c.id]
        hd = [
            binary_metrics(predicted[i] == c.id, truth[i] == c.id, in_plane).hd95
            for i in range(len(test_z))
        ]
        finite = [v for v in hd if v is not None and np.isfinite(v)]
        hd_text = f"{np.mean(finite):.1f}" if finite else "-"
        dice = "-" if m.dice is None else f"{m.dice:.3f}"
        iou = "-" if m.iou is None else f"{m.iou:.3f}"
        print(f"| {c.name} | {dice} | {iou} | {hd_text} | {m.truth_voxels} |")
    print("\n" + "\n".join(engine_lines))
    lungs = [pooled[c.id].dice or 0.0 for c in classes if "lung" in c.name]
    print(
        f"\nlungs: {', '.join(f'{d:.3f}' for d in lungs)} "
        f"({'above' if min(lungs) > 0.9 else 'NOT above'} 0.9)"
    )
    return 0 if min(lungs) > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
