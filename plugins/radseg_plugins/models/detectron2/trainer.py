"""radseg's detectron2 trainer: ``DefaultTrainer`` with what a job on a worker needs.

Imports detectron2 at module level: import it only after
:func:`radseg_plugins.models.detectron2.compat.apply` (``training.run_training`` does).

Differences from ``DefaultTrainer``:

* the data loader maps label ids to the head's indices (:class:`~.data.LabelMapper`) and uses
  radseg's augmentations (:mod:`.augment`);
* validation every N iterations with the medical metrics, the best checkpoint kept
  (``model_best.pth``) and early stopping (:class:`~.validation.ValidationHook`);
  DeepLabV3+ gets its poly LR schedule (:class:`ResumablePolyLR`, which also resumes into a
  longer run);
* writers: the console printer and ``metrics.json``, no TensorBoard (radseg keeps its own
  metrics); a hook reports ``progress(i / N, "iter i/N loss=…")``;
* checkpoints are written to a temporary name and renamed (a killed job never leaves half a
  ``model_*.pth`` or ``last_checkpoint``), and only the last two periodic ones are kept;
* checkpoints hold the optimizer (and AMP grad-scaler) state: v0.6's ``DefaultTrainer`` leaves
  its inner trainer's state out, so a resumed run restarted its optimizer. A checkpoint without
  it (written by plain v0.6) still resumes — iteration count and LR schedule continue, the
  optimizer's momentum starts afresh, and a warning says so.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, hooks
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.utils.events import CommonMetricPrinter, EventStorage, JSONWriter

from radseg.contracts import ProgressFn, no_progress
from radseg.storage import atomic_path, atomic_write_text

from .data import LabelMapper
from .validation import ValidationHook

logger = logging.getLogger(__name__)

#: periodic checkpoints kept besides ``model_final.pth``
KEEP_CHECKPOINTS = 2


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files appear complete or not at all."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        target = Path(self.save_dir) / basename
        self.logger.info("Saving checkpoint to %s", target)
        with atomic_path(target) as tmp:
            torch.save(data, tmp)
        self.tag_last_checkpoint(basename)

    def save_weights(self, name: str, **extra: Any) -> Path:
        """The model's weights alone (no optimizer), not tagged as the checkpoint to resume."""
        target = Path(self.save_dir) / f"{name}.pth"
        with atomic_path(target) as tmp:
            torch.save({"model": self.model.state_dict(), **extra}, tmp)
        return target

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(Path(self.save_dir) / "last_checkpoint", last_filename_basename)


class ProgressHook(hooks.HookBase):
    """Tells ``progress`` the iteration and loss, at most every ``interval`` s and at the end."""

    def __init__(self, progress: ProgressFn, interval: float = 0.5) -> None:
        self._progress = progress
        self._interval = interval
        self._last = 0.0

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        total = self.trainer.max_iter
        now = time.monotonic()
        if done < total and now - self._last < self._interval:
            return
        self._last = now
        try:
            loss = self.trainer.storage.history("total_loss").latest()
            message = f"iter {done}/{total} loss={loss:.4f}"
        except KeyError:
            message = f"iter {done}/{total}"
        self._progress(min(1.0, done / total), message)


class ResumablePolyLR(WarmupPolyLR):
    """DeepLab's poly schedule, resumable into a run with a different length.

    torch's ``state_dict`` of a scheduler is its whole ``__dict__``, so resuming restored the
    old run's ``max_iters`` and warm-up too: a run resumed to train longer then raised
    ``math domain error`` (a negative number to the power 0.9) past the old end. Only the
    position (``last_epoch``) and the base learning rates are state; the rest is config.
    """

    STATE_KEYS = ("base_lrs", "last_epoch", "_step_count")

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k in self.STATE_KEYS}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k in self.STATE_KEYS})


class RadsegTrainer(DefaultTrainer):
    """``DefaultTrainer`` for a radseg dataset version (see the module docstring)."""

    def __init__(
        self,
        cfg: Any,
        *,
        label_lut: np.ndarray | None,
        augmentations: list[Any] | None = None,
        progress: ProgressFn = no_progress,
    ) -> None:
        # DefaultTrainer.__init__ calls the build_* methods, which read these.
        self._label_lut = label_lut
        self._augmentations = augmentations
        self._progress = progress
        self.validation: ValidationHook | None = None
        super().__init__(cfg)

    def build_train_loader(self, cfg: Any) -> Any:
        from detectron2.data import DatasetMapper, build_detection_train_loader

        mapper = DatasetMapper(cfg, is_train=True)
        if self._augmentations is not None:
            # radseg's own list (see .augment): no photometric changes, flips only where
            # left and right cannot be confused; boxes follow rotated masks.
            mapper.augmentations = T.AugmentationList(self._augmentations)
            mapper.recompute_boxes = mapper.use_instance_mask
        if self._label_lut is not None:
            return build_detection_train_loader(cfg, mapper=LabelMapper(mapper, self._label_lut))
        return build_detection_train_loader(cfg, mapper=mapper)

    def add_validation(self, hook: ValidationHook) -> None:
        """Validate during training (after the checkpointer, so a period shares its state)."""
        self.validation = hook
        self.register_hooks([hook])

    def train(self) -> None:
        """``TrainerBase.train`` that can stop early and validates after the last step."""
        start, max_iter = self.start_iter, self.max_iter
        logger.info("Starting training from iteration %d", start)
        self.iter = start
        with EventStorage(start) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.validation is not None and self.validation.stop_reason:
                        logger.info(self.validation.stop_reason)
                        break
                self.iter += 1
                if self.validation is not None and self.validation.stop_reason is None:
                    self.validation.validate(self.iter)
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    @property
    def stopped_early(self) -> bool:
        return self.validation is not None and self.validation.stop_reason is not None

    def build_lr_scheduler(self, cfg: Any, optimizer: Any) -> Any:
        if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":  # DeepLab's, as its build_solver
            return ResumablePolyLR(
                optimizer,
                cfg.SOLVER.MAX_ITER,
                warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
                warmup_iters=cfg.SOLVER.WARMUP_ITERS,
                warmup_method=cfg.SOLVER.WARMUP_METHOD,
                power=cfg.SOLVER.POLY_LR_POWER,
                constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
            )
        return DefaultTrainer.build_lr_scheduler(cfg, optimizer)

    def build_writers(self) -> list[Any]:
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
        ]

    def build_hooks(self) -> list[Any]:
        # Runs inside DefaultTrainer.__init__, right after it made its checkpointer.
        self.checkpointer = AtomicCheckpointer(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        built = super().build_hooks()
        for hook in built:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.max_to_keep = KEEP_CHECKPOINTS
        built.append(ProgressHook(self._progress))
        return built

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        inner = state_dict.get("_trainer")
        if inner is None:
            logger.warning(
                "the checkpoint has no optimizer state (written by detectron2 0.6's "
                "DefaultTrainer); iterations and LR schedule continue, the optimizer restarts"
            )
            return
        # What SimpleTrainer/AMPTrainer.load_state_dict do, tolerating a run that switched AMP
        # on or off (and a disabled CPU grad scaler's empty state).
        self._trainer.optimizer.load_state_dict(inner["optimizer"])
        scaler = getattr(self._trainer, "grad_scaler", None)
        if scaler is not None and inner.get("grad_scaler"):
            scaler.load_state_dict(inner["grad_scaler"])
