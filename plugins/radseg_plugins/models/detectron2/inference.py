"""From slices to label maps with a trained detectron2 model, and how good the maps are.

:class:`LabelPredictor` runs the model itself (not ``DefaultPredictor``) on batches of slices,
with the preprocessing the model was trained with: the cfg's input format (RGB or BGR channel
order), its test-time resize (``INPUT.MIN_SIZE_TEST``; 0 keeps the size) and the pixel
mean/std the model applies. Every output comes back at the slice's own size.

Label maps:

* semantic models (semantic FPN, DeepLabV3+): the arg-max of the per-pixel class scores;
* Mask R-CNN: instances with a score of at least ``score_threshold`` are painted into the map in
  ascending score order, so where instances overlap **the higher score wins**; pixels no
  instance covers are background (0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from radseg.contracts import ClassInfo, PredictRequest, ProgressFn, no_progress
from radseg.errors import InputError

from .data import IGNORE_LABEL, ClassIndex


def input_preprocessing(cfg: Any) -> tuple[str, Any]:
    """The cfg's input format (``"RGB"`` or ``"BGR"``) and its test-time resize (the shortest
    edge to ``INPUT.MIN_SIZE_TEST``; ``None`` where 0 keeps the size).

    :raises InputError: another input format.
    """
    import detectron2.data.transforms as T

    input_format = str(cfg.INPUT.FORMAT)
    if input_format not in ("RGB", "BGR"):
        raise InputError(f"INPUT.FORMAT {input_format!r}: only RGB and BGR are supported")
    size = int(cfg.INPUT.MIN_SIZE_TEST)
    resize = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST) if size > 0 else None
    return input_format, resize


class LabelPredictor:
    """A detectron2 model in eval mode that maps uint8 slices to uint8 label maps."""

    def __init__(
        self,
        cfg: Any,
        model: Any,
        index: ClassIndex,
        *,
        semantic: bool,
        score_threshold: float = 0.5,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.index = index
        self.semantic = semantic
        self.score_threshold = score_threshold
        self.input_format, self.resize = input_preprocessing(cfg)
        self.lut = index.semantic_to_label() if semantic else index.instance_to_label()

    @classmethod
    def load(cls, request: PredictRequest, device: str) -> LabelPredictor:
        """Build the model ``request`` names on ``device``: its ``config`` (what training
        returned) with its ``weights``."""
        config = request.config
        cfg, model, index = load_model(
            config, Path(request.model_dir), Path(request.weights), request.classes, device
        )
        semantic = cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"
        threshold = float(config.get("score_threshold", cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST))
        return cls(cfg, model, index, semantic=semantic, score_threshold=threshold)

    def __call__(
        self, images: np.ndarray, *, batch_size: int = 4, progress: ProgressFn = no_progress
    ) -> np.ndarray:
        """Label ids, uint8 ``(z, y, x)``, for uint8 ``images`` ``(z, y, x, c)``."""
        import torch

        images = _as_rgb_slices(images)
        count = images.shape[0]
        labels = np.zeros(images.shape[:3], dtype=np.uint8)
        batch_size = max(1, int(batch_size))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, count, batch_size):
                    batch = images[start : start + batch_size]
                    outputs = self.model([self._to_input(image) for image in batch])
                    for offset, output in enumerate(outputs):
                        labels[start + offset] = self._to_labels(output)
                    done = min(count, start + batch_size)
                    progress(done / count, f"predicted {done}/{count} slices")
        finally:
            self.model.train(was_training)
        return labels

    def _to_input(self, image: np.ndarray) -> dict[str, Any]:
        import torch

        height, width = image.shape[:2]
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        if self.resize is not None:
            image = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor, "height": height, "width": width}

    def _to_labels(self, output: dict[str, Any]) -> np.ndarray:
        if self.semantic:
            indices = output["sem_seg"].argmax(dim=0).cpu().numpy()
            return self.lut[indices]
        instances = output["instances"].to("cpu")
        height, width = instances.image_size
        if not instances.has("pred_masks") or len(instances) == 0:
            return np.zeros((height, width), dtype=np.uint8)
        return instances_to_labels(
            instances.pred_masks.numpy().astype(bool),
            instances.scores.numpy(),
            instances.pred_classes.numpy(),
            self.lut,
            score_threshold=self.score_threshold,
        )


def load_model(
    config: Mapping[str, Any],
    model_dir: Path,
    weights: Path,
    classes: Iterable[ClassInfo],
    device: str,
) -> tuple[Any, Any, ClassIndex]:
    """The frozen cfg, the model in eval mode with ``weights``, and its class index."""
    from . import compat

    compat.apply()
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from .config import cfg_from_saved

    if not Path(weights).is_file():
        raise InputError(f"no model weights at {weights}")
    cfg = cfg_from_saved(config, Path(model_dir))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    saved_classes = config.get("classes")
    if saved_classes:
        classes = [
            ClassInfo(
                id=int(c["id"]), name=str(c["name"]), color=tuple(c.get("color", (255, 0, 0)))
            )
            for c in saved_classes
        ]
    index = ClassIndex.of(list(classes))
    model = build_model(cfg)
    model.eval()
    DetectionCheckpointer(model).load(str(weights))
    return cfg, model, index


def instances_to_labels(
    masks: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    lut: np.ndarray,
    *,
    score_threshold: float = 0.0,
) -> np.ndarray:
    """Merge instance masks ``(n, y, x)`` into one uint8 label map; higher scores win overlaps.

    ``classes`` are instance class indices, ``lut`` maps them to label ids; instances scoring
    below ``score_threshold`` are left out.
    """
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i in np.argsort(scores, kind="stable"):  # ascending: the best is painted last
        if scores[i] >= score_threshold:
            labels[masks[i]] = lut[int(classes[i])]
    return labels


def _as_rgb_slices(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:  # (z, y, x): one channel
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"images must be (z, y, x, c), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8 (the channel recipe's output), got {images.dtype}")
    channels = images.shape[-1]
    if channels == 1:
        return np.repeat(images, 3, axis=-1)
    if channels != 3:
        raise InputError(f"the detectron2 models take 1 or 3 channels, got {channels}")
    return images


def segmentation_metrics(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], index: ClassIndex
) -> dict[str, Any]:
    """Dice and IoU per class, and their means over the classes, from ``(predicted, truth)``.

    Both are label-id maps; truth pixels equal to 255 are ignored. A class that is neither in
    the truth nor predicted has no score (``None``) and does not count in the means.
    """
    ids = index.ids
    tp = np.zeros(len(ids), dtype=np.int64)
    fp = np.zeros(len(ids), dtype=np.int64)
    fn = np.zeros(len(ids), dtype=np.int64)
    correct = total = 0
    images = 0
    for predicted, truth in pairs:
        images += 1
        valid = truth != IGNORE_LABEL
        correct += int(np.count_nonzero((predicted == truth) & valid))
        total += int(np.count_nonzero(valid))
        for k, class_id in enumerate(ids):
            pred_k = (predicted == class_id) & valid
            true_k = truth == class_id
            tp[k] += int(np.count_nonzero(pred_k & true_k))
            fp[k] += int(np.count_nonzero(pred_k & ~true_k))
            fn[k] += int(np.count_nonzero(true_k & ~pred_k))
    per_class: dict[str, dict[str, float | None]] = {}
    dices, ious = [], []
    for k, info in enumerate(index.classes):
        denominator = int(tp[k] + fp[k] + fn[k])
        if denominator == 0:
            per_class[info.name] = {"dice": None, "iou": None}
            continue
        dice = 2 * tp[k] / (2 * tp[k] + fp[k] + fn[k])
        iou = tp[k] / denominator
        per_class[info.name] = {"dice": float(dice), "iou": float(iou)}
        dices.append(dice)
        ious.append(iou)
    return {
        "images": images,
        "mean_dice": float(np.mean(dices)) if dices else None,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "pixel_accuracy": correct / total if total else None,
        "per_class": per_class,
    }
