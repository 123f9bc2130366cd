"""Training benchmark: radseg's trainer vs detectron2's own DefaultTrainer, same cfg and data.

Both train the same semantic FPN cfg (what radseg's backend builds for the options below) on
the same synthetic dataset version (the detectron2 test fixture's discs and squares at
``--size``²; its class ids equal the head indices, so DefaultTrainer's own mapper reads the
labels correctly), with the same data-loader workers, one after the other in this process,
``--repeat`` times alternately. Reports iterations/s and the share of each step spent waiting
for data (detectron2's ``data_time`` / ``time``), after ``--warmup`` iterations. Run::

    .venv/bin/python -m tests.bench.training --iterations 40 --size 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.summary import record


def run(kind: str, dataset_dir: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """``(seconds per iteration, data-time share)`` of one training run."""
    from radseg_plugins.models.detectron2 import compat

    compat.apply()
    from detectron2.engine import DefaultTrainer
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter

    class _DefaultTrainer(DefaultTrainer):
        """detectron2's own trainer, with radseg's writers: TensorBoard is not installed."""

        def build_writers(self) -> list[Any]:
            return [
                CommonMetricPrinter(self.max_iter),
                JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / "metrics.json")),
            ]

    from radseg_plugins.models.detectron2.augment import build_augmentations
    from radseg_plugins.models.detectron2.config import build_train_cfg
    from radseg_plugins.models.detectron2.data import ClassIndex, load_split, registered
    from radseg_plugins.models.detectron2.options import TrainOptions
    from radseg_plugins.models.detectron2.trainer import RadsegTrainer
    from tests.integration.d2_fixtures import CLASSES

    options = TrainOptions.from_config(
        {
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "num_workers": args.workers,
            "flip": False,  # DefaultTrainer's template cfg does not flip either
            "checkpoint_period": 10 * args.iterations,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    index = ClassIndex.of(CLASSES)
    splits = {"train": load_split(dataset_dir, "train", index, instances=False)}
    with registered(splits, index, dataset_dir=dataset_dir) as names:
        cfg = build_train_cfg(
            options,
            num_classes=len(CLASSES),
            train_dataset=names["train"],
            output_dir=out,
            device="cpu",
        )
        trainer: Any
        if kind == "DefaultTrainer":
            trainer = _DefaultTrainer(cfg)
        else:
            trainer = RadsegTrainer(
                cfg,
                label_lut=index.label_to_semantic(),
                augmentations=build_augmentations(cfg, options, index.names, args.size),
            )
        trainer.resume_or_load(resume=False)
        trainer.train()
        step = trainer.storage.history("time").values()[args.warmup :]
        data = trainer.storage.history("data_time").values()[args.warmup :]
    seconds = statistics.fmean(v for v, _ in step)
    share = statistics.fmean(v for v, _ in data) / seconds
    return seconds, share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from tests.integration.d2_fixtures import make_dataset_version

    work = Path(tempfile.mkdtemp(prefix="radseg-train-bench-"))
    dataset_dir = make_dataset_version(work / "ds", train=args.images, val=0, size=args.size)
    results: dict[str, list[tuple[float, float]]] = {"DefaultTrainer": [], "radseg": []}
    for n in range(args.repeat):
        for kind in results:
            results[kind].append(run(kind, dataset_dir, work / f"{kind}-{n}", args))
    base = min(s for s, _ in results["DefaultTrainer"])
    print(
        f"\nsemantic FPN R-18, {args.size}² slices, batch {args.batch_size}, "
        f"{args.workers} loader workers, {args.iterations} iterations "
        f"(first {args.warmup} not counted), best of {args.repeat}\n"
    )
    print("| trainer | s/iteration | iterations/s | data time share | vs DefaultTrainer |")
    print("|---|---|---|---|---|")
    for kind, runs in results.items():
        seconds, share = min(runs)
        print(
            f"| {kind} | {seconds:.3f} | {1 / seconds:.2f} | {100 * share:.1f}% "
            f"| {base / seconds:.2f}× |"
        )
    speed = base / min(results["radseg"])[0]
    share = min(results["radseg"])[1]
    record(
        "training: radseg / DefaultTrainer, s per iteration",
        "≥ 0.95× (no slower; 5 % is noise)",
        speed,
        speed >= 0.95,
    )
    record("training: data time share of a step", "< 5 %", f"{100 * share:.1f} %", share < 0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
