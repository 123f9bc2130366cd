"""One training run, in this process or in several through detectron2's ``launch``.

Everything a run needs travels in a picklable :class:`TrainSpec`, and :func:`run_training` does
all of its set-up itself — the compat, the catalog registrations, the cfg — so that a process
started by ``launch`` (spawned, not forked) trains exactly like the parent would. This module
imports no torch or detectron2 at import time: a spawned process unpickles :func:`launch_entry`
before anything else runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radseg.contracts import ClassInfo, ProgressFn, TrainResult, no_progress
from radseg.errors import InputError
from radseg.storage import atomic_write_text

from . import compat
from .augment import build_augmentations
from .data import ClassIndex, load_split, pixel_statistics, registered
from .options import TrainOptions

logger = logging.getLogger(__name__)

CFG_FILE = "config.yaml"
WEIGHTS_FILE = "model_final.pth"
#: written by the main process of a multi-process run, for the parent to read
RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class TrainSpec:
    dataset_dir: Path
    output_dir: Path
    classes: tuple[ClassInfo, ...]
    options: TrainOptions
    resume: bool
    device: str


def run_training(spec: TrainSpec, progress: ProgressFn = no_progress) -> TrainResult:
    """Train (or resume) ``spec``, write ``model_final.pth``, evaluate on val, return the result.

    In a multi-process run every process calls this; only the main one writes files and
    evaluates, and the others return a result without metrics.
    """
    compat.apply()
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from .config import build_train_cfg

    options = spec.options
    index = ClassIndex.of(spec.classes)
    dataset_dir = Path(spec.dataset_dir)
    output_dir = Path(spec.output_dir)
    splits = _load_splits(dataset_dir, index, instances=not options.semantic)
    output_dir.mkdir(parents=True, exist_ok=True)
    pixel_stats = pixel_statistics(splits["train"]) if options.pixel_stats == "train" else None

    with registered(
        splits, index, dataset_dir=dataset_dir, tag=f"radseg_{dataset_dir.name}"
    ) as names:
        cfg = build_train_cfg(
            options,
            num_classes=len(index.classes),
            train_dataset=names["train"],
            output_dir=output_dir,
            device=spec.device,
            pixel_stats=_in_input_order(pixel_stats, options),
        )
        if comm.is_main_process():
            atomic_write_text(output_dir / CFG_FILE, cfg.dump())
        seed_all_rng(None if options.seed < 0 else options.seed + comm.get_rank())
        run = _Run(
            cfg=cfg,
            options=options,
            index=index,
            splits=splits,
            output_dir=output_dir,
            report=progress if comm.is_main_process() else no_progress,
        )
        trainer, hook = _trainer(run)
        trainer.resume_or_load(resume=spec.resume)
        start, done = _train(run, trainer)
        comm.synchronize()

        metrics: dict[str, Any] = {"start_iteration": start, "iterations": done}
        if pixel_stats is not None:
            metrics["pixel_mean"], metrics["pixel_std"] = pixel_stats
        weights = output_dir / WEIGHTS_FILE
        if comm.is_main_process() and splits["val"]:
            weights = _validate(run, trainer, hook, names.get("val"), metrics) or weights

    return TrainResult(
        weights=weights,
        config=predict_config(cfg, options, index),
        metrics=_json_safe(metrics),
        iterations=done,
    )


@dataclass(frozen=True)
class _Run:
    """What the steps of one training run share (in one process of it)."""

    cfg: Any
    options: TrainOptions
    index: ClassIndex
    splits: dict[str, list[dict[str, Any]]]
    output_dir: Path
    #: the caller's progress in the main process; nothing in the others
    report: ProgressFn

    def evaluate(self, model: Any, progress: ProgressFn | None = None) -> dict[str, Any]:
        """The metrics of ``model`` on the val split."""
        return evaluate(self.cfg, model, self.index, self.splits["val"], self.options, progress)


def _load_splits(
    dataset_dir: Path, index: ClassIndex, *, instances: bool
) -> dict[str, list[dict[str, Any]]]:
    """The train and val records of the dataset version; refused when there is nothing to learn.

    :raises InputError: no training images, or (Mask R-CNN) no instance of the classes.
    """
    splits = {
        "train": load_split(dataset_dir, "train", index, instances=instances),
        "val": load_split(dataset_dir, "val", index, instances=instances),
    }
    if not splits["train"]:
        raise InputError(
            f"the dataset version at {dataset_dir} has no training images "
            "(annotations/instances_train.json is missing or empty)"
        )
    if instances:
        if not any(r["annotations"] for r in splits["train"]):
            raise InputError(
                f"the training split of {dataset_dir} has no instance annotations of the "
                f"classes {', '.join(index.names)}; Mask R-CNN has nothing to learn from"
            )
        for record in splits["train"]:  # DatasetMapper would read the unused label PNGs
            record.pop("sem_seg_file_name", None)
    return splits


def _trainer(run: _Run) -> tuple[Any, Any]:
    """The trainer, and its validation hook when there is a val split (else ``None``)."""
    from .trainer import RadsegTrainer
    from .validation import BEST_FILE, ValidationHook

    options, index = run.options, run.index
    first = run.splits["train"][0]
    trainer = RadsegTrainer(
        run.cfg,
        label_lut=index.label_to_semantic() if options.semantic else None,
        augmentations=build_augmentations(
            run.cfg, options, index.names, min(first["height"], first["width"])
        ),
        progress=run.report,
    )
    if not run.splits["val"]:
        return trainer, None
    period = options.validation_period()
    hook = ValidationHook(
        period=period,
        evaluate=run.evaluate,
        output_dir=run.output_dir,
        patience=options.patience if period else None,
        save_best=lambda iteration, score: trainer.checkpointer.save_weights(
            BEST_FILE.removesuffix(".pth"), iteration=iteration, mean_dice=score
        ),
        progress=run.report,
    )
    trainer.add_validation(hook)
    return trainer, hook


def _train(run: _Run, trainer: Any) -> tuple[int, int]:
    """Train from the trainer's start (a resumed checkpoint's) to the end or an early stop;
    ``(start, done)`` iterations. ``model_final`` is written whenever training ends early."""
    from detectron2.utils import comm

    start = trainer.start_iter
    final = WEIGHTS_FILE.removesuffix(".pth")
    if start >= trainer.max_iter:
        logger.info(
            "the checkpoint in %s is at iteration %d, at or past the %d asked for; "
            "nothing to train",
            run.output_dir,
            start,
            trainer.max_iter,
        )
        if comm.is_main_process():
            trainer.checkpointer.save(final, iteration=start - 1)
        return start, start
    if start:
        run.report(start / trainer.max_iter, f"resuming at iter {start}/{trainer.max_iter}")
    trainer.train()
    done = int(trainer.iter)
    if trainer.stopped_early and comm.is_main_process():
        # PeriodicCheckpointer writes model_final only at the last iteration.
        trainer.checkpointer.save(final, iteration=done - 1)
    return start, done


def _validate(
    run: _Run, trainer: Any, hook: Any, val_dataset: str | None, metrics: dict[str, Any]
) -> Path | None:
    """Add the val metrics (the hook's last validation, else a fresh one), COCO metrics for an
    instance model, the validation history and the best checkpoint to ``metrics``; returns the
    best weights when they are to be kept instead of ``model_final`` (else ``None``)."""
    from .validation import BEST_FILE, load_history

    model = trainer.model
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if hook is not None and hook.last is not None and hook.history:
        metrics["val"] = hook.last
    else:
        metrics["val"] = run.evaluate(model, run.report)
    if not run.options.semantic and val_dataset:
        metrics["val"]["coco"] = coco_metrics(run.cfg, model, val_dataset)
    history = load_history(run.output_dir)
    if history:
        metrics["history"] = history
    weights = None
    if hook is not None and hook.best is not None and run.options.validation_period():
        metrics["best"] = {k: hook.best[k] for k in ("iteration", "mean_dice")}
        if (run.output_dir / BEST_FILE).is_file():
            weights = run.output_dir / BEST_FILE
    if hook is not None and hook.stop_reason:
        metrics["stopped_early"] = hook.stop_reason
    return weights


def _in_input_order(
    stats: tuple[list[float], list[float]] | None, options: TrainOptions
) -> tuple[list[float], list[float]] | None:
    """Statistics measured in RGB order, in the order the template's INPUT.FORMAT feeds."""
    if stats is None:
        return None
    fmt = str(options.overrides.get("INPUT.FORMAT", "RGB"))
    return (stats[0][::-1], stats[1][::-1]) if fmt == "BGR" else stats


def predict_config(cfg: Any, options: TrainOptions, index: ClassIndex) -> dict[str, Any]:
    """Everything :meth:`Detectron2Backend.predict` needs, JSON-able."""
    import detectron2

    from .augment import flips_allowed

    return {
        "backend": "detectron2",
        "architecture": options.architecture,
        "cfg_file": CFG_FILE,
        "cfg_yaml": cfg.dump(),
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": list(cfg.MODEL.PIXEL_STD),
        "image_size": options.image_size,
        "num_classes": len(index.classes),
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in index.classes],
        "score_threshold": options.score_threshold,
        "augmentations": {
            "flip": flips_allowed(options, index.names, cfg.INPUT.RANDOM_FLIP),
            "rotation_degrees": options.rotation_degrees,
            "scale_range": options.scale_range,
        },
        "detectron2_version": detectron2.__version__,
    }


