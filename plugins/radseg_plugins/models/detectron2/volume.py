"""The volume predictor: a semantic model over every slice of a series, fast.

What :class:`VolumePredictor` does for each batch of slices is what detectron2's
``DefaultPredictor`` + ``SemanticSegmentor.inference`` do for one, without their per-slice
overhead:

1. preprocessing, as in training: the cfg's channel order (RGB/BGR), the test-time resize of
   the shorter edge (``INPUT.MIN_SIZE_TEST``, detectron2's own ``ResizeShortestEdge``, so the
   same PIL bilinear resize), the model's pixel mean/std, zero padding to the backbone's size
   divisibility (after normalisation, like ``ImageList.from_tensors``). This runs on a worker
   thread for batch *n + 1* while batch *n* is computed;
2. the backbone and the semantic head in one graph, run by onnxruntime (``engine="onnx"``, the
   model exported once per weights file and cached next to them) or by torch under
   ``torch.inference_mode`` (``engine="torch"``, also the GPU path, with autocast under AMP);
3. postprocessing like ``sem_seg_postprocess``: crop the padding, resize the logits bilinearly
   back to the slice's own size; then the arg-max mapped to label ids. With ``flip_tta`` the
   softmax of the slice and of its left–right mirror (mirrored back) are averaged. With
   ``uncertainty`` each voxel also gets how unsure the model is (:func:`voxel_uncertainty`):
   the entropy of its softmax over the classes, divided by ``log(k)`` so it lies in [0, 1];
   with flip TTA the larger of that and the disagreement between the two passes (half the L1
   distance between their softmaxes, also in [0, 1]).

Only semantic models (semantic FPN, DeepLabV3+) run here; Mask R-CNN predicts through
:class:`~.inference.LabelPredictor`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radseg.contracts import PredictRequest, ProgressFn, no_progress
from radseg.errors import InputError
from radseg.storage import atomic_path

from .data import ClassIndex
from .inference import _as_rgb_slices, input_preprocessing

logger = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "torch")
#: onnx opset of the exported graph
ONNX_OPSET = 17


@dataclass
class VolumePrediction:
    """``labels``: uint8 label ids ``(z, y, x)``; ``probabilities``: float16 ``(z, k, y, x)``
    softmax per head index (0 background, then the classes sorted by id), when asked for;
    ``uncertainty``: float16 ``(z, y, x)`` in [0, 1] (:func:`voxel_uncertainty`), when asked for."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    engine: str
    seconds: float
    uncertainty: np.ndarray | None = None
    flip_tta: bool = False

    @property
    def uncertainty_method(self) -> str:
        return UNCERTAINTY_METHOD_TTA if self.flip_tta else UNCERTAINTY_METHOD


UNCERTAINTY_METHOD = "softmax entropy"
UNCERTAINTY_METHOD_TTA = "softmax entropy and flip TTA disagreement (the larger)"


