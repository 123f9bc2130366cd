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
   model exported once per weights file and cached next to them; ``engine="int8"``, that model
   quantized to int8, see :mod:`.int8`) or by torch under ``torch.inference_mode``
   (``engine="torch"``, also the GPU path, with autocast under AMP; ``engine="bf16"``, the
   module in bfloat16 on the CPU, see :mod:`.bf16`). ``engine="auto"`` on a CPU takes bf16
   where the CPU computes in bfloat16 natively and its measured agreement with float32 meets
   ``min_dice`` (the setting ``reduced_precision_min_dice``), else int8 where its agreement
   meets it, else float32 onnxruntime (:mod:`.reduced` says when agreement is measured); on a
   GPU torch;
3. postprocessing like ``sem_seg_postprocess``: crop the padding, resize the logits bilinearly
   back to the slice's own size; then the arg-max mapped to label ids. With ``flip_tta`` the
   softmax of the slice and of its left–right mirror (mirrored back) are averaged. With
   ``uncertainty`` each voxel also gets how unsure the model is (:func:`voxel_uncertainty`):
   the entropy of its softmax over the classes, divided by ``log(k)`` so it lies in [0, 1];
   with flip TTA the larger of that and the disagreement between the two passes (half the L1
   distance between their softmaxes, also in [0, 1]).

Slices the host says are air only (``body``: a CT's slices with nothing denser than −500 HU,
:mod:`radseg.imaging.body`) are background and never reach the model. The model is not run on
a crop to the body's box: radseg's models normalise with GroupNorm over the whole slice, so a
crop changes every voxel's scores (docs/benchmarks.md, "removing work").

Only semantic models (semantic FPN, DeepLabV3+) run here; Mask R-CNN predicts through
:class:`~.inference.LabelPredictor`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radseg.contracts import PredictRequest, ProgressFn, no_progress
from radseg.errors import InputError
from radseg.storage import atomic_path

from . import bf16, int8, reduced
from .data import ClassIndex
from .inference import _as_rgb_slices, input_preprocessing

logger = logging.getLogger(__name__)

