"""The detectron2 model backend: semantic FPN, DeepLabV3+ and Mask R-CNN.

Importing this module is cheap: torch and detectron2 are imported inside :meth:`train` and
:meth:`predict`, after :func:`.compat.apply` has adapted detectron2 v0.6 to this environment.

``TrainRequest.config`` holds the options of :class:`.options.TrainOptions` (architecture,
iterations, batch size, learning rate, image size, ResNet depth, detectron2 cfg overrides,
checkpoint period, AMP, ...). What :meth:`train` returns in ``TrainResult.config`` is what
:meth:`predict` needs: the architecture, the full detectron2 cfg (``cfg_yaml``, also written to
``config.yaml`` in the model directory), the input format and the classes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from radseg.contracts import (
    FineTune,
    PredictOutput,
    PredictRequest,
    ProgressFn,
    TrainRequest,
    TrainResult,
    no_progress,
    no_report,
)
from radseg.errors import InputError

from . import compat
from .options import ARCHITECTURES, SEMANTIC_ARCHITECTURES, TrainOptions
from .settings import Detectron2Settings

if TYPE_CHECKING:
    from .volume import VolumePrediction


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` where a GPU is visible, else ``"cpu"``; ``"cuda"`` needs one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but torch sees no CUDA GPU here; "
            "set RADSEG_DEVICE=cpu or auto, or check CUDA_VISIBLE_DEVICES and the driver"
        )
    return device


class Detectron2Backend:
    """:class:`radseg.contracts.ModelBackend` for detectron2 models."""

    name: ClassVar[str] = "detectron2"
    architectures: ClassVar[tuple[str, ...]] = ARCHITECTURES

    def __init__(self, settings: Detectron2Settings | None = None) -> None:
        self.settings = settings or Detectron2Settings()

    def _with_defaults(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The request's options over the plugin's settings (a request's own value wins)."""
        defaults: dict[str, Any] = {}
        if self.settings.pretrained_weights is not None:
            defaults["weights"] = str(self.settings.pretrained_weights)
        if self.settings.num_workers is not None:
            defaults["num_workers"] = self.settings.num_workers
        return {**defaults, **config}

    @staticmethod
    def _fine_tuned(fine_tune: FineTune, config: Mapping[str, Any]) -> dict[str, Any]:
        """The request's options for training on from ``fine_tune``: what the weights depend on
        (architecture, backbone depth, input size, pixel mean/std) comes from the parent's
        config, and may not be changed; the rest (iterations, learning rate, ...) from the
        request."""
        import yaml

        parent = fine_tune.config
        architecture = parent.get("architecture")
        if config.get("architecture") not in (None, architecture):
            raise InputError(
                f"a fine-tune keeps its parent's architecture {architecture!r}; "
                f"{config['architecture']!r} would not load its weights"
            )
        cfg = yaml.safe_load(str(parent.get("cfg_yaml") or "")) or {}
        depth = ((cfg.get("MODEL") or {}).get("RESNETS") or {}).get("DEPTH")
        overrides = {
            **dict(config.get("overrides") or {}),
            "MODEL.PIXEL_MEAN": list(parent.get("pixel_mean") or []),
            "MODEL.PIXEL_STD": list(parent.get("pixel_std") or []),
        }
        if not overrides["MODEL.PIXEL_MEAN"]:
            del overrides["MODEL.PIXEL_MEAN"], overrides["MODEL.PIXEL_STD"]
        inherited: dict[str, Any] = {"architecture": architecture}
        if parent.get("image_size") is not None:
            inherited["image_size"] = parent["image_size"]
        if depth is not None:
            inherited["resnet_depth"] = int(depth)
        augmentations = parent.get("augmentations") or {}
        for key in ("rotation_degrees", "scale_range"):
            if key in augmentations:
                inherited[key] = augmentations[key]
        return {
            **inherited,
            **config,
            "overrides": overrides,
            "weights": str(fine_tune.weights),
            "pixel_stats": "template",  # the overrides above hold the parent's
        }

    def train(self, request: TrainRequest, progress: ProgressFn = no_progress) -> TrainResult:
        """Train on ``request.dataset_dir``'s train split, evaluate on its val split.

        Checkpoints go to ``request.output_dir``; with ``request.resume`` a re-run continues from
        the last one (its iteration count, LR schedule and optimizer state); with
        ``request.fine_tune`` it starts from that model version's weights. ``model_final.pth``
        there is the result's ``weights``. ``metrics["val"]`` holds per-class Dice and IoU when
        the val split has images (and COCO AP for Mask R-CNN).
        """
        compat.require_model_stack()
        from .training import TrainSpec, run_launched, run_training

        config = self._with_defaults(request.config)
        if request.fine_tune is not None:
            config = self._fine_tuned(request.fine_tune, config)
        options = TrainOptions.from_config(config)
        spec = TrainSpec(
            dataset_dir=Path(request.dataset_dir),
            output_dir=Path(request.output_dir),
            classes=tuple(request.classes),
            options=options,
            resume=request.resume,
            device=resolve_device(request.device),
        )
        if options.num_gpus > 1 or options.num_machines > 1:
            return run_launched(spec, progress)
        return run_training(spec, progress)

    def predict(
        self, request: PredictRequest, progress: ProgressFn = no_progress
    ) -> np.ndarray | PredictOutput:
        """uint8 label ids ``(z, y, x)`` for ``request.images`` (uint8 ``(z, y, x, c)``).

        Semantic models run through :class:`.volume.VolumePredictor` (batches of
        ``request.batch_size`` slices, onnxruntime on a CPU, optional flip TTA from the plugin
        settings); Mask R-CNN through :class:`.inference.LabelPredictor`, which says how
        instances become a label map. On a CPU the engine is bf16 where the CPU has native
        bfloat16 and its agreement with float32 meets ``reduced_precision_min_dice``, else int8
        where its agreement meets it (each measured once per weights file on
        ``request.dataset_dir``, and checked on every prediction: :mod:`.reduced`), else float32;
        what was used and measured goes to ``request.report``. Slices that ``request.body_boxes``
        says are air only are not run through a semantic model: they are background.

        With ``request.uncertainty`` the answer is a :class:`~radseg.contracts.PredictOutput`:
        semantic models add the per-voxel uncertainty of :func:`.volume.voxel_uncertainty`;
        Mask R-CNN has none to give (its instance scores say how sure it is of an object, not
        of a voxel's class, and the merged label map has no per-voxel probability), so its
        ``uncertainty`` is ``None`` and the host ranks its predictions by shape signals alone.
        """
        if not request.uncertainty:
            return self.predict_volume(request, progress).labels
        if request.config.get("architecture") not in SEMANTIC_ARCHITECTURES:
            return PredictOutput(self.predict_volume(request, progress).labels)
        result = self.predict_volume(request, progress, uncertainty=True)
        return PredictOutput(result.labels, result.uncertainty, result.uncertainty_method)

    def predict_volume(
        self,
        request: PredictRequest,
        progress: ProgressFn = no_progress,
        *,
        probabilities: bool = False,
        uncertainty: bool = False,
        flip_tta: bool | None = None,
        engine: str | None = None,
    ) -> VolumePrediction:
        """:meth:`predict` with per-class probabilities (semantic models) and the engine used."""
        compat.require_model_stack()
        compat.apply()
        from .inference import LabelPredictor
        from .volume import VolumePrediction, VolumePredictor

        device = resolve_device(request.device)
        batch_size = request.batch_size or self.settings.predict_batch_size
        architecture = request.config.get("architecture")
        report = getattr(request, "report", None) or no_report
        if architecture in SEMANTIC_ARCHITECTURES:
            predictor = VolumePredictor.load(
                request,
                device,
                engine=engine or self.settings.predict_engine,
                flip_tta=self.settings.predict_flip_tta if flip_tta is None else flip_tta,
                min_dice=self.settings.reduced_precision_min_dice,
            )
            result, facts = predictor.predict_checked(
                request.images,
                check_every=self.settings.reduced_precision_check_every,
                batch_size=batch_size,
                probabilities=probabilities,
                uncertainty=uncertainty,
                progress=progress,
                body=_shows_body(getattr(request, "body_boxes", None)),
            )
            report(facts)
            return result
        if probabilities:
            raise InputError(f"{architecture} gives no per-class probabilities, only labels")
        started = time.perf_counter()
        labels = LabelPredictor.load(request, device)(
            request.images, batch_size=batch_size, progress=progress
        )
        report({"engine": "torch"})
        return VolumePrediction(labels, None, "torch", time.perf_counter() - started)


def _shows_body(boxes: np.ndarray | None) -> np.ndarray | None:
    """Per slice, whether its box in ``boxes`` (``PredictRequest.body_boxes``) is not empty."""
    if boxes is None:
        return None
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"body_boxes must be (z, 4) (y0, y1, x0, x1), got shape {boxes.shape}")
    return np.asarray((boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2]))