def voxel_uncertainty(scores: Any, passes: tuple[Any, Any] | None = None) -> Any:
    """Per-voxel uncertainty in [0, 1] from softmax ``scores`` ``(n, k, y, x)`` (torch).

    The entropy ``-Σ p log p`` over the ``k`` classes divided by ``log k`` (0: one class has all
    the probability; 1: every class equally likely). With ``passes`` (the softmaxes of the two
    flip-TTA passes, whose mean is ``scores``) the larger of that and their disagreement,
    ``½ Σ |p₁ − p₂|`` (the total variation distance: 0 when the passes agree, 1 when they put
    their probability on different classes).
    """
    import math

    import torch

    k = scores.shape[1]
    if k < 2:
        return scores.new_zeros((scores.shape[0], *scores.shape[2:]))
    p = scores.clamp_min(1e-12)
    entropy = -(p * p.log()).sum(1) / math.log(k)
    if passes is not None:
        disagreement = (passes[0] - passes[1]).abs().sum(1) / 2
        entropy = torch.maximum(entropy, disagreement)
    return entropy.clamp_(0.0, 1.0)


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Core:
    """Backbone + semantic head as one ``torch.nn.Module``: normalised images → logits."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Core(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = model.backbone
                self.head = model.sem_seg_head

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                # In eval mode both heads return (logits at the padded input size, {}).
                return self.head(self.backbone(x), None)[0]

        return Core().eval()


class VolumePredictor:
    """A semantic detectron2 model over whole volumes (see the module docstring)."""

    def __init__(
        self,
        cfg: Any,
        model: Any,
        index: ClassIndex,
        *,
        engine: str = "auto",
        flip_tta: bool = False,
        cache_dir: Path | None = None,
        cache_key: str = "",
        threads: int | None = None,
    ) -> None:
        import torch

        if cfg.MODEL.META_ARCHITECTURE != "SemanticSegmentor":
            raise InputError(
                f"the volume predictor runs semantic models; {cfg.MODEL.META_ARCHITECTURE} "
                "predicts through LabelPredictor"
            )
        if engine not in ENGINES:
            raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        input_format, self.resize = input_preprocessing(cfg)
        self.cfg = cfg
        self.index = index
        self.lut = index.semantic_to_label()
        self.flip_tta = flip_tta
        self.bgr = input_format == "BGR"
        self.mean = np.asarray(cfg.MODEL.PIXEL_MEAN, np.float32).reshape(1, -1, 1, 1)
        self.inv_std = 1.0 / np.asarray(cfg.MODEL.PIXEL_STD, np.float32).reshape(1, -1, 1, 1)
        self.divisibility = max(1, int(model.backbone.size_divisibility))
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.amp = bool(cfg.SOLVER.AMP.ENABLED) and self.device.type == "cuda"
        self.threads = threads or available_cores()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        model.eval()
        self.core = _Core.build(model).to(self.device)
        chosen = engine
        if engine == "auto":
            chosen = "onnx" if self.device.type == "cpu" and _has_onnxruntime() else "torch"
        if chosen == "onnx" and self.device.type != "cpu":
            raise InputError("engine 'onnx' runs on the CPU; use engine 'torch' on a GPU")
        self._session: Any = None
        if chosen == "onnx":
            try:
                self._session = self._onnx_session(cache_dir, cache_key)
            except Exception as exc:
                if engine == "onnx":
                    raise
                # "auto": a model onnx cannot express still predicts, with torch
                logger.warning("onnx export or session failed (%s); predicting with torch", exc)
                chosen = "torch"
        self.engine = chosen

    @classmethod
    def load(
        cls,
        request: PredictRequest,
        device: str,
        *,
        engine: str = "auto",
        flip_tta: bool = False,
    ) -> VolumePredictor:
        """The model ``request`` names on ``device``: its ``config`` (what training returned)
        with its ``weights``."""
        from .inference import load_model

        if engine not in ENGINES:  # before the model is built
            raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")

        model_dir, weights = Path(request.model_dir), Path(request.weights)
        cfg, model, index = load_model(request.config, model_dir, weights, request.classes, device)
        return cls(
            cfg,
            model,
            index,
            engine=engine,
            flip_tta=flip_tta,
            cache_dir=model_dir,
            cache_key=_file_key(weights) + hashlib.sha256(cfg.dump().encode()).hexdigest(),
        )

    # -- the pipeline ---------------------------------------------------------------------

    def __call__(
        self,
        images: np.ndarray,
        *,
        batch_size: int = 8,
        probabilities: bool = False,
        uncertainty: bool = False,
        progress: ProgressFn = no_progress,
    ) -> VolumePrediction:
        """Labels (and optionally probabilities and the uncertainty) for uint8 ``images``
        ``(z, y, x, c)``."""
        started = time.perf_counter()
        images = _as_rgb_slices(images)
        count, height, width = images.shape[:3]
        labels = np.zeros((count, height, width), dtype=np.uint8)
        probs = (
            np.zeros((count, len(self.lut), height, width), dtype=np.float16)
            if probabilities
            else None
        )
        doubt = np.zeros((count, height, width), dtype=np.float16) if uncertainty else None
        batch_size = max(1, int(batch_size))
        starts = range(0, count, batch_size)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="radseg-prep") as pool:
            pending: Future[tuple[np.ndarray, tuple[int, int]]] | None = None
            for n, start in enumerate(starts):
                if pending is None:
                    pending = pool.submit(self._prepare, images[start : start + batch_size])
                batch, (h, w) = pending.result()
                following = start + batch_size
                pending = (
                    pool.submit(self._prepare, images[following : following + batch_size])
                    if n + 1 < len(starts)
                    else None
                )
                out = self._predict(batch, (h, w), (height, width), probabilities, uncertainty)
                stop = start + len(batch) // (2 if self.flip_tta else 1)
                labels[start:stop] = out[0]
                if probs is not None:
                    probs[start:stop] = out[1]
                if doubt is not None:
                    doubt[start:stop] = out[2]
                progress(stop / count, f"predicted {stop}/{count} slices")
        seconds = time.perf_counter() - started
        logger.info(
            "predicted %d slices in %.1f s (%.1f slices/s, engine %s%s)",
            count,
            seconds,
            count / seconds if seconds else float("inf"),
            self.engine,
            ", flip TTA" if self.flip_tta else "",
        )
        return VolumePrediction(labels, probs, self.engine, seconds, doubt, self.flip_tta)

    def _prepare(self, batch: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 ``(n, y, x, 3)`` → normalised, padded float32 ``(n[·2], 3, Y, X)``."""
        if self.bgr:
            batch = batch[..., ::-1]
        if self.resize is not None:
            batch = np.stack([self.resize.get_transform(s).apply_image(s) for s in batch])
        h, w = batch.shape[1:3]
        pad_h = -h % self.divisibility
        pad_w = -w % self.divisibility
        x = np.zeros((len(batch), 3, h + pad_h, w + pad_w), dtype=np.float32)
        # One vectorised pass per batch: subtract the mean, multiply by 1/std.
        np.subtract(batch.transpose(0, 3, 1, 2), self.mean, out=x[:, :, :h, :w], casting="unsafe")
        x[:, :, :h, :w] *= self.inv_std
        if self.flip_tta:
            mirrored = np.zeros_like(x)
            mirrored[:, :, :h, :w] = x[:, :, :h, :w][..., ::-1]
            x = np.concatenate([x, mirrored])
        return x, (h, w)

    def _predict(
        self,
        x: np.ndarray,
        crop: tuple[int, int],
        size: tuple[int, int],
        probabilities: bool,
        uncertainty: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        import torch
        import torch.nn.functional as F

        logits = self._run(x)
        h, w = crop
        with torch.inference_mode():
            logits = logits[:, :, :h, :w]
            if (h, w) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            passes = None
            if self.flip_tta:
                n = logits.shape[0] // 2
                passes = (logits[:n].softmax(1), logits[n:].flip(-1).softmax(1))
                scores = (passes[0] + passes[1]) / 2
            elif probabilities or uncertainty:
                scores = logits.softmax(1)
            else:
                scores = logits  # the arg-max of the logits is the arg-max of the softmax
            if scores.device.type == "cpu":
                # numpy's arg-max along the class axis is 5-6x faster than torch's on the CPU
                # (47 -> 9 ms per 512² slice); both return the first of equal maxima
                indices = scores.numpy().argmax(1).astype(np.uint8)
            else:
                indices = scores.argmax(1).to(torch.uint8).cpu().numpy()
            probs = scores.to(torch.float16).cpu().numpy() if probabilities else None
            doubt = (
                voxel_uncertainty(scores.float(), passes).to(torch.float16).cpu().numpy()
                if uncertainty
                else None
            )
        return self.lut[indices], probs, doubt

    def _run(self, x: np.ndarray) -> Any:
        import torch

        if self._session is not None:
            (out,) = self._session.run(None, {"images": x})
            return torch.from_numpy(out)
        with torch.inference_mode():
            tensor = torch.from_numpy(x).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                return self.core(tensor).float()

    # -- the onnx engine --------------------------------------------------------------------

    def _onnx_session(self, cache_dir: Path | None, cache_key: str) -> Any:
        import onnxruntime as ort

        path = self._export(cache_dir, cache_key)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads spin by default; that steals the cores from the
        # preprocessing thread and from anything else on the worker.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, cache_dir: Path | None, cache_key: str) -> Path:
        """The model as ONNX, exported once per (weights, cfg, torch) and cached."""
        import tempfile

        import torch

        key = hashlib.sha256(f"{cache_key}|{torch.__version__}|{ONNX_OPSET}".encode()).hexdigest()
        directory = cache_dir if cache_dir is not None and os.access(cache_dir, os.W_OK) else None
        if directory is None:
            directory = Path(tempfile.gettempdir()) / "radseg-onnx"
            directory.mkdir(exist_ok=True)
        path = directory / f"model-{key[:16]}.onnx"
        if path.is_file() and cache_key:
            return path
        d = self.divisibility
        example = torch.zeros(1, 3, 2 * d, 2 * d)
        with atomic_path(path) as tmp, torch.no_grad():
            torch.onnx.export(
                self.core,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={
                    "images": {0: "n", 2: "h", 3: "w"},
                    "logits": {0: "n", 2: "h", 3: "w"},
                },
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        logger.info("exported the model to %s for onnxruntime", path)
        return path


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _file_key(path: Path) -> str:
    """The content hash of ``path`` (weights files are tens of MB: hashing takes ~0.1 s)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
