"""Training augmentations that are right for CT slices.

* No photometric augmentation: a channel is a fixed HU window, so brightness or colour jitter
  would teach the model HU values that do not exist.
* Left–right flips only when no class is lateral: a flipped "lung_left" lies where the right lung
  is, so a flip would teach the model to swap the two. Flips are on by default for classes with
  no side, off when any class name says left/right, and asking for them then is refused.
* Rotations (± ``rotation_degrees``) and scales (the shorter edge times 1 ± ``scale_range``) are
  off unless asked for; labels follow with nearest-neighbour interpolation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from radseg.errors import InputError

from .options import TrainOptions

_LATERAL = re.compile(r"(?:^|[\W_])(left|right|l|r|lt|rt|sinister|dexter)(?:$|[\W_])", re.I)


def lateral_classes(names: Sequence[str]) -> list[str]:
    """The class names that name a side (``lung_left``, ``Kidney R``, ``left adrenal``)."""
    return [n for n in names if _LATERAL.search(n)]


def flips_allowed(options: TrainOptions, class_names: Sequence[str]) -> bool:
    """Whether training may flip left–right; refuses a flip asked for with lateral classes."""
    lateral = lateral_classes(class_names)
    if options.flip and lateral:
        raise InputError(
            f"option 'flip' is on but the classes {', '.join(lateral)} have a side: a flipped "
            "slice would teach the model to swap left and right; leave 'flip' unset"
        )
    return not lateral if options.flip is None else options.flip


def build_augmentations(
    cfg: Any, options: TrainOptions, class_names: Sequence[str], base_size: int
) -> list[Any]:
    """detectron2 augmentations for training; ``base_size`` is the slices' shorter edge."""
    import detectron2.data.transforms as T

    size = options.image_size or base_size
    augs: list[Any] = []
    if options.scale_range > 0:
        low = max(8, round(size * (1 - options.scale_range)))
        high = round(size * (1 + options.scale_range))
        augs.append(T.ResizeShortestEdge((low, high), cfg.INPUT.MAX_SIZE_TRAIN, "range"))
    elif options.image_size is not None:
        augs.append(T.ResizeShortestEdge((size, size), cfg.INPUT.MAX_SIZE_TRAIN, "choice"))
    if options.rotation_degrees > 0:
        degrees = options.rotation_degrees
        augs.append(T.RandomRotation([-degrees, degrees], expand=False, sample_style="range"))
    if flips_allowed(options, class_names):
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    return augs
