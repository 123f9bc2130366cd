"""The options a radseg user gives the detectron2 backend, checked before anything heavy runs.

``TrainRequest.config`` is a plain mapping (from the web form, the CLI or the API); this module
turns it into :class:`TrainOptions`, refusing unknown keys and wrong types with a message that
names the key and lists the valid ones. It imports neither torch nor detectron2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from radseg.errors import InputError

ARCHITECTURES = ("semantic_fpn", "deeplabv3plus", "mask_rcnn")
SEMANTIC_ARCHITECTURES = frozenset({"semantic_fpn", "deeplabv3plus"})

#: ResNet depths each backbone builder accepts (detectron2's FPN ResNet; DeepLab's ResNet)
RESNET_DEPTHS = {
    "semantic_fpn": (18, 34, 50, 101, 152),
    "mask_rcnn": (18, 34, 50, 101, 152),
    "deeplabv3plus": (50, 101, 152),
}

#: cfg keys that come from the dataset version or the request, never from ``overrides``
DERIVED_KEY_HINT = {
    "NUM_CLASSES": "the number of classes comes from the dataset version",
    "MODEL.DEVICE": "the device comes from the request (the worker picks it)",
    "OUTPUT_DIR": "checkpoints go to the model version's directory",
    "DATASETS.TRAIN": "the datasets are the dataset version's splits",
    "DATASETS.TEST": "the datasets are the dataset version's splits",
}


@dataclass(frozen=True)
class TrainOptions:
    """What ``TrainRequest.config`` may hold; every key is optional.

    :param architecture: one of :data:`ARCHITECTURES`.
    :param iterations: total training iterations (a resumed run trains up to this number).
    :param batch_size: images per iteration (``SOLVER.IMS_PER_BATCH``), over all processes.
    :param base_lr: ``SOLVER.BASE_LR``.
    :param image_size: resize the shorter edge of every slice to this many pixels for training
        and prediction; ``None`` keeps the slices' own size.
    :param resnet_depth: backbone depth; ``None`` keeps the template's (18 for the FPN models,
        50 for DeepLabV3+).
    :param overrides: detectron2 cfg keys (``"MODEL.RESNETS.NORM"``) to values, applied last;
        the keys in :data:`DERIVED_KEY_HINT` are refused.
    :param checkpoint_period: iterations between checkpoints; ``None`` keeps the template's.
    :param amp: mixed precision (float16 on CUDA, bfloat16 on CPU).
    :param weights: a local file with initial weights (``MODEL.WEIGHTS``); empty trains from
        scratch. Nothing is ever downloaded.
    :param seed: seeds Python, numpy and torch (``-1``: a random seed).
    :param num_workers: data-loader processes; ``None`` picks 2, or 0 inside a daemon process.
    :param num_gpus: processes to train with through detectron2's ``launch`` (one per GPU; on
        CPU, gloo processes); per machine when ``num_machines`` > 1.
    :param num_machines: machines that train together (torch.distributed through ``launch``);
        each runs ``num_gpus`` processes and learns its rank and the rendezvous address from
        the environment: ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (what ``torchrun``
        sets), see :func:`.training.machine_rank`.
    :param score_threshold: Mask R-CNN: the lowest instance score kept in the label map.
    :param flip: left–right flips in training (off by default); refused when a class name has
        a side (``lung_left``), as is the override ``INPUT.RANDOM_FLIP: horizontal`` (see
        :mod:`.augment`).
    :param rotation_degrees: random rotations within ± this many degrees (0: none).
    :param scale_range: random rescaling of the shorter edge by 1 ± this (0: none).
    :param pixel_stats: ``"train"``: the model's pixel mean/std are measured on the training
        split; ``"template"``: the template's (ImageNet) values, as pretrained weights expect.
        ``overrides`` of ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` win over both.
    :param eval_period: validate every this many iterations (and at the end); 0: only at the
        end; ``None``: a tenth of ``iterations`` when that is at least 10 iterations, else 0.
    :param patience: stop after this many validations without a better mean Dice
        (``None``: never stop early).
    :param tolerance_mm: the surface Dice tolerance of the validation metrics.
    """

    architecture: str = "semantic_fpn"
    iterations: int = 1000
    batch_size: int = 4
    base_lr: float = 0.01
    image_size: int | None = None
    resnet_depth: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_period: int | None = None
    amp: bool = False
    weights: str = ""
    seed: int = 0
    num_workers: int | None = None
    num_gpus: int = 1
    num_machines: int = 1
    score_threshold: float = 0.5
    flip: bool = False
    rotation_degrees: float = 0.0
    scale_range: float = 0.0
    pixel_stats: str = "train"
    eval_period: int | None = None
    patience: int | None = None
    tolerance_mm: float = 2.0

    @property
    def semantic(self) -> bool:
        return self.architecture in SEMANTIC_ARCHITECTURES

    def validation_period(self) -> int:
        """Iterations between validations (0: only at the end)."""
        if self.eval_period is not None:
            return self.eval_period
        return self.iterations // 10 if self.iterations >= 100 else 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainOptions:
        """Check ``config`` and return the options it gives; raise :class:`InputError`."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise InputError(
                f"unknown detectron2 option(s) {', '.join(map(repr, unknown))}; "
                f"valid options are: {', '.join(sorted(valid))}"
            )
        values: dict[str, Any] = dict(config)
        for name in ("iterations", "batch_size", "num_gpus", "num_machines"):
            if name in values:
                values[name] = _int(name, values[name], minimum=1)
        for name in ("image_size", "resnet_depth", "checkpoint_period", "num_workers",
                     "eval_period", "patience"):  # fmt: skip
            if values.get(name) is not None:
                minimum = 0 if name in ("num_workers", "eval_period") else 1
                values[name] = _int(name, values[name], minimum=minimum)
        if "seed" in values:
            values["seed"] = _int("seed", values["seed"], minimum=-1)
        for name in ("base_lr", "score_threshold", "rotation_degrees", "scale_range",
                     "tolerance_mm"):  # fmt: skip
            if name in values:
                values[name] = _float(name, values[name])
        if "amp" in values and not isinstance(values["amp"], bool):
            raise InputError(f"option 'amp' must be true or false, not {values['amp']!r}")
        if "flip" in values and not isinstance(values["flip"], bool):
            raise InputError(f"option 'flip' must be true or false, not {values['flip']!r}")
        values["weights"] = str(values.get("weights") or "")
        overrides = values.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise InputError("option 'overrides' must map detectron2 cfg keys to values")
        values["overrides"] = dict(overrides)

        options = cls(**values)
        options._check()
        return options

    def _check(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise InputError(
                f"unknown architecture {self.architecture!r}; "
                f"the detectron2 backend trains: {', '.join(ARCHITECTURES)}"
            )
        depths = RESNET_DEPTHS[self.architecture]
        if self.resnet_depth is not None and self.resnet_depth not in depths:
            raise InputError(
                f"option 'resnet_depth' {self.resnet_depth} is not available for "
                f"{self.architecture}; choose one of {', '.join(map(str, depths))}"
            )
        if self.batch_size % (self.num_gpus * self.num_machines):
            raise InputError(
                f"option 'batch_size' {self.batch_size} must be a multiple of "
                f"'num_gpus' {self.num_gpus} × 'num_machines' {self.num_machines} "
                "(each process takes the same share)"
            )
        if self.pixel_stats not in ("train", "template"):
            raise InputError(
                f"option 'pixel_stats' {self.pixel_stats!r}: choose 'train' (measured on the "
                "training split) or 'template' (the template's, for pretrained weights)"
            )
        if self.scale_range >= 1:
            raise InputError(f"option 'scale_range' {self.scale_range} must be below 1")
        for key in self.overrides:
            if not isinstance(key, str) or not key:
                raise InputError(f"override key {key!r} must be a detectron2 cfg key like MODEL.X")
            for derived, why in DERIVED_KEY_HINT.items():
                if key == derived or key.endswith("." + derived):
                    raise InputError(f"override {key!r} is not allowed: {why}")
        if self.weights:
            if "://" in self.weights:
                raise InputError(
                    f"option 'weights' {self.weights!r} is a URL; radseg never downloads "
                    "weights at run time, download the file and give its local path"
                )
            if not Path(self.weights).is_file():
                raise InputError(f"option 'weights': no file at {self.weights}")


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InputError(f"option {name!r} must be a whole number, not {value!r}")
    if value < minimum:
        raise InputError(f"option {name!r} must be at least {minimum}, not {value}")
    return int(value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InputError(f"option {name!r} must be a non-negative number, not {value!r}")
    return float(value)
