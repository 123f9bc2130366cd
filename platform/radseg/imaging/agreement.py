"""Agreement between several readers' label volumes of one series, and their consensus.

:func:`agreement` takes the readers' final masks (uint8 ``(z, y, x)`` label maps on one grid),
the model's prediction on the same grid and the class ids, and measures, per class:

* **pairwise Dice** between every two readers, and its mean;
* **Dice of each reader against the prediction** (how much each reader changed);
* **STAPLE** (Warfield et al. 2004, SimpleITK's ``STAPLEImageFilter``) on that class's binary
  masks: each reader's estimated **sensitivity** and **specificity**;
* **Dice of each reader against the consensus** (the multi-label STAPLE one).

and builds two consensus label maps of all classes at once:

* **STAPLE**: SimpleITK's ``MultiLabelSTAPLE`` (Rohlfing's multi-label extension of STAPLE);
  a voxel it leaves undecided (a tie of the estimated probabilities) takes the majority
  vote's label, and background where that is undecided too;
* **majority vote**: SimpleITK's ``LabelVoting``: the label most readers gave a voxel; a tie
  (two readers who disagree, or three different labels) is background.

Dice follows :mod:`radseg.metrics` (``None`` when both masks lack the class). STAPLE's
sensitivity and specificity are ``None`` for a class no reader drew (there is nothing to
estimate); with a single reader there is no agreement to measure and :func:`agreement`
refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import SimpleITK as sitk

from radseg.metrics import dice_per_class, mean_defined

#: the label SimpleITK writes where a vote or STAPLE cannot decide (no class uses 255: the
#: ignore label of radseg.metrics)
UNDECIDED = 255
#: STAPLE's stopping rule: SimpleITK's defaults are a 1e-5 threshold and no iteration cap;
#: a cap keeps a pathological volume from running for ever
STAPLE_MAX_ITERATIONS = 200


@dataclass(frozen=True)
class Agreement:
    """The report (JSON-able) and the two consensus label maps."""

    report: dict[str, Any]
    staple: np.ndarray
    majority: np.ndarray


def _images(masks: Sequence[np.ndarray]) -> list[sitk.Image]:
    return [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=np.uint8)) for m in masks]


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """The label most of ``masks`` give each voxel; ties are background (0)."""
    voted = sitk.GetArrayFromImage(sitk.LabelVoting(_images(masks), UNDECIDED))
    voted[voted == UNDECIDED] = 0
    return voted.astype(np.uint8)


def staple_consensus(masks: Sequence[np.ndarray], majority: np.ndarray) -> np.ndarray:
    """SimpleITK's multi-label STAPLE of ``masks``; undecided voxels take ``majority``'s label."""
    if all(not m.any() for m in masks):
        return np.zeros_like(majority)
    consensus = sitk.GetArrayFromImage(
        sitk.MultiLabelSTAPLE(_images(masks), UNDECIDED, 1e-5, STAPLE_MAX_ITERATIONS)
    ).astype(np.uint8)
    undecided = consensus == UNDECIDED
    consensus[undecided] = majority[undecided]
    return consensus


def binary_staple(masks: Sequence[np.ndarray]) -> tuple[list[float], list[float]] | None:
    """Each mask's STAPLE sensitivity and specificity for one class (boolean ``masks``);
    ``None`` when no mask has a voxel of it."""
    if not any(m.any() for m in masks):
        return None
    staple = sitk.STAPLEImageFilter()
    staple.SetForegroundValue(1.0)
    staple.SetMaximumIterations(STAPLE_MAX_ITERATIONS)
    staple.Execute(_images(masks))
    return [float(v) for v in staple.GetSensitivity()], [float(v) for v in staple.GetSpecificity()]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def agreement(
    readers: Sequence[str],
    masks: Sequence[np.ndarray],
    prediction: np.ndarray,
    class_ids: Sequence[int],
) -> Agreement:
    """Agreement per class between ``masks`` (one per name in ``readers``, same order) and
    their STAPLE and majority-vote consensus; see the module docstring for each number.

    :raises ValueError: fewer than two readers, names and masks that do not pair up, or
        masks that are not all on the prediction's grid.
    """
    if len(readers) != len(masks):
        raise ValueError(f"{len(readers)} reader names for {len(masks)} masks")
    if len(masks) < 2:
        raise ValueError("agreement needs at least two readers' masks")
    for name, mask in zip(readers, masks, strict=True):
        if mask.shape != prediction.shape:
            raise ValueError(
                f"{name}'s mask is {mask.shape}, the prediction {prediction.shape}: not one grid"
            )
    majority = majority_vote(masks)
    staple = staple_consensus(masks, majority)
    ids = [int(c) for c in class_ids]
    pair_dice = {
        (a, b): dice_per_class(masks[a], masks[b], ids)
        for a, b in combinations(range(len(masks)), 2)
    }
    vs_prediction = [dice_per_class(m, prediction, ids) for m in masks]
    vs_staple = [dice_per_class(m, staple, ids) for m in masks]
    per_class: dict[str, Any] = {}
    for c in ids:
        dice = {pair: _rounded(scores[c]) for pair, scores in pair_dice.items()}
        pairs = [{"a": readers[a], "b": readers[b], "dice": d} for (a, b), d in dice.items()]
        estimated = binary_staple([m == c for m in masks])
        per_class[str(c)] = {
            "pairwise_dice": pairs,
            "mean_pairwise_dice": _rounded(mean_defined(dict(enumerate(dice.values())))),
            "vs_prediction": {
                r: _rounded(s[c]) for r, s in zip(readers, vs_prediction, strict=True)
            },
            "vs_staple": {r: _rounded(s[c]) for r, s in zip(readers, vs_staple, strict=True)},
            "sensitivity": {
                r: (_rounded(estimated[0][i]) if estimated else None) for i, r in enumerate(readers)
            },
            "specificity": {
                r: (_rounded(estimated[1][i]) if estimated else None) for i, r in enumerate(readers)
            },
            "voxels": {
                **{r: int((m == c).sum()) for r, m in zip(readers, masks, strict=True)},
                "staple": int((staple == c).sum()),
                "majority": int((majority == c).sum()),
                "prediction": int((prediction == c).sum()),
            },
        }
    report = {"readers": list(readers), "classes": ids, "per_class": per_class}
    return Agreement(report=report, staple=staple, majority=majority)
