"""Reduced-precision engines (int8, bf16): their agreement with float32 and their records.

A reduced-precision engine predicts the same model with cheaper arithmetic: ``int8`` (the
float32 ONNX model quantized by onnxruntime, :mod:`.int8`) and ``bf16`` (the torch module in
bfloat16 on a CPU with native bfloat16, :mod:`.bf16`). Either is used for a model version
only where its labels agree with float32's, measured the same way for both (what the plugin
settings ``reduced_precision_min_dice`` and ``reduced_precision_check_every`` act on; their
old names ``int8_min_dice`` and ``int8_check_every`` are still read):

1. **once per weights file** (the first prediction of a model version on a CPU, or
   ``VolumePredictor.load`` with a dataset): the val split's slices of the model's dataset
   version (up to :data:`AGREEMENT_SLICES`, evenly spread; training slices where there is no
   val split) are predicted by both engines, and the per-class Dice between the two label
   volumes is stored in the engine's record (:class:`EngineRecord`, a JSON file next to the
   float32 ONNX model, keyed by the weights, the runtime's version and the engine's recipe).
   Where a class that either engine predicts has fewer than :data:`AGREEMENT_MIN_VOXELS`
   voxels on those slices (a small val split, a small structure), up to
   :data:`AGREEMENT_SLICES` slices of the training split not yet measured (nor calibrated on)
   are added to the measurement, and every class is judged on all of them: on a few hundred
   voxels one voxel moves Dice by more than the setting's margin, so four val slices cannot
   tell 0.98 from 0.995 (slicerio's cervical vertebral column: 155 voxels on its val split).
   Agreement is between two engines, not against a truth, so training slices measure it as
   well as any. The engine is used only where the lowest per-class Dice is at least the
   setting;
2. **on every prediction with it**: every ``reduced_precision_check_every``-th slice (at
   least 4 slices, all of a shorter volume) is also predicted in float32 and the per-class
   Dice on those slices measured, judging a class only on at least 2,000 voxels
   (:meth:`.volume.VolumePredictor.check`). A check below the setting makes that prediction's
   answer float32's (the whole volume is predicted again in float32) and the record remembers
   it, so the model version does not use that engine (bf16: that recipe) again. The host
   stores every check with the prediction and the model version.

Dice here is between two engines' labels, not against any ground truth: 1.0 means the engine
changed no voxel's class. A class that neither engine predicts has no Dice (``None``) and is
not judged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from radseg.errors import InputError
from radseg.storage import atomic_write_text

from .data import ClassIndex, annotations_path, read_image

logger = logging.getLogger(__name__)

#: the engines measured against float32 before use, in the order ``auto`` tries them
ENGINES = ("bf16", "int8")
#: slices of the val split whose labels both engines predict when an engine is measured
AGREEMENT_SLICES = 32
#: a class with fewer voxels than this on the val split's slices (both engines' labels
#: together) is measured on training slices too (the module docstring)
AGREEMENT_MIN_VOXELS = 2000


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

    def sparse(self, min_voxels: int) -> list[str]:
        """The classes either engine predicts on fewer than ``min_voxels`` voxels (both
        engines' labels together), by name."""
        return [
            info.name
            for info, total in zip(self.index.classes, self._total, strict=True)
            if 0 < total < min_voxels
        ]

    def per_class(self, min_voxels: int = 1) -> dict[str, float | None]:
        """Dice per class name; ``None`` for a class with fewer than ``min_voxels`` voxels in
        the two label volumes together (none: neither engine predicts it)."""
        return {
            info.name: (
                None if total < max(1, min_voxels) else round(2 * float(both) / float(total), 6)
            )
            for info, both, total in zip(self.index.classes, self._both, self._total, strict=True)
        }


@dataclass
class Agreement:
    """Per-class Dice between an engine's and the float32 labels of ``slices`` slices of ``on``."""

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
class EngineRecord:
    """What is known of one reduced-precision engine for one weights file: what it runs, how it
    was made, its agreement with float32.

    ``sha256`` is what the record is valid for: the int8 model file's content hash (``model_file``
    is that file), or for bf16 the hash of the weights and config the module is cast from
    (``model_file`` is then the float32 ONNX model's name it was measured against).
    ``runtime``: the versions that made it (``{"onnxruntime": ...}``, ``{"torch": ...}``).
    """

    engine: str
    model_file: str
    sha256: str
    runtime: dict[str, str]
    recipe: str
    agreement: Agreement
    #: how the engine was calibrated (int8: ``{"split": "train", "slices": n}``); bf16 needs none
    calibration: dict[str, Any] | None = None
    #: a per-prediction check below the setting; the model version then no longer uses it
    failed_check: Agreement | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["agreement"] = self.agreement.to_dict()
        data["failed_check"] = self.failed_check.to_dict() if self.failed_check else None
        return json.dumps(data, indent=1)

    @classmethod
    def read(
        cls, path: Path, *, model: Path | None = None, sha256: str | None = None
    ) -> EngineRecord | None:
        """The record at ``path`` when it is readable and still describes what it was made
        for: ``model``'s content (same sha256) or the given ``sha256``; ``None`` otherwise (the
        caller measures again). Reads the int8 records written before bf16 existed too."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            failed = data.get("failed_check")
            runtime = data.get("runtime") or {"onnxruntime": str(data["onnxruntime"])}
            calibration = data.get("calibration")
            record = cls(
                engine=str(data.get("engine", "int8")),
                model_file=str(data["model_file"]),
                sha256=str(data["sha256"]),
                runtime={str(k): str(v) for k, v in dict(runtime).items()},
                recipe=str(data["recipe"]),
                agreement=Agreement.from_dict(data["agreement"]),
                calibration=dict(calibration) if calibration is not None else None,
                failed_check=Agreement.from_dict(failed) if failed else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if path.exists():
                logger.warning("engine record %s is unreadable (%s); measuring again", path, exc)
            return None
        if model is not None and (not model.is_file() or file_sha256(model) != record.sha256):
            logger.warning("model %s is missing or not the one recorded; rebuilding", model)
            return None
        if sha256 is not None and sha256 != record.sha256:
            logger.warning("record %s is for other weights; measuring again", path)
            return None
        return record

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    def usable(self, min_dice: float) -> bool:
        """Whether ``auto`` may use the engine: no failed check, agreement ≥ ``min_dice``."""
        return self.failed_check is None and self.agreement.meets(min_dice)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def split_images(dataset_dir: Path, split: str) -> list[Path]:
    """The image files of ``split`` of the dataset version at ``dataset_dir``, in its order."""
    path = annotations_path(dataset_dir, split)
    if not path.is_file():
        return []
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        return [Path(dataset_dir) / str(image["file_name"]) for image in coco.get("images", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read {path} to measure an engine's agreement: {exc}") from exc


def evenly(items: Sequence[Path], count: int) -> list[Path]:
    """At most ``count`` of ``items``, evenly spread over them (first and last included)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def agreement_slices(
    dataset_dir: Path, *, leave_out: Sequence[Path] = ()
) -> tuple[list[Path], str]:
    """The images an engine's agreement is measured on: the val split's, else the training
    images not in ``leave_out`` (int8's calibration slices; all of them where that leaves
    none); and a description of them. Empty when the dataset version has no images."""
    val = split_images(dataset_dir, "val")
    if val:
        return evenly(val, AGREEMENT_SLICES), "val split"
    train = split_images(dataset_dir, "train")
    left = set(leave_out)
    rest = [p for p in train if p not in left] or train
    return evenly(rest, AGREEMENT_SLICES), "train split (no val split)"


def more_agreement_slices(
    dataset_dir: Path, *, used: Sequence[Path], leave_out: Sequence[Path] = ()
) -> list[Path]:
    """Training images to add to an agreement measurement whose slices (``used``) left a class
    with too few voxels: up to :data:`AGREEMENT_SLICES` of those not ``used`` nor in
    ``leave_out`` (int8's calibration slices), evenly spread; empty where none is left."""
    skip = set(used) | set(leave_out)
    rest = [p for p in split_images(dataset_dir, "train") if p not in skip]
    return evenly(rest, AGREEMENT_SLICES)


def load_images(paths: Iterable[Path]) -> Iterator[np.ndarray]:
    """Each image as uint8 ``(y, x, 3)``, the channel recipe's output as the dataset stores it."""
    for path in paths:
        yield read_image(path)


def describe(
    name: str, record: EngineRecord | None, min_dice: float, engine: str, *, why_not: str = ""
) -> dict[str, Any]:
    """The facts the host stores with the model version about engine ``name``: the engine
    chosen (``engine``) and why ``name`` was or was not (``why_not``: a reason that is not
    its agreement, e.g. the CPU has no native bfloat16)."""
    facts: dict[str, Any] = {"engine": engine, "min_dice_setting": min_dice}
    if record is None:
        facts["measured"] = False
        if why_not:
            facts["reason"] = why_not
        return facts
    worst = record.agreement.min_dice
    if why_not:
        reason = why_not
    elif record.failed_check is not None:
        reason = (
            f"a check on {record.failed_check.slices} predicted slices measured a lowest Dice of "
            f"{_fmt(record.failed_check.min_dice)} < {min_dice}"
        )
    elif record.agreement.meets(min_dice):
        reason = f"lowest per-class Dice with float32 {_fmt(worst)} ≥ {min_dice}"
    else:
        reason = f"lowest per-class Dice with float32 {_fmt(worst)} < {min_dice}"
    return {
        **facts,
        "measured": True,
        "reason": reason,
        "agreement": record.agreement.to_dict(),
        "failed_check": record.failed_check.to_dict() if record.failed_check else None,
        "calibration": record.calibration,
        **record.runtime,
        "recipe": record.recipe,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"
