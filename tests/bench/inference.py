"""Inference benchmark: radseg's volume predictor vs a loop of detectron2's DefaultPredictor.

All run the same semantic FPN weights over the same CT volume (a synthetic phantom, three CT
windows per slice: what a dataset version's default recipe makes), each in its own process so
that the peak memory (``VmHWM``) is each one's own:

* ``default_predictor``: the baseline, detectron2's ``DefaultPredictor`` slice by slice;
* ``volume_predictor``: radseg's volume predictor in float32 (``engine="onnx"``); its labels
  must match the baseline's (Dice ≥ 0.999 per class);
* ``volume_predictor_int8``: the volume predictor as a prediction job runs it on a CPU
  (``engine="auto"``: bf16 where the CPU has native bfloat16 and its measured agreement meets
  ``reduced_precision_min_dice``, else int8 where its agreement does, with the per-prediction
  check on every 25th slice; ``--int8-engine int8``: int8 forced). Its set-up includes
  measuring bf16 and building the int8 model (calibration on the model's training split,
  agreement on its val split) when the weights come with a dataset (``dataset_dir`` in
  ``config.json``, as :mod:`tests.bench.phantom_model` writes it); its labels are compared
  with the float32 volume predictor's (the "f32 full path") and must reach Dice ≥ 0.99 per
  class;
* ``volume_predictor_bf16``: the bf16 engine (first recipe: the model in bfloat16 on the CPU,
  ``--bf16-engine bf16``, the default: forced, for its speed on untrained weights; ``auto``:
  as a job, bf16 only where it agrees), its set-up including the measurement of its agreement
  where the weights come with a dataset; its labels are compared with the float32 volume
  predictor's (Dice ≥ 0.99 per class: a goal of the summary, not the run's exit status, when
  bf16 is forced on untrained weights, whose near-tied class scores it flips);
* ``volume_predictor_bf16_stem_predictor`` and ``volume_predictor_bf16_stem_head``: the bf16
  runner with one of bf16's later recipes only (:data:`radseg_plugins.models.detectron2.bf16.
  RECIPES`: the first convolution and the class-score layer in float32; the first convolution
  and the whole semantic head in float32), those a job takes where the whole model in bfloat16
  does not agree well enough;
* ``volume_predictor_crop`` (not run by default: ``--runners``): what cropping every slice to
  the body's bounding box would give, measured, not shipped. The float32 volume predictor on
  the volume cropped to the union of the slices' body boxes (``radseg.imaging.body``) plus
  ``--crop-margin`` voxels, rounded up to the backbone's size divisibility, background
  outside; its labels are compared with the float32 full path's. radseg's models normalise
  with GroupNorm, whose statistics are over the whole slice, so the crop changes the answer
  everywhere, not only at its border (docs/benchmarks.md has the numbers).

The volume predictors get the phantom's body boxes as a CT prediction job does
(``PredictRequest.body_boxes``): slices of air only are not run (the benchmark's phantom has a
body on every slice, so none is skipped here).

Prints a Markdown table (slices/s, set-up time, peak memory, the speed-ups in wall and CPU time)
and the Dice between the label volumes. Run from the repository root::

    .venv/bin/python -m tests.bench.inference --slices 300 --size 512
    .venv/bin/python -m tests.bench.inference --weights var/bench-phantom/model/model_final.pth
    .venv/bin/python -m tests.bench.inference --slices 40 \
        --runners default_predictor volume_predictor volume_predictor_crop --crop-margin 16

Without ``--weights`` the model is a seeded, untrained ResNet-18 semantic FPN with 4 classes
(the speed does not depend on what the weights learned), calibrated on phantom slices of three
other patients; its int8 agreement with float32 is low (an untrained model's class scores are
all nearly tied, so rounding flips the arg-max), so ``auto`` stays on float32 and
``--int8-engine int8`` measures int8's speed (bf16 is forced by default, for the same reason).
Agreement needs a trained model (:mod:`tests.bench.phantom_model`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.summary import record

RUNNERS = (
    "default_predictor",
    "volume_predictor",
    "volume_predictor_int8",
    "volume_predictor_bf16",
    "volume_predictor_bf16_stem_predictor",
    "volume_predictor_bf16_stem_head",
    "volume_predictor_crop",
)
#: what runs without ``--runners``
DEFAULT_RUNNERS = RUNNERS[:6]
#: the bf16 runners that run one recipe of bf16's alone
BF16_RECIPE_RUNNERS = {
    "volume_predictor_bf16_stem_predictor": "torch-bf16-f32-stem-predictor-v1",
    "volume_predictor_bf16_stem_head": "torch-bf16-f32-stem-head-v1",
}
#: the lowest per-class Dice each runner's labels must reach against its reference
MIN_DICE = {
    "volume_predictor": 0.999,
    "volume_predictor_int8": 0.99,
    "volume_predictor_bf16": 0.99,
    "volume_predictor_bf16_stem_predictor": 0.99,
    "volume_predictor_bf16_stem_head": 0.99,
    "volume_predictor_crop": 0.999,
}
#: what each runner's labels are compared with
REFERENCES = {
    "volume_predictor": "default_predictor",
    "volume_predictor_int8": "volume_predictor",
    "volume_predictor_bf16": "volume_predictor",
    "volume_predictor_bf16_stem_predictor": "volume_predictor",
    "volume_predictor_bf16_stem_head": "volume_predictor",
    "volume_predictor_crop": "volume_predictor",
}


def make_volume(slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(z, y, x, 3)``: the synthetic phantom through the default channel recipe, and
    its body boxes ``(z, 4)`` (what the host computes for a CT series)."""
    from radseg.imaging.body import body_boxes
    from radseg.imaging.channels import hu_to_channels
    from radseg.imaging.synthetic import _phantom

    hu, _ = _phantom((slices, size, size), np.random.default_rng(seed), 12.0)
    return hu_to_channels(hu), body_boxes(hu)


