"""The int8 engine's parts: static quantization, calibration slices, agreement, the record.

An int8 model is the float32 ONNX model (:meth:`.volume.VolumePredictor._export`) quantized by
onnxruntime's static quantizer: QDQ format, activations uint8 and weights int8 per output
channel, ranges from the min/max of the activations on calibration slices from the model's
own training split (the dataset version it was trained on). It is built once per float32 model
and onnxruntime version and cached next to it (``model-KEY.int8.onnx``), with a record
(``model-KEY.int8.json``) of how it was made and how far its labels agree with float32's.

When agreement is measured (what the plugin settings ``int8_min_dice`` and
``int8_check_every`` act on):

1. **when the int8 model is built** (the first prediction of a model version on a CPU, or
   ``VolumePredictor.load`` with a dataset): the val split's slices (up to
   :data:`AGREEMENT_SLICES`, evenly spread; the training slices not used for calibration where
   there is no val split) are predicted by both engines, and the per-class Dice between the two
   label volumes is stored in the record. The engine for the model version is int8 only where
   the lowest per-class Dice is at least ``int8_min_dice``, float32 otherwise;
2. **on every int8 prediction**: every ``int8_check_every``-th slice (at least one) is also
   predicted in float32 and the per-class Dice between the two on those slices is measured. A
   check below ``int8_min_dice`` makes that prediction's answer float32's (the whole volume is
   predicted again in float32) and the record remembers it, so the model version stays on
   float32 from then on. The host stores every check with the prediction and the model version.

Dice here is between the two engines' labels, not against any ground truth: 1.0 means int8
changed no voxel's class. A class that neither engine predicts has no Dice (``None``) and is not
judged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from radseg.errors import InputError
from radseg.storage import atomic_path, atomic_write_text

from .data import ClassIndex, annotations_path, read_image

logger = logging.getLogger(__name__)

#: calibration slices taken from the training split (evenly spread)
CALIBRATION_SLICES = 32
#: slices of the val split whose labels both engines predict when the int8 model is built
AGREEMENT_SLICES = 32
#: what the quantizer is asked for; part of the cache key, so a change rebuilds the model
RECIPE = "qdq-u8s8-per-channel-minmax-v1"


class DiceCounter:
    """Per-class Dice between two label-id volumes, accumulated slice by slice."""

    def __init__(self, index: ClassIndex) -> None:
        self.index = index
        self.slices = 0
        self._both = np.zeros(len(index.ids), np.int64)
        self._total = np.zeros(len(index.ids), np.int64)

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        """Count ``a`` against ``b`` (label ids, same shape, one or more slices)."""
        if a.shape != b.shape:
            raise ValueError(f"label shapes differ: {a.shape} and {b.shape}")
        for k, class_id in enumerate(self.index.ids):
            x, y = a == class_id, b == class_id
            self._both[k] += int(np.count_nonzero(x & y))
            self._total[k] += int(np.count_nonzero(x)) + int(np.count_nonzero(y))
        self.slices += a.shape[0] if a.ndim == 3 else 1

    def per_class(self) -> dict[str, float | None]:
        return {
            info.name: (None if total == 0 else round(2 * float(both) / float(total), 6))
            for info, both, total in zip(self.index.classes, self._both, self._total, strict=True)
        }


@dataclass
class Agreement:
    """Per-class Dice between the int8 and the float32 labels of ``slices`` slices of ``on``."""

    per_class: dict[str, float | None]
    slices: int
    on: str
    measured_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def min_dice(self) -> float | None:
        """The lowest per-class Dice (``None``: no class was predicted by either engine)."""
        values = [v for v in self.per_class.values() if v is not None]
        return min(values) if values else None

    def meets(self, min_dice: float) -> bool:
        worst = self.min_dice
        return worst is None or worst >= min_dice

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "min_dice": self.min_dice}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Agreement:
        return cls(
            per_class={
                str(k): (None if v is None else float(v)) for k, v in data["per_class"].items()
            },
            slices=int(data["slices"]),
            on=str(data["on"]),
            measured_at=str(data["measured_at"]),
        )


@dataclass
class Int8Record:
    """What is known of one int8 model: the file, how it was calibrated, its agreement."""

    model_file: str
    sha256: str
    onnxruntime: str
    recipe: str
    calibration: dict[str, Any]
    agreement: Agreement
    #: a per-prediction check below the setting; the model version then stays on float32
    failed_check: Agreement | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["agreement"] = self.agreement.to_dict()
        data["failed_check"] = self.failed_check.to_dict() if self.failed_check else None
        return json.dumps(data, indent=1)

    @classmethod
    def read(cls, path: Path, model: Path) -> Int8Record | None:
        """The record at ``path`` when it is readable and ``model`` is the file it describes
        (same sha256); ``None`` otherwise (the caller rebuilds both)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            failed = data.get("failed_check")
            record = cls(
                model_file=str(data["model_file"]),
                sha256=str(data["sha256"]),
                onnxruntime=str(data["onnxruntime"]),
                recipe=str(data["recipe"]),
                calibration=dict(data["calibration"]),
                agreement=Agreement.from_dict(data["agreement"]),
                failed_check=Agreement.from_dict(failed) if failed else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if path.exists():
                logger.warning("int8 record %s is unreadable (%s); rebuilding", path, exc)
            return None
        if not model.is_file() or file_sha256(model) != record.sha256:
            logger.warning("int8 model %s is missing or not the one recorded; rebuilding", model)
            return None
        return record

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_images(dataset_dir: Path, split: str) -> list[Path]:
    """The image files of ``split`` of the dataset version at ``dataset_dir``, in its order."""
    path = annotations_path(dataset_dir, split)
    if not path.is_file():
        return []
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        return [Path(dataset_dir) / str(image["file_name"]) for image in coco.get("images", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read {path} for int8 calibration: {exc}") from exc


def evenly(items: Sequence[Path], count: int) -> list[Path]:
    """At most ``count`` of ``items``, evenly spread over them (first and last included)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def calibration_and_agreement_slices(dataset_dir: Path) -> tuple[list[Path], list[Path], str]:
    """Calibration images (train split), agreement images (val split, else the training
    images not calibrated on) and a description of the latter.

    :raises InputError: the dataset version has no training images.
    """
    train = split_images(dataset_dir, "train")
    if not train:
        raise InputError(
            f"the dataset version at {dataset_dir} has no training images to calibrate the int8 "
            "model on; predict with engine 'onnx'"
        )
    calibration = evenly(train, CALIBRATION_SLICES)
    val = split_images(dataset_dir, "val")
    if val:
        return calibration, evenly(val, AGREEMENT_SLICES), "val split"
    rest = [p for p in train if p not in set(calibration)] or train
    return calibration, evenly(rest, AGREEMENT_SLICES), "train split (no val split)"


def load_images(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    """Each image as uint8 ``(y, x, 3)``, the channel recipe's output as the dataset stores it."""
    for path in paths:
        yield read_image(path)


def quantize(f32_model: Path, out: Path, batches: Iterable[np.ndarray]) -> None:
    """Write the int8 (QDQ, per-channel) model of ``f32_model`` to ``out``, calibrated on
    ``batches`` (normalised, padded float32 ``(n, 3, Y, X)``: the graph's input)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"images": batch}

    quiet = _QuantizerNoise()
    logging.getLogger().addFilter(quiet)
    try:
        _quantize(f32_model, out, Reader(), quantize_static, quant_pre_process)
    finally:
        logging.getLogger().removeFilter(quiet)
    if quiet.dropped:
        logger.debug("left out %d 'Axis ... out-of-range' notes of the quantizer", quiet.dropped)


class _QuantizerNoise(logging.Filter):
    """Drops the quantizer's root-logger note for each GroupNorm constant it leaves per-tensor
    ("Axis 1 is out-of-range for weight ..."): one line per norm layer in every job log."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Axis ") and "out-of-range" in str(record.msg):
            self.dropped += 1
            return False
        return True


def _quantize(
    f32_model: Path, out: Path, reader: Any, quantize_static: Any, quant_pre_process: Any
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    with tempfile.TemporaryDirectory(prefix="radseg-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        # Folds constants and infers shapes, so that the quantizer sees every convolution.
        quant_pre_process(str(f32_model), str(prepared), skip_symbolic_shape=True)
        with atomic_path(out) as tmp:
            quantize_static(
                str(prepared),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )


def describe(record: Int8Record | None, min_dice: float, engine: str) -> dict[str, Any]:
    """The facts the host stores with the model version: the engine chosen and why."""
    if record is None:
        return {"engine": engine, "min_dice_setting": min_dice, "measured": False}
    worst = record.agreement.min_dice
    if record.failed_check is not None:
        reason = (
            f"a check on {record.failed_check.slices} predicted slices measured a lowest Dice of "
            f"{_fmt(record.failed_check.min_dice)} < {min_dice}"
        )
    elif record.agreement.meets(min_dice):
        reason = f"lowest per-class Dice with float32 {_fmt(worst)} ≥ {min_dice}"
    else:
        reason = f"lowest per-class Dice with float32 {_fmt(worst)} < {min_dice}"
    return {
        "engine": engine,
        "min_dice_setting": min_dice,
        "measured": True,
        "reason": reason,
        "agreement": record.agreement.to_dict(),
        "failed_check": record.failed_check.to_dict() if record.failed_check else None,
        "calibration": record.calibration,
        "onnxruntime": record.onnxruntime,
        "recipe": record.recipe,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"
