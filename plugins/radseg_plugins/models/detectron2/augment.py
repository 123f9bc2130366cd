"""Training augmentations that are right for CT slices.

* No photometric augmentation: a channel is a fixed HU window, so brightness or colour jitter
  would teach the model HU values that do not exist.
* Left–right flips only when asked for (the ``flip`` option, or the cfg override
  ``INPUT.RANDOM_FLIP: horizontal``) and never when a class is lateral: a flipped "lung_left"
  lies where the right lung is, so a flip would teach the model to swap the two; asking for
  flips then is refused. (Off by default: anatomy is not mirror-symmetric even without sided
  classes — the heart, the liver — and a short training learns position as a cue.)
  ``INPUT.RANDOM_FLIP: vertical`` (anterior–posterior) is honoured.
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


def flips_allowed(
    options: TrainOptions, class_names: Sequence[str], random_flip: str = "none"
) -> bool:
    """Whether training flips left–right; refuses a flip asked for with lateral classes.

    ``random_flip`` is the cfg's ``INPUT.RANDOM_FLIP`` (after the user's overrides).
    """
    wanted = options.flip or random_flip == "horizontal"
    lateral = lateral_classes(class_names)
    if wanted and lateral:
        raise InputError(
            f"left–right flips are asked for but the classes {', '.join(lateral)} have a side: "
            "a flipped slice would teach the model to swap left and right; "
            "drop the 'flip' option (or the INPUT.RANDOM_FLIP override)"
        )
    return wanted


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
    if flips_allowed(options, class_names, cfg.INPUT.RANDOM_FLIP):
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    if cfg.INPUT.RANDOM_FLIP == "vertical":
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    return augs