def crop_box(
    boxes: np.ndarray, shape: tuple[int, int], margin: int, divisible: int
) -> tuple[int, ...]:
    """The union of the slices' ``boxes`` grown by ``margin`` and to a multiple of
    ``divisible``, within ``shape``: ``(y0, y1, x0, x1)``."""
    found = boxes[(boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])]
    if not len(found):
        return 0, shape[0], 0, shape[1]
    box = [int(found[:, 0].min()), int(found[:, 1].max())]
    box += [int(found[:, 2].min()), int(found[:, 3].max())]
    out = []
    for (lo, hi), size in zip(((box[0], box[1]), (box[2], box[3])), shape, strict=True):
        lo, hi = max(0, lo - margin), min(size, hi + margin)
        want = min(size, -(-(hi - lo) // divisible) * divisible)
        hi = min(size, lo + want)
        out += [max(0, hi - want), hi]
    return tuple(out)


def make_model(work: Path, classes: int, seed: int = 0) -> Path:
    """Seeded, untrained weights and the ``config.json`` the backend's predict takes."""
    import torch

    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from radseg_plugins.models.detectron2.config import new_cfg, set_num_classes, template_path

    torch.manual_seed(seed)
    cfg = new_cfg("semantic_fpn")
    cfg.merge_from_file(str(template_path("semantic_fpn")))
    set_num_classes(cfg, classes)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(work)).save("model_final")
    config = {
        "architecture": "semantic_fpn",
        "cfg_yaml": cfg.dump(),
        "classes": [{"id": i, "name": f"class{i}"} for i in range(1, classes + 1)],
    }
    (work / "config.json").write_text(json.dumps(config))
    return work / "model_final.pth"


def child(
    runner: str,
    images_file: Path,
    weights: Path,
    config_file: Path,
    out: Path,
    batch_size: int,
    int8_engine: str = "auto",
    crop_margin: int = 16,
    bf16_engine: str = "bf16",
) -> None:
    """Run one predictor over the volume; write its labels and numbers next to ``out``."""
    images = np.load(images_file)
    boxes = np.load(images_file.with_name("boxes.npy"))
    config = json.loads(config_file.read_text())
    started = time.perf_counter()
    cpu_started = 0.0
    if runner == "default_predictor":
        from radseg_plugins.models.detectron2 import compat

        compat.apply()
        from detectron2.engine import DefaultPredictor

        from radseg_plugins.models.detectron2.config import cfg_from_saved
        from radseg_plugins.models.detectron2.inference import load_model

        cfg = cfg_from_saved(config, weights.parent)
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.WEIGHTS = str(weights)
        predictor = DefaultPredictor(cfg)
        _, _, index = load_model(config, weights.parent, weights, [], "cpu")
        lut = index.semantic_to_label()
        setup = time.perf_counter() - started
        started = time.perf_counter()
        cpu_started = time.process_time()
        labels = np.zeros(images.shape[:3], np.uint8)
        for z, image in enumerate(images):
            # DefaultPredictor takes BGR and flips it itself for an RGB model.
            output = predictor(np.ascontiguousarray(image[:, :, ::-1]))
            labels[z] = lut[output["sem_seg"].argmax(0).numpy()]
    else:
        from radseg.contracts import PredictRequest
        from radseg_plugins.models.detectron2 import Detectron2Backend

        backend = Detectron2Backend()
        engine = {
            "volume_predictor_int8": int8_engine,
            "volume_predictor_bf16": bf16_engine,
            **dict.fromkeys(BF16_RECIPE_RUNNERS, bf16_engine),
        }.get(runner, "onnx")
        if runner in BF16_RECIPE_RUNNERS:
            # one of bf16's later recipes alone (this runner's process only)
            from radseg_plugins.models.detectron2 import bf16

            recipe = BF16_RECIPE_RUNNERS[runner]
            bf16.RECIPES = {recipe: bf16.RECIPES[recipe]}
        full_size = images.shape[1:3]
        if runner == "volume_predictor_crop":
            d = 32  # the template's backbone size divisibility (the FPN's coarsest stride)
            y0, y1, x0, x1 = crop_box(boxes, full_size, crop_margin, d)
            images = np.ascontiguousarray(images[:, y0:y1, x0:x1])
            boxes = boxes - np.array([y0, y0, x0, x0])
        dataset_dir = config.get("dataset_dir")
        facts: dict[str, object] = {}
        request = PredictRequest(
            model_dir=weights.parent,
            weights=weights,
            config=config,
            classes=[],
            images=images[:1],
            batch_size=batch_size,
            dataset_dir=Path(dataset_dir) if dataset_dir else None,
            report=facts.update,
            body_boxes=boxes[:1],
        )
        # loads, exports to ONNX once (cached), builds and measures int8 once, warms up
        backend.predict_volume(request, engine=engine)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        cpu_started = time.process_time()
        from dataclasses import replace

        facts.clear()
        labels = backend.predict_volume(
            replace(request, images=images, body_boxes=boxes), engine=engine
        ).labels
        if runner == "volume_predictor_crop":
            whole = np.zeros((len(labels), *full_size), np.uint8)
            whole[:, y0:y1, x0:x1] = labels
            labels = whole
        check = facts.get("int8_check") or facts.get("bf16_check")
        extra = {"engine": facts.get("engine"), "check": check}
        extra["skipped"] = int(len(boxes) - np.count_nonzero(boxes[:, 1] > boxes[:, 0]))
        if runner == "volume_predictor_crop":
            area = (y1 - y0) * (x1 - x0) / (full_size[0] * full_size[1])
            extra["crop"] = {"box": [y0, y1, x0, x1], "area": round(area, 3)}
        extra["int8"] = facts.get("int8")
        extra["bf16"] = facts.get("bf16")
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    np.save(out.with_suffix(".npy"), labels)
    peak_mib = _peak_rss_mib()
    numbers = {"seconds": seconds, "cpu": cpu, "setup": setup, "peak_mib": peak_mib}
    if runner != "default_predictor":
        numbers.update(extra)
    out.write_text(json.dumps(numbers))


def _peak_rss_mib() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux keeps it across ``exec``, so a child
    would report the parent's peak (the phantom's floats) when that is higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dice(a: np.ndarray, b: np.ndarray, class_id: int) -> float | None:
    x, y = a == class_id, b == class_id
    total = int(x.sum() + y.sum())
    return None if total == 0 else 2 * int((x & y).sum()) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--weights", type=Path, help="a trained model_final.pth (+ config.json)")
    parser.add_argument(
        "--runners", nargs="+", choices=RUNNERS, default=list(DEFAULT_RUNNERS), help="which to run"
    )
    parser.add_argument(
        "--crop-margin", type=int, default=16, help="volume_predictor_crop: voxels around the body"
    )
    parser.add_argument(
        "--int8-engine",
        choices=("auto", "int8"),
        default="auto",
        help="the int8 runner's engine: auto (as a job: bf16 or int8 only where it agrees) or "
        "int8 (forced, for its speed on untrained weights)",
    )
    parser.add_argument(
        "--bf16-engine",
        choices=("auto", "bf16"),
        default="bf16",
        help="the bf16 runner's engine: bf16 (forced, the default: its speed on any weights) or "
        "auto (as a job: bf16 only where the CPU has native bfloat16 and it agrees)",
    )
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--io", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        images_file, weights, config_file, out = args.io
        child(
            args.child,
            images_file,
            weights,
            config_file,
            out,
            args.batch_size,
            args.int8_engine,
            args.crop_margin,
            args.bf16_engine,
        )
        return 0

    with tempfile.TemporaryDirectory(prefix="radseg-bench-") as tmp:
        work = Path(tmp)
        images, boxes = make_volume(args.slices, args.size)
        np.save(work / "images.npy", images)
        np.save(work / "boxes.npy", boxes)
        weights = args.weights or make_model(work, classes=4)
        if not args.weights:
            # calibration and agreement slices for int8: phantom slices of other patients
            from tests.bench.phantom_model import write_dataset

            dataset = work / "dataset"
            write_dataset(dataset, [1, 2, 3], 8, args.size, args.size)
            config = json.loads((work / "config.json").read_text())
            config["dataset_dir"] = str(dataset)
            (work / "config.json").write_text(json.dumps(config))
        config_file = weights.parent / "config.json"
        results: dict[str, dict[str, Any]] = {}
        for runner in args.runners:
            out = work / f"{runner}.json"
            command = [
                sys.executable,
                "-m",
                "tests.bench.inference",
                "--child",
                runner,
                "--batch-size",
                str(args.batch_size),
                "--int8-engine",
                args.int8_engine,
                "--crop-margin",
                str(args.crop_margin),
                "--bf16-engine",
                args.bf16_engine,
                "--io",
                str(work / "images.npy"),
                str(weights),
                str(config_file),
                str(out),
            ]
            subprocess.run(command, check=True)
            results[runner] = json.loads(out.read_text())
        labels = {runner: np.load(work / f"{runner}.npy") for runner in args.runners}
    print(
        f"\n{args.slices} slices of {args.size}², batch {args.batch_size}, "
        f"{stdlib_platform.machine()} {stdlib_platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| predictor | engine | slices/s | ms/slice | CPU ms/slice | set-up s | peak MiB "
        "| speed-up (wall) | speed-up (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = results.get("default_predictor", {}).get("seconds")
    base_cpu = results.get("default_predictor", {}).get("cpu")
    for runner in args.runners:
        r = results[runner]
        per_slice_ms = 1000 * r["seconds"] / args.slices
        wall = f"{base / r['seconds']:.2f}×" if base else "-"
        cpu = f"{base_cpu / r['cpu']:.2f}×" if base_cpu else "-"
        print(
            f"| {runner} | {r.get('engine') or 'torch'} | {args.slices / r['seconds']:.2f} "
            f"| {per_slice_ms:.0f} | {1000 * r['cpu'] / args.slices:.0f} | {r['setup']:.1f} "
            f"| {r['peak_mib']:.0f} | {wall} | {cpu} |"
        )
    ok = True
    for runner, reference in REFERENCES.items():
        if runner not in labels or reference not in labels:
            continue
        ours, theirs = labels[runner], labels[reference]
        class_ids = sorted((set(np.unique(theirs)) | set(np.unique(ours))) - {0})
        dices = {c: dice(ours, theirs, c) for c in class_ids}
        worst = min((d for d in dices.values() if d is not None), default=1.0)
        needed = MIN_DICE[runner]
        if runner in DEFAULT_RUNNERS:  # the crop is a measurement of what is not shipped
            # bf16 forced on untrained weights: a measurement, not what a job would run
            forced_untrained = (
                runner.startswith("volume_predictor_bf16")
                and args.bf16_engine == "bf16"
                and not args.weights
            )
            ok = ok and (worst >= needed or forced_untrained)
            forced = " (bf16 forced on untrained weights: auto would not take it)"
            record(
                f"inference: Dice {runner} vs {reference}, lowest class"
                + (forced if forced_untrained else ""),
                f"≥ {needed}",
                f"{worst:.5f}",
                worst >= needed,
            )
        print(
            f"\nDice {runner} vs {reference}, per class: "
            + ", ".join(f"{c}: {d:.5f}" if d is not None else f"{c}: -" for c, d in dices.items())
            + f"\nlowest: {worst:.5f} ({'OK' if worst >= needed else f'BELOW {needed}'})"
        )
    for runner in (
        "volume_predictor",
        "volume_predictor_int8",
        "volume_predictor_bf16",
        *BF16_RECIPE_RUNNERS,
    ):
        if runner in results and base and base_cpu:
            wall = base / results[runner]["seconds"]
            cpu = base_cpu / results[runner]["cpu"]
            name = f"inference: {runner} / DefaultPredictor loop"
            record(f"{name}, wall", "≥ 2×", wall, wall >= 2)
            record(f"{name}, CPU", "≥ 2×", cpu, cpu >= 2)
    crop = results.get("volume_predictor_crop", {})
    if crop.get("crop") and "volume_predictor" in results:
        full = results["volume_predictor"]
        print(
            f"\ncrop {crop['crop']['box']} (y0, y1, x0, x1; {crop['crop']['area']:.0%} of the "
            f"slice, margin {args.crop_margin}): {full['seconds'] / crop['seconds']:.2f}× the "
            f"full path in wall time, {full['cpu'] / crop['cpu']:.2f}× in CPU time"
        )
    skipped = {r: results[r]["skipped"] for r in args.runners if "skipped" in results[r]}
    if skipped:
        print(f"slices of air only, not run: {skipped}")
    for runner in (
        "volume_predictor_int8",
        "volume_predictor_bf16",
        *BF16_RECIPE_RUNNERS,
    ):
        facts = results.get(runner, {})
        for name in ("bf16", "int8"):
            if facts.get(name):
                measured = facts[name]
                print(f"\n{runner}: {name} as measured: {json.dumps(measured.get('agreement'))}")
                reason = measured.get("reason", "not measured")
                print(f"engine chosen: {measured.get('engine')} ({name}: {reason})")
        if facts.get("check"):
            print(f"{runner}: check on this prediction: {json.dumps(facts['check'])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