ENGINES = ("auto", "onnx", "bf16", "int8", "torch")
#: the lowest per-class Dice between a reduced-precision engine's and float32's labels for
#: "auto" to take that engine (bf16 or int8)
MIN_DICE = 0.99
#: the per-prediction check samples at least this many slices (all of a shorter volume)
CHECK_MIN_SLICES = 4
#: ... and judges a class only on at least this many voxels (both engines' labels together)
CHECK_MIN_VOXELS = 2000
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
        calibration_dir: Path | None = None,
        min_dice: float = MIN_DICE,
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
        if chosen in ("onnx", "bf16", "int8") and self.device.type != "cpu":
            raise InputError(f"engine {chosen!r} runs on the CPU; use engine 'torch' on a GPU")
        self._session: Any = None
        #: the float32 session while a reduced-precision engine predicts (the check runs it)
        self._f32_session: Any = None
        self._onnx_path: Path | None = None
        self._cache_key = cache_key
        self.min_dice = float(min_dice)
        #: what is known of each reduced-precision engine considered, and why one was not
        self.records: dict[str, reduced.EngineRecord | None] = {}
        self._record_paths: dict[str, Path] = {}
        self._why_not: dict[str, str] = {}
        #: whether bf16 or int8 was asked for by name (no fall-back to float32 then)
        self.forced = engine in reduced.ENGINES
        if chosen in ("onnx", "bf16", "int8"):
            try:
                self._session = self._onnx_session(cache_dir, cache_key)
            except Exception as exc:
                if engine in ("onnx", "int8"):
                    raise
                # "auto" (or bf16, whose float32 reference is then torch's): a model onnx
                # cannot express still predicts, with torch
                logger.warning("onnx export or session failed (%s); predicting with torch", exc)
                chosen = "torch" if engine == "auto" else chosen
        if chosen == "bf16":
            # the float32 reference of the agreement and the checks: onnxruntime, else torch
            chosen = "onnx" if self._session is not None else "torch"
            if self._session is None:
                self._session = bf16.TorchSession(self.core, torch.float32)
        self.engine = chosen  # what __call__ reports while the engines are measured
        if (
            self.device.type == "cpu"
            and engine in ("auto", "bf16")
            and self._choose_bf16(calibration_dir, forced=engine == "bf16")
        ):
            chosen = "bf16"
        if chosen != "bf16" and self._onnx_path is not None and engine in ("auto", "int8"):
            chosen = self._choose_int8(calibration_dir, forced=engine == "int8")
        self.engine = chosen

    @classmethod
    def load(
        cls,
        request: PredictRequest,
        device: str,
        *,
        engine: str = "auto",
        flip_tta: bool = False,
        min_dice: float = MIN_DICE,
    ) -> VolumePredictor:
        """The model ``request`` names on ``device``: its ``config`` (what training returned)
        with its ``weights``; int8 calibrates on ``request.dataset_dir``'s training split, and
        bf16 and int8 measure their agreement on its val split."""
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
            calibration_dir=getattr(request, "dataset_dir", None),
            min_dice=min_dice,
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
        body: np.ndarray | None = None,
    ) -> VolumePrediction:
        """Labels (and optionally probabilities and the uncertainty) for uint8 ``images``
        ``(z, y, x, c)``.

        ``body``: bool ``(z,)``, which slices show the patient (the host's
        :func:`radseg.imaging.body.body_boxes`); the others are air only and are not run
        through the model: they are background, with a background probability of 1 and no
        uncertainty. ``None``: every slice is run."""
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
        run = np.arange(count) if body is None else np.flatnonzero(_slice_mask(body, count))
        if probs is not None and len(run) < count:
            skipped = np.ones(count, bool)
            skipped[run] = False
            probs[skipped, 0] = 1.0
        batch_size = max(1, int(batch_size))
        batches = [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="radseg-prep") as pool:
            pending: Future[tuple[np.ndarray, tuple[int, int]]] | None = None
            done = count - len(run)
            for n, picked in enumerate(batches):
                if pending is None:
                    pending = pool.submit(self._prepare, _take(images, picked))
                batch, (h, w) = pending.result()
                pending = (
                    pool.submit(self._prepare, _take(images, batches[n + 1]))
                    if n + 1 < len(batches)
                    else None
                )
                out = self._predict(batch, (h, w), (height, width), probabilities, uncertainty)
                where = _where(picked)
                labels[where] = out[0]
                if probs is not None:
                    probs[where] = out[1]
                if doubt is not None:
                    doubt[where] = out[2]
                done += len(picked)
                progress(done / count, f"predicted {done}/{count} slices")
        seconds = time.perf_counter() - started
        logger.info(
            "predicted %d slices (%d of them air only, not run) in %.1f s (%.1f slices/s, "
            "engine %s%s)",
            count,
            count - len(run),
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
        path = self._export(cache_dir, cache_key)
        try:
            session = self._session_for(path)
        except Exception as exc:
            if not cache_key:
                raise
            # A cached file that onnxruntime cannot load (truncated, overwritten): export again.
            logger.warning("cached ONNX model %s does not load (%s); exporting it again", path, exc)
            path.unlink(missing_ok=True)
            path = self._export(cache_dir, cache_key)
            session = self._session_for(path)
        self._onnx_path = path
        return session

    def _session_for(self, path: Path) -> Any:
        import onnxruntime as ort

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

    # -- the bf16 engine (see :mod:`.bf16`; :mod:`.reduced` for when agreement is measured) --

    def _bf16_record_path(self, recipe: str) -> Path | None:
        """Where the record of bf16's ``recipe`` is kept: next to the float32 ONNX model (whose
        name is keyed by the weights, the config and torch's version), keyed also by the
        recipe; ``None`` where the weights have no key (nothing is cached for them) or onnx is
        not used."""
        import torch

        if self._onnx_path is None or not self._cache_key:
            return None
        f32 = self._onnx_path
        key = hashlib.sha256(f"{f32.name}|{torch.__version__}|{recipe}".encode()).hexdigest()
        return f32.with_name(f"{f32.stem}.bf16-{key[:8]}.json")

    def _choose_bf16(self, dataset_dir: Path | None, *, forced: bool) -> bool:
        """Whether bf16 predicts (its session then in place, the float32 one kept for checks):
        by name always (with a warning on a CPU without native bfloat16); under ``auto`` where
        the CPU has native bfloat16 and the agreement of one of its recipes (:data:`.bf16.
        RECIPES`, fastest first), measured once per weights file on ``dataset_dir``'s val split
        and recorded, meets :attr:`min_dice`: the first such recipe predicts. By name, the
        first recipe that meets it, else the first."""
        import torch

        native = bf16.native_bf16()
        self.records["bf16"] = None
        if not native:
            why = "this CPU has no native bfloat16 (AMX or AVX512-BF16); torch would emulate it"
            if not forced:
                self._why_not["bf16"] = why
                return False
            logger.warning("engine 'bf16' asked for by name: %s, slower than float32", why)
        if self._session is None:  # "auto" after a failed ONNX export: torch is float32's
            self._session = bf16.TorchSession(self.core, torch.float32)
        weights_key = hashlib.sha256(self._cache_key.encode()).hexdigest()
        first: tuple[Any, reduced.EngineRecord | None, Path | None] | None = None
        for recipe in bf16.RECIPES:
            try:
                session = bf16.TorchSession(self.core, torch.bfloat16, recipe)
            except ValueError as exc:  # a recipe this architecture has no parts for
                logger.info("bf16 recipe %s does not apply: %s", recipe, exc)
                continue
            path = self._bf16_record_path(recipe)
            record = None if path is None else reduced.EngineRecord.read(path, sha256=weights_key)
            if record is None and dataset_dir is not None:
                record = self._measure(
                    "bf16",
                    session,
                    Path(dataset_dir),
                    model_file=self._onnx_path.name if self._onnx_path else "",
                    sha256=weights_key,
                    runtime={"torch": torch.__version__},
                    recipe=recipe,
                )
                if path is not None:
                    record.write(path)
            first = first or (session, record, path)
            if record is not None and record.usable(self.min_dice):
                return self._use_bf16(session, record, path)
            if record is not None:
                logger.info(
                    "bf16 (%s) agreement %s is below min_dice %s",
                    bf16.RECIPE_WORDS[recipe],
                    record.agreement.min_dice,
                    self.min_dice,
                )
            # the recipes that follow are slower; record the one measured last for the card
            self.records["bf16"] = record
            if path is not None:
                self._record_paths["bf16"] = path
        if forced and first is not None:
            return self._use_bf16(*first)
        if self.records["bf16"] is None:
            logger.info("bf16 not measured for these weights yet and no dataset to measure it on")
        return False

    def _use_bf16(
        self, session: Any, record: reduced.EngineRecord | None, path: Path | None
    ) -> bool:
        """Predict with bf16's ``session`` (the float32 session kept for the checks)."""
        self.records["bf16"] = record
        if path is not None:
            self._record_paths["bf16"] = path
        self._f32_session, self._session = self._session, session
        return True

    def _measure(
        self,
        name: str,
        session: Any,
        dataset_dir: Path,
        *,
        leave_out: Sequence[Path] = (),
        **record: Any,
    ) -> reduced.EngineRecord:
        """The agreement of ``session``'s labels with the float32 session's on the val split of
        ``dataset_dir`` (:func:`.reduced.agreement_slices`), as engine ``name``'s record; where
        that leaves a class with fewer than :data:`.reduced.AGREEMENT_MIN_VOXELS` voxels, on
        training slices too; never on ``leave_out`` (int8's calibration slices)."""
        started = time.perf_counter()
        images, on = reduced.agreement_slices(dataset_dir, leave_out=leave_out)
        counter = reduced.DiceCounter(self.index)
        self._count(counter, session, images)
        first, on = on, f"{on} ({dataset_dir.name})"
        sparse = counter.sparse(reduced.AGREEMENT_MIN_VOXELS)
        if sparse:
            more = reduced.more_agreement_slices(dataset_dir, used=images, leave_out=leave_out)
            if more:
                self._count(counter, session, more)
                on += (
                    f" and {len(more)} slices of its train split ({', '.join(sparse)}: fewer "
                    f"than {reduced.AGREEMENT_MIN_VOXELS} voxels on the {first})"
                )
        agreement = reduced.Agreement(counter.per_class(), counter.slices, on)
        measured = reduced.EngineRecord(engine=name, agreement=agreement, **record)
        logger.info(
            "measured %s against float32 in %.1f s: lowest per-class Dice %s on %d slices of "
            "the %s",
            name,
            time.perf_counter() - started,
            agreement.min_dice,
            counter.slices,
            on,
        )
        return measured

    def _count(self, counter: reduced.DiceCounter, session: Any, images: list[Path]) -> None:
        """Add ``session``'s and the float32 session's labels of ``images`` to ``counter``."""
        for image in reduced.load_images(images):
            counter.add(
                self._labels_with(session, image[None]),
                self._labels_with(self._session, image[None]),
            )

    # -- the int8 engine (see :mod:`.int8` for how it is built) ------------------------------

    def _int8_paths(self) -> tuple[Path, Path]:
        """The int8 model and its record, next to the float32 model and keyed by it, by the
        onnxruntime version that quantizes and by the quantization recipe."""
        import onnxruntime as ort

        assert self._onnx_path is not None
        f32 = self._onnx_path
        key = hashlib.sha256(f"{f32.name}|{ort.__version__}|{int8.RECIPE}".encode()).hexdigest()
        model = f32.with_name(f"{f32.stem}.int8-{key[:8]}.onnx")
        return model, model.with_suffix(".json")

    def _choose_int8(self, calibration_dir: Path | None, *, forced: bool) -> str:
        """``"int8"`` (the int8 session in place, the float32 one kept for checks) or
        ``"onnx"``; builds and measures the int8 model once where it is not cached."""
        model, record_path = self._int8_paths()
        self._record_paths["int8"] = record_path
        self.records["int8"] = None
        session = None
        record = reduced.EngineRecord.read(record_path, model=model)
        if record is not None:
            try:
                session = self._session_for(model)
            except Exception as exc:
                logger.warning("cached int8 model %s does not load (%s); rebuilding", model, exc)
                record = None
        if record is None:
            if calibration_dir is None:
                if forced:
                    raise InputError(
                        "engine 'int8' needs the int8 model, which is built from the training "
                        "split of the model's dataset version; none is cached for these weights "
                        "and no dataset version was given"
                    )
                logger.info("no int8 model for these weights yet and no dataset to build one")
                return "onnx"
            try:
                session, record = self._build_int8(model, record_path, Path(calibration_dir))
            except Exception as exc:
                if forced:
                    raise
                logger.warning("building the int8 model failed (%s); predicting in float32", exc)
                return "onnx"
        self.records["int8"] = record
        if not (record.usable(self.min_dice) or forced):
            logger.info(
                "int8 agreement %s is below min_dice %s; predicting in float32",
                record.agreement.min_dice,
                self.min_dice,
            )
            return "onnx"
        self._f32_session, self._session = self._session, session
        return "int8"

    def _build_int8(
        self, model: Path, record_path: Path, dataset_dir: Path
    ) -> tuple[Any, reduced.EngineRecord]:
        import onnxruntime as ort

        started = time.perf_counter()
        calibration = int8.calibration_slices(dataset_dir)
        assert self._onnx_path is not None
        int8.quantize(
            self._onnx_path,
            model,
            (self._prepare(image[None])[0] for image in reduced.load_images(calibration)),
        )
        logger.info("built the int8 model %s in %.1f s", model.name, time.perf_counter() - started)
        session = self._session_for(model)
        record = self._measure(
            "int8",
            session,
            dataset_dir,
            leave_out=calibration,
            model_file=model.name,
            sha256=reduced.file_sha256(model),
            runtime={"onnxruntime": ort.__version__},
            recipe=int8.RECIPE,
            calibration={"split": "train", "slices": len(calibration)},
        )
        record.write(record_path)
        return session, record

    def _labels_with(self, session: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """The labels ``session`` gives ``images`` (the pipeline's, with another session)."""
        kept = self._session
        self._session = session
        try:
            return self(images, batch_size=batch_size).labels
        finally:
            self._session = kept

    def check(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        every: int,
        batch_size: int = 8,
        body: np.ndarray | None = None,
    ) -> reduced.Agreement:
        """Agreement of a reduced-precision engine's ``labels`` (of ``images``) with float32 on
        every ``every``-th slice of those that were run (the ``body`` slices of
        :meth:`__call__`), and on at least :data:`CHECK_MIN_SLICES` of them, evenly spread (all
        of a shorter volume). A class with fewer than :data:`CHECK_MIN_VOXELS` voxels in the
        sampled slices (both engines' together) is not judged (``None``): on so few voxels one
        border voxel moves Dice by more than the setting's margin (a 128² slice of the demo's
        kidneys: about 300 voxels), and the agreement measured once per weights file, over the
        val split (and training slices where a class is small there), already judged it."""
        if self._f32_session is None:
            raise RuntimeError("the check needs a reduced-precision engine (bf16 or int8)")
        run = (
            np.arange(len(images))
            if body is None
            else np.flatnonzero(_slice_mask(body, len(images)))
        )
        count = len(run)
        if count == 0:
            return reduced.Agreement({}, 0, "slices sampled from a prediction (none was run)")
        picked = run[min(every // 2, count - 1) :: max(1, every)]
        if len(picked) < CHECK_MIN_SLICES:
            spread = np.linspace(0, count - 1, min(CHECK_MIN_SLICES, count)).round()
            picked = run[np.unique(spread.astype(int))]
        counter = reduced.DiceCounter(self.index)
        counter.add(
            labels[picked], self._labels_with(self._f32_session, images[picked], batch_size)
        )
        return reduced.Agreement(
            counter.per_class(min_voxels=CHECK_MIN_VOXELS),
            len(picked),
            "slices sampled from a prediction",
        )

    def reject(self, check: reduced.Agreement) -> None:
        """Predict in float32 from now on, and remember why for these weights (the engine's
        record keeps the failed check, so ``auto`` does not take it again)."""
        if self._f32_session is None:
            return
        rejected = self.engine
        self._session, self._f32_session = self._f32_session, None
        self.engine = "torch" if isinstance(self._session, bf16.TorchSession) else "onnx"
        record, path = self.records.get(rejected), self._record_paths.get(rejected)
        if record is not None:
            record.failed_check = check
            if path is not None:
                record.write(path)

    def predict_checked(
        self,
        images: np.ndarray,
        *,
        check_every: int,
        batch_size: int = 8,
        probabilities: bool = False,
        uncertainty: bool = False,
        progress: ProgressFn = no_progress,
        body: np.ndarray | None = None,
    ) -> tuple[VolumePrediction, dict[str, Any]]:
        """:meth:`__call__`, and with bf16 or int8 the check of :meth:`check` (``check_every``
        0: none). A check below :attr:`min_dice` gives float32's answer instead (unless the
        engine was asked for by name). Also the facts the host stores: the engine, the check
        (``"bf16_check"`` or ``"int8_check"``), and for each reduced-precision engine
        considered its record as :func:`.reduced.describe` words it (``"bf16"``, ``"int8"``)."""

        def predict() -> VolumePrediction:
            return self(
                images,
                batch_size=batch_size,
                probabilities=probabilities,
                uncertainty=uncertainty,
                progress=progress,
                body=body,
            )

        result = predict()
        facts: dict[str, Any] = {"engine": self.engine}
        engine = self.engine
        if engine in reduced.ENGINES and check_every > 0:
            check = self.check(
                images, result.labels, every=check_every, batch_size=batch_size, body=body
            )
            passed = check.meets(self.min_dice)
            facts[f"{engine}_check"] = {**check.to_dict(), "passed": passed}
            if not passed and not self.forced:
                logger.warning(
                    "%s agreed with float32 at Dice %s on %d sampled slices (< %s); "
                    "predicting again in float32, and not in %s from now on",
                    engine,
                    check.min_dice,
                    check.slices,
                    self.min_dice,
                    engine,
                )
                self.reject(check)
                result = predict()
                facts["engine"] = self.engine
        for name in reduced.ENGINES:
            if name in self.records:
                facts[name] = reduced.describe(
                    name,
                    self.records[name],
                    self.min_dice,
                    self.engine,
                    why_not=self._why_not.get(name, ""),
                )
                record = self.records[name]
                if name == "bf16" and record is not None:
                    facts[name]["recipe_words"] = bf16.RECIPE_WORDS.get(record.recipe, "")
        return result, facts


def _slice_mask(body: np.ndarray, count: int) -> np.ndarray:
    mask = np.asarray(body, dtype=bool)
    if mask.shape != (count,):
        raise InputError(
            f"body must say for each of the {count} slices whether it shows the "
            f"patient (bool (z,)), got shape {mask.shape}"
        )
    return mask


def _where(picked: np.ndarray) -> slice | np.ndarray:
    """``picked`` (ascending slice indices) as a slice where they are consecutive: a view, not
    a copy, of the images and outputs for the usual volume without air-only slices."""
    if len(picked) and picked[-1] - picked[0] == len(picked) - 1:
        return slice(int(picked[0]), int(picked[-1]) + 1)
    return picked


def _take(images: np.ndarray, picked: np.ndarray) -> np.ndarray:
    return images[_where(picked)]


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _file_key(path: Path) -> str:
    """The content hash of ``path`` (weights files are tens of MB: hashing takes ~0.1 s)."""
    return reduced.file_sha256(path)
