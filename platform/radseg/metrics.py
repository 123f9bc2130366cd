"""Segmentation metrics on label volumes ``(z, y, x)``.

Dice for each class ``c`` is ``2|P∩G| / (|P|+|G|)``. When a class is absent from both the
prediction and the ground truth the score is undefined and reported as ``None`` (not 1.0, which
would inflate means, and not 0.0, which would punish a correct empty answer); means skip it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def dice_per_class(
    prediction: np.ndarray, truth: np.ndarray, class_ids: Iterable[int]
) -> dict[int, float | None]:
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {prediction.shape}, truth {truth.shape}")
    # one pass over the voxels: a joint histogram of (truth, prediction) pairs
    n = int(max(prediction.max(initial=0), truth.max(initial=0))) + 1
    joint = np.bincount(
        truth.astype(np.int64).ravel() * n + prediction.astype(np.int64).ravel(), minlength=n * n
    ).reshape(n, n)
    out: dict[int, float | None] = {}
    for c in class_ids:
        if c >= n:
            out[c] = None
            continue
        both = joint[c, c]
        total = joint[c, :].sum() + joint[:, c].sum()
        out[c] = None if total == 0 else float(2 * both / total)
    return out


def mean_defined(scores: dict[int, float | None]) -> float | None:
    values = [v for v in scores.values() if v is not None]
    return float(np.mean(values)) if values else None