def evaluate(
    cfg: Any,
    model: Any,
    index: ClassIndex,
    records: list[dict[str, Any]],
    options: TrainOptions,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`.validation.evaluate_records` for ``model`` on ``records``."""
    from .inference import LabelPredictor
    from .validation import evaluate_records

    predictor = LabelPredictor(
        cfg, model, index, semantic=options.semantic, score_threshold=options.score_threshold
    )
    return evaluate_records(
        predictor,
        records,
        index,
        tolerance_mm=options.tolerance_mm,
        progress=progress or no_progress,
    )


def coco_metrics(cfg: Any, model: Any, dataset_name: str) -> dict[str, Any]:
    """detectron2's COCOEvaluator (pycocotools' COCOeval: the fast one is compiled)."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    evaluator = COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=False)
    loader = build_detection_test_loader(cfg, dataset_name)
    return dict(inference_on_dataset(model, loader, evaluator))


def launch_entry(spec: TrainSpec) -> None:
    """What each process started by ``launch`` runs; the main one writes the result file."""
    from detectron2.utils import comm

    def log_progress(fraction: float, message: str) -> None:
        logger.info("%3.0f%% %s", 100 * fraction, message)

    result = run_training(spec, log_progress)
    if comm.is_main_process():
        payload = {
            "weights": str(result.weights),
            "config": result.config,
            "metrics": result.metrics,
            "iterations": result.iterations,
        }
        atomic_write_text(Path(spec.output_dir) / RESULT_FILE, json.dumps(payload, indent=2))
    # every process returns once the result is written: on the other machines, run_launched
    # reads it from the shared output folder
    comm.synchronize()


