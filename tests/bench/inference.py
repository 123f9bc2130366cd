"""Inference benchmark: radseg's volume predictor vs a loop of detectron2's DefaultPredictor.

Both run the same semantic FPN weights over the same CT volume (a synthetic phantom, three CT
windows per slice: what a dataset version's default recipe makes), each in its own process so
that the peak memory (``ru_maxrss``) is each one's own. Prints a Markdown table: slices/s,
set-up time, peak memory, the speed-up, and the Dice between the two label volumes (per class;
it must be ≥ 0.999). Run from the repository root::

    .venv/bin/python -m tests.bench.inference --slices 300 --size 512
    .venv/bin/python -m tests.bench.inference --weights var/models/job-1/model_final.pth

Without ``--weights`` the model is a seeded, untrained ResNet-18 semantic FPN with 4 classes
(the speed does not depend on what the weights learned).
"""

from __future__ import annotations

import argparse
import json
import platform as stdlib_platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.bench.summary import record

RUNNERS = ("default_predictor", "volume_predictor")


def make_volume(slices: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 ``(z, y, x, 3)``: the synthetic phantom through the default channel recipe."""
    from radseg.imaging.channels import hu_to_channels
    from radseg.imaging.synthetic import _phantom

    hu, _ = _phantom((slices, size, size), np.random.default_rng(seed), 12.0)
    return hu_to_channels(hu)


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
    runner: str, images_file: Path, weights: Path, config_file: Path, out: Path, batch_size: int
) -> None:
    """Run one predictor over the volume; write its labels and numbers next to ``out``."""
    images = np.load(images_file)
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
        request = PredictRequest(
            model_dir=weights.parent,
            weights=weights,
            config=config,
            classes=[],
            images=images[:1],
            batch_size=batch_size,
        )
        backend.predict(request)  # loads, exports to ONNX once (cached), warms up
        setup = time.perf_counter() - started
        started = time.perf_counter()
        cpu_started = time.process_time()
        from dataclasses import replace

        labels = backend.predict(replace(request, images=images))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    np.save(out.with_suffix(".npy"), labels)
    peak_mib = _peak_rss_mib()
    out.write_text(
        json.dumps({"seconds": seconds, "cpu": cpu, "setup": setup, "peak_mib": peak_mib})
    )


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
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--io", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        images_file, weights, config_file, out = args.io
        child(args.child, images_file, weights, config_file, out, args.batch_size)
        return 0

    with tempfile.TemporaryDirectory(prefix="radseg-bench-") as tmp:
        work = Path(tmp)
        images = make_volume(args.slices, args.size)
        np.save(work / "images.npy", images)
        weights = args.weights or make_model(work, classes=4)
        config_file = weights.parent / "config.json"
        results: dict[str, dict[str, float]] = {}
        for runner in RUNNERS:
            out = work / f"{runner}.json"
            command = [
                sys.executable,
                "-m",
                "tests.bench.inference",
                "--child",
                runner,
                "--batch-size",
                str(args.batch_size),
                "--io",
                str(work / "images.npy"),
                str(weights),
                str(config_file),
                str(out),
            ]
            subprocess.run(command, check=True)
            results[runner] = json.loads(out.read_text())
        ours = np.load(work / "volume_predictor.npy")
        theirs = np.load(work / "default_predictor.npy")
    class_ids = sorted((set(np.unique(theirs)) | set(np.unique(ours))) - {0})
    dices = {c: dice(ours, theirs, c) for c in class_ids}
    base = results["default_predictor"]["seconds"]
    print(
        f"\n{args.slices} slices of {args.size}², batch {args.batch_size}, "
        f"{stdlib_platform.machine()} {stdlib_platform.python_version()}\n"
    )
    print(
        "| predictor | slices/s | ms/slice | CPU ms/slice | set-up s | peak MiB "
        "| speed-up (wall) | speed-up (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base_cpu = results["default_predictor"]["cpu"]
    for runner in RUNNERS:
        r = results[runner]
        per_slice_ms = 1000 * r["seconds"] / args.slices
        print(
            f"| {runner} | {args.slices / r['seconds']:.2f} | {per_slice_ms:.0f}"
            f" | {1000 * r['cpu'] / args.slices:.0f} | {r['setup']:.1f} | {r['peak_mib']:.0f}"
            f" | {base / r['seconds']:.2f}× | {base_cpu / r['cpu']:.2f}× |"
        )
    print(
        "\nDice between the two label volumes, per class: "
        + ", ".join(f"{c}: {d:.5f}" if d is not None else f"{c}: -" for c, d in dices.items())
    )
    worst = min((d for d in dices.values() if d is not None), default=1.0)
    print(f"lowest: {worst:.5f} ({'OK' if worst >= 0.999 else 'BELOW 0.999'})")
    wall, cpu = (
        base / results["volume_predictor"]["seconds"],
        base_cpu / results["volume_predictor"]["cpu"],
    )
    record("inference: volume predictor / DefaultPredictor loop, wall", "≥ 2×", wall, wall >= 2)
    record("inference: volume predictor / DefaultPredictor loop, CPU", "≥ 2×", cpu, cpu >= 2)
    record(
        "inference: Dice between the two outputs, lowest class",
        "≥ 0.999",
        f"{worst:.5f}",
        worst >= 0.999,
    )
    return 0 if worst >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
