"""Validation during training: the metrics of :mod:`radseg.metrics` on the val split.

:func:`evaluate_records` predicts every labelled val slice, puts the slices of each series back
into a volume at their ``slice_index`` (slices the dataset version left out are ignored voxels)
and measures each class per series in 3D with the series' spacing: Dice, IoU, HD95, ASSD,
surface Dice, volume difference. It also keeps the pooled-pixel Dice/IoU per class that earlier
versions reported (``per_class``, ``mean_dice``: Dice of all val pixels together).

:class:`ValidationHook` runs it every ``period`` iterations and after the last one, appends to
``history.json`` (iteration, loss, learning rate, mean Dice, per-class Dice, mean HD95), saves
``model_best.pth`` whenever the mean Dice improves, and asks the trainer to stop when it has not
improved for ``patience`` validations. Its state survives a resume: it is read back from
``history.json``. Imports detectron2: import this module after :func:`.compat.apply`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from detectron2.engine import hooks

from radseg import metrics as radseg_metrics
from radseg.contracts import ProgressFn, no_progress
from radseg.storage import atomic_write_text

from .data import IGNORE_LABEL, ClassIndex, read_image, read_labels

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
BEST_FILE = "model_best.pth"


def evaluate_records(
    predictor: Callable[..., np.ndarray],
    records: list[dict[str, Any]],
    index: ClassIndex,
    *,
    tolerance_mm: float = radseg_metrics.DEFAULT_TOLERANCE_MM,
    batch_size: int = 8,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Predict ``records`` (detectron2 dicts with ``sem_seg_file_name``) and measure them."""
    from .inference import segmentation_metrics

    labelled = [r for r in records if "sem_seg_file_name" in r]
    predicted: list[np.ndarray] = []
    for start in range(0, len(labelled), batch_size):
        batch = labelled[start : start + batch_size]
        images = np.stack([read_image(r["file_name"]) for r in batch])
        predicted.extend(predictor(images, batch_size=batch_size))
        progress(1.0, f"validating {min(len(labelled), start + batch_size)}/{len(labelled)}")
    truths = [read_labels(r["sem_seg_file_name"]) for r in labelled]
    result = segmentation_metrics(zip(predicted, truths, strict=True), index)

    studies: dict[str, dict[str, radseg_metrics.BinaryMetrics]] = {}
    for key, spacing, prediction, truth in _volumes(labelled, predicted, truths):
        per_id = radseg_metrics.class_metrics(
            prediction, truth, index.ids, spacing, tolerance_mm=tolerance_mm
        )
        studies[key] = {c.name: per_id[c.id] for c in index.classes}
    summary = radseg_metrics.dataset_summary(studies)
    result["volume"] = summary
    result["tolerance_mm"] = tolerance_mm
    result["mean_dice_3d"] = summary["mean_dice"]
    return result


def _volumes(
    records: list[dict[str, Any]], predicted: list[np.ndarray], truths: list[np.ndarray]
) -> Iterator[tuple[str, tuple[float, ...], np.ndarray, np.ndarray]]:
    """``(series key, spacing (z, y, x), prediction, truth)`` per series of the records."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        key = str(record.get("series_instance_uid") or record["file_name"])
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        first = records[members[0]]
        spacing = first.get("spacing") or (1.0, 1.0, 1.0)
        zs = [int(records[i].get("slice_index", n)) for n, i in enumerate(members)]
        z0 = min(zs)
        shape = (max(zs) - z0 + 1, *truths[members[0]].shape)
        # slices the dataset version left out: ignored in the truth, background in the prediction
        truth = np.full(shape, IGNORE_LABEL, dtype=np.uint8)
        prediction = np.zeros(shape, dtype=np.uint8)
        for z, i in zip(zs, members, strict=True):
            truth[z - z0] = truths[i]
            prediction[z - z0] = predicted[i]
        yield key, radseg_metrics.spacing_zyx(spacing), prediction, truth


def load_history(output_dir: Path, before: int | None = None) -> list[dict[str, Any]]:
    """The validations in ``history.json``; with ``before``, those at earlier iterations."""
    path = Path(output_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    entries = json.loads(path.read_text(encoding="utf-8")).get("validations", [])
    return [e for e in entries if before is None or e["iteration"] <= before]


class ValidationHook(hooks.HookBase):
    """See the module docstring. ``evaluate(model)`` returns :func:`evaluate_records`' dict."""

    def __init__(
        self,
        *,
        period: int,
        evaluate: Callable[[Any], dict[str, Any]],
        output_dir: Path,
        patience: int | None,
        save_best: Callable[[int, float], object],
        progress: ProgressFn = no_progress,
    ) -> None:
        self.period = period
        self._evaluate = evaluate
        self.output_dir = Path(output_dir)
        self.patience = patience
        self._save_best = save_best
        self._progress = progress
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        self.stop_reason: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        scored = [e for e in self.history if e.get("mean_dice") is not None]
        return max(scored, key=lambda e: e["mean_dice"], default=None)

    def before_train(self) -> None:
        # A resumed run continues the history up to where its checkpoint is.
        self.history = load_history(self.output_dir, before=self.trainer.start_iter)

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            self.validate(done)

    def validate(self, iteration: int) -> None:
        """Validate the model after ``iteration`` iterations; may set :attr:`stop_reason`."""
        from detectron2.utils import comm

        stop = False
        if comm.is_main_process():
            stop = self._validate_main(iteration)
        if comm.get_world_size() > 1:
            stop = any(comm.all_gather(stop))
        if stop and self.stop_reason is None:
            self.stop_reason = (
                f"stopped early at iteration {iteration}: no better mean Dice in the last "
                f"{self.patience} validations"
            )

    def _validate_main(self, iteration: int) -> bool:
        model = self.trainer.model
        model = getattr(model, "module", model)
        previous_best = self.best
        result = self._evaluate(model)
        self.last = result
        entry = {
            "iteration": iteration,
            "loss": _latest(self.trainer.storage, "total_loss"),
            "lr": _latest(self.trainer.storage, "lr"),
            "mean_dice": result.get("mean_dice"),
            "mean_dice_3d": result.get("mean_dice_3d"),
            "mean_iou": result.get("mean_iou"),
            "hd95": (result.get("volume") or {}).get("mean", {}).get("hd95"),
            "dice": {k: v.get("dice") for k, v in result.get("per_class", {}).items()},
        }
        self.history.append(_finite(entry))
        improved = entry["mean_dice"] is not None and (
            previous_best is None or entry["mean_dice"] > previous_best["mean_dice"]
        )
        if improved:
            self._save_best(iteration, float(entry["mean_dice"]))
        self._write()
        score = entry["mean_dice"]
        self._progress(
            min(1.0, iteration / self.trainer.max_iter),
            f"validation at iter {iteration}: mean Dice "
            + (f"{score:.4f}" if score is not None else "-")
            + (" (best)" if improved else ""),
        )
        if self.patience is None:
            return False
        best = self.best
        since = [e for e in self.history if best is None or e["iteration"] > best["iteration"]]
        return len(since) >= self.patience

    def _write(self) -> None:
        best = self.best
        data = {
            "validations": self.history,
            "best": {"iteration": best["iteration"], "mean_dice": best["mean_dice"]}
            if best
            else None,
            "period": self.period,
            "patience": self.patience,
        }
        atomic_write_text(self.output_dir / HISTORY_FILE, json.dumps(data, indent=1))


def _latest(storage: Any, name: str) -> float | None:
    try:
        return float(storage.history(name).latest())
    except KeyError:
        return None


def _finite(entry: dict[str, Any]) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return clean(entry)