def machine_rank(num_machines: int, environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """This machine's rank and the ``dist_url`` of the rendezvous, for ``num_machines``.

    One machine: rank 0 and ``"auto"`` (``launch`` picks a free local port). Several: from
    ``NODE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, the variables ``torchrun`` sets; rank 0
    listens on that address and port (open it between the machines).
    """
    if num_machines == 1:
        return 0, "auto"
    env = os.environ if environ is None else environ
    missing = [k for k in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise InputError(
            f"training on {num_machines} machines needs {', '.join(missing)} in the "
            "environment of each machine's process (its rank, 0 to "
            f"{num_machines - 1}, and rank 0's address and port)"
        )
    try:
        rank, port = int(env["NODE_RANK"]), int(env["MASTER_PORT"])
    except ValueError:
        raise InputError(
            f"NODE_RANK {env['NODE_RANK']!r} and MASTER_PORT {env['MASTER_PORT']!r} must be "
            "whole numbers"
        ) from None
    if not 0 <= rank < num_machines:
        raise InputError(
            f"NODE_RANK {rank} is not a rank of {num_machines} machines (0 to {num_machines - 1})"
        )
    if not 0 < port < 65536:
        raise InputError(f"MASTER_PORT {port} is not a TCP port")
    return rank, f"tcp://{env['MASTER_ADDR']}:{port}"


def run_launched(spec: TrainSpec, progress: ProgressFn = no_progress) -> TrainResult:
    """Train ``spec`` in ``spec.options.num_gpus`` processes through detectron2's ``launch``,
    on this machine, or as this machine's share of ``spec.options.num_machines``
    (:func:`machine_rank`; the output folder must then be shared storage, where rank 0 writes
    the checkpoints and the result every machine returns).

    Progress inside the processes goes to the log; ``progress`` hears the start and the end.
    """
    machines = spec.options.num_machines
    rank, dist_url = machine_rank(machines)
    compat.apply()
    from detectron2.engine import launch

    result_file = Path(spec.output_dir) / RESULT_FILE
    if rank == 0:
        result_file.unlink(missing_ok=True)
    processes = spec.options.num_gpus
    where = f" on machine {rank} of {machines}" if machines > 1 else ""
    progress(0.0, f"training in {processes} processes{where}")
    launch(
        launch_entry,
        processes,
        num_machines=machines,
        machine_rank=rank,
        dist_url=dist_url,
        args=(spec,),
    )
    if not result_file.is_file():
        raise RuntimeError(f"the training processes ended without writing {result_file}")
    payload = json.loads(result_file.read_text(encoding="utf-8"))
    progress(1.0, f"trained {payload['iterations']} iterations in {processes} processes{where}")
    return TrainResult(
        weights=Path(payload["weights"]),
        config=payload["config"],
        metrics=payload["metrics"],
        iterations=int(payload["iterations"]),
    )


def _json_safe(value: Any) -> Any:
    """Metrics as plain JSON: numpy scalars → numbers, NaN/inf → ``None``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
