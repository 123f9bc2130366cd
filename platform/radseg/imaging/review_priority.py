"""Where the model doubts: per-class quality signals of a prediction and its review priority.

A prediction is ranked for review by what it shows of itself, without any ground truth:

* **uncertainty** (when the backend gives a per-voxel map in [0, 1], see
  :class:`radseg.contracts.PredictOutput`): for each predicted class, the mean uncertainty
  inside the structure (its in-plane erosion) and on its border (the in-plane ring between
  its dilation and its erosion), and its *doubtful share*: the uncertainty summed over the
  structure grown by one voxel in-plane, divided by the structure's voxel count: about the
  share of its voxels the model is unsure of, on the scale of 1 − Dice;
* **volume** (mL) against that class's volumes in the model's training split;
* **connected components** (3-D, 26-connected) against the most any training series has;
* **slice-to-slice inconsistency**: 1 − the mean Dice of the structure's masks on consecutive
  slices, over its extent (a gap slice counts as Dice 0), against the training split's 95th
  percentile.

The training split's statistics (:func:`reference_from_dataset`) are computed once per model
version and kept with it.

The rule (:func:`review_priority`), version :data:`RULE`: every signal of every class becomes a
score in [0, 1] —

* doubt: the doubtful share itself (capped at 1);
* volume: ``log2(v / hi) / 2`` above ``hi = max(p95, 1.25 × median)``, ``log2(lo / v) / 2``
  below ``lo = min(p05, 0.8 × median)`` (so 2.5× a median that is also the p95 scores 0.5); a
  class missing that half or more of the training series have scores 1; a class no training
  series has scores 0.5;
* components: 0.2 per component beyond the training maximum;
* inconsistency: twice its excess over the training p95;

capped at 1 each. A class's score is its worst signal's; the priority is the mean of the class
scores over the classes the prediction has or misses (a class neither predicted nor expected
does not count), so it reads like the share of structures that need a correction, on the scale
of the error it ranks (1 − the mean Dice over the classes). Its reason is the sentence of the
largest score ("lung_left in 3 parts; training has 1", "liver volume 2.4× the training
median"). A higher priority is reviewed first. (A first version took the largest score plus a
tenth of all the others; on the benchmark it ranked worse than the mean — see
docs/benchmarks.md, "Review priority".)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from radseg.contracts import ClassInfo

#: the version of the rule; stored with each score so a changed rule is visible
RULE = "doubt-1"
#: stored uncertainty maps are uint8: value = round(255 × uncertainty)
UNCERTAINTY_LEVELS = 255

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = [[False, True, False], [True, True, True], [False, True, False]]
_FULL_3D = np.ones((3, 3, 3), dtype=bool)


# --- the stored map --------------------------------------------------------------------------


def quantise_uncertainty(uncertainty: np.ndarray) -> np.ndarray:
    """Float uncertainty in [0, 1] → uint8 0..255 (values outside are clipped, NaN → 255)."""
    u = np.nan_to_num(np.asarray(uncertainty, dtype=np.float32), nan=1.0)
    return np.rint(np.clip(u, 0.0, 1.0) * UNCERTAINTY_LEVELS).astype(np.uint8)


def dequantise_uncertainty(stored: np.ndarray) -> np.ndarray:
    """uint8 0..255 → float32 in [0, 1] (within 1/510 of what was quantised)."""
    return np.asarray(stored, dtype=np.float32) / UNCERTAINTY_LEVELS


def slice_profile(uncertainty: np.ndarray) -> list[float]:
    """The mean uncertainty of each slice ``z`` (the viewer's strip and "next doubtful slice")."""
    u = np.asarray(uncertainty, dtype=np.float32)
    if u.ndim != 3 or u.size == 0:
        return []
    return [round(float(v), 4) for v in u.reshape(u.shape[0], -1).mean(axis=1)]


def doubtful_slices(profile: Sequence[float], limit: int = 50) -> list[int]:
    """Slice indices from the most doubtful down (ties: the lower index first), at most
    ``limit``, leaving out slices with no uncertainty at all."""
    order = sorted((i for i, v in enumerate(profile) if v > 0), key=lambda i: (-profile[i], i))
    return order[:limit]


# --- signals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeStats:
    """What a class's mask shows of itself in one series."""

    volume_ml: float
    components: int
    inconsistency: float


def shape_stats(mask: np.ndarray, voxel_ml: float) -> ShapeStats:
    """Volume, 26-connected component count and slice-to-slice inconsistency of a boolean
    ``(z, y, x)`` mask (see the module docstring)."""
    count = int(mask.sum())
    if count == 0:
        return ShapeStats(0.0, 0, 0.0)
    _, components = ndimage.label(mask, structure=_FULL_3D)
    return ShapeStats(count * voxel_ml, int(components), _inconsistency(mask))


def _inconsistency(mask: np.ndarray) -> float:
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(areas)
    first, last = int(present[0]), int(present[-1])
    if first == last:
        return 0.0
    m = mask[first : last + 1]
    a = areas[first : last + 1].astype(np.float64)
    overlap = (m[:-1] & m[1:]).reshape(len(m) - 1, -1).sum(axis=1)
    total = a[:-1] + a[1:]
    dice = np.where(total > 0, 2 * overlap / np.maximum(total, 1), 0.0)
    return float(1.0 - dice.mean())


def voxel_ml(spacing_xyz: Sequence[float]) -> float:
    """One voxel's volume in mL for a spacing ``(x, y, z)`` in mm."""
    return float(np.prod([abs(float(s)) for s in spacing_xyz[:3]])) / 1000.0


def class_signals(
    labels: np.ndarray,
    uncertainty: np.ndarray | None,
    classes: Sequence[ClassInfo],
    spacing_xyz: Sequence[float],
) -> dict[str, dict[str, Any]]:
    """The signals of each class (by name) of a predicted label volume ``(z, y, x)``, with the
    float uncertainty map in [0, 1] of the same shape when there is one."""
    if uncertainty is not None and uncertainty.shape != labels.shape:
        raise ValueError(f"uncertainty {uncertainty.shape} does not match labels {labels.shape}")
    ml = voxel_ml(spacing_xyz)
    out: dict[str, dict[str, Any]] = {}
    for info in classes:
        # each class within its bounding box, one voxel of margin in-plane: the same numbers,
        # a fraction of the work on a whole CT
        box = _box(labels == info.id)
        mask = labels[box] == info.id
        stats = shape_stats(mask, ml)
        signals: dict[str, Any] = {
            "volume_ml": round(stats.volume_ml, 3),
            "components": stats.components,
            "inconsistency": round(stats.inconsistency, 4),
        }
        if uncertainty is not None and stats.components:
            grown = ndimage.binary_dilation(mask, structure=_IN_PLANE)
            inner = ndimage.binary_erosion(mask, structure=_IN_PLANE, border_value=1)
            ring = grown & ~inner
            u = uncertainty[box]
            signals["uncertainty_inside"] = round(_mean(u, inner), 4)
            signals["uncertainty_border"] = round(_mean(u, ring), 4)
            doubt = float(u[grown].sum(dtype=np.float64)) / int(mask.sum())
            signals["doubtful_share"] = round(doubt, 4)
        out[info.name] = signals
    return out


def _box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` ``(z, y, x)``, grown by one voxel in y and x."""
    if not mask.any():
        return (slice(0, 0), slice(0, 0), slice(0, 0))
    out = []
    for axis, margin in ((0, 0), (1, 1), (2, 1)):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        out.append(slice(max(0, int(present[0]) - margin), int(present[-1]) + 1 + margin))
    return out[0], out[1], out[2]


def _mean(values: np.ndarray, where: np.ndarray) -> float:
    n = int(where.sum())
    return float(values[where].sum(dtype=np.float64)) / n if n else 0.0


# --- the training split's statistics -----------------------------------------------------------


def reference_stats(
    per_series: Iterable[Mapping[str, ShapeStats]], classes: Sequence[ClassInfo]
) -> dict[str, Any]:
    """Per class: how many training series there are and have it, the quantiles of its volume,
    the median and most components, the median and p95 inconsistency (over the series that
    have it)."""
    seen: dict[str, list[ShapeStats]] = defaultdict(list)
    total = 0
    for stats in per_series:
        total += 1
        for name, s in stats.items():
            if s.components:
                seen[name].append(s)
    out: dict[str, Any] = {"rule": RULE, "series": total, "classes": {}}
    for info in classes:
        found = seen.get(info.name, [])
        entry: dict[str, Any] = {"present": len(found)}
        if found:
            volumes = np.array([s.volume_ml for s in found])
            components = np.array([s.components for s in found])
            inconsistency = np.array([s.inconsistency for s in found])
            entry.update(
                volume_ml={
                    "median": round(float(np.median(volumes)), 3),
                    "p05": round(float(np.percentile(volumes, 5)), 3),
                    "p95": round(float(np.percentile(volumes, 95)), 3),
                },
                components={
                    "median": float(np.median(components)),
                    "max": int(components.max()),
                },
                inconsistency={
                    "median": round(float(np.median(inconsistency)), 4),
                    "p95": round(float(np.percentile(inconsistency, 95)), 4),
                },
            )
        out["classes"][info.name] = entry
    return out


def reference_from_dataset(
    dataset_dir: Path, classes: Sequence[ClassInfo], split: str = "train"
) -> dict[str, Any]:
    """:func:`reference_stats` of a built dataset version's ``split``, read back from its label
    PNGs (see :mod:`radseg.imaging.dataset_version`). A dataset version leaves out only slices
    that have no class at all, so each series' volumes and 3-D components are exact: a left-out
    slice would have separated the components on either side of it anyway."""
    from PIL import Image

    path = Path(dataset_dir) / "annotations" / f"instances_{split}.json"
    coco = json.loads(path.read_text(encoding="utf-8"))
    by_series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for image in coco.get("images", []):
        by_series[str(image["series_instance_uid"])].append(image)
    per_series = []
    for images in by_series.values():
        depth = max(int(i["slice_index"]) for i in images) + 1
        height, width = int(images[0]["height"]), int(images[0]["width"])
        volume = np.zeros((depth, height, width), dtype=np.uint8)
        for image in images:
            with Image.open(Path(dataset_dir) / image["sem_seg_file_name"]) as png:
                volume[int(image["slice_index"])] = np.asarray(png, dtype=np.uint8)
        volume[volume == 255] = 0  # "ignore" is no class
        ml = voxel_ml(images[0].get("spacing") or (1.0, 1.0, 1.0))
        per_series.append({c.name: shape_stats(volume == c.id, ml) for c in classes})
    return reference_stats(per_series, classes)


# --- the rule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Priority:
    """A prediction's review priority: ``score`` (higher first), its main ``reason`` in words,
    and ``scores``: every class's score per signal."""

    score: float
    reason: str
    scores: dict[str, dict[str, float]]


def _times(value: float) -> str:
    if value < 0.1:
        return f"{value:.2g}×"
    return f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def _class_scores(
    name: str, signals: Mapping[str, Any], reference: Mapping[str, Any] | None, series: int
) -> list[tuple[float, str, str]]:
    """``(score, signal, reason)`` for each signal of one class that can be scored."""
    out: list[tuple[float, str, str]] = []
    doubt = signals.get("doubtful_share")
    if doubt is not None:
        out.append(
            (min(1.0, float(doubt)), "doubt", f"{name}: {min(doubt, 1.0):.0%} of it uncertain")
        )
    if reference is None or series == 0:
        return out
    volume, present = float(signals["volume_ml"]), int(reference.get("present", 0))
    if present == 0:
        if volume > 0:
            out.append((0.5, "volume", f"{name} predicted; no training series has it"))
        return out
    ref_volume = reference["volume_ml"]
    median = float(ref_volume["median"])
    if volume <= 0:
        if present * 2 >= series:
            out.append(
                (1.0, "volume", f"{name} missing; training has it in {present} of {series} series")
            )
        return out
    hi = max(float(ref_volume["p95"]), 1.25 * median)
    lo = min(float(ref_volume["p05"]), 0.8 * median)
    said = f"{name} volume {_times(volume / median)} the training median" if median > 0 else ""
    if median > 0 and volume > hi:
        out.append((min(1.0, math.log2(volume / hi) / 2), "volume", said))
    elif median > 0 and volume < lo:
        out.append((min(1.0, math.log2(lo / volume) / 2), "volume", said))
    most = int(reference["components"]["max"])
    parts = int(signals["components"])
    if parts > most:
        has = f"{most}" if reference["components"]["median"] == most else f"≤ {most}"
        said = f"{name} in {parts} parts; training has {has}"
        out.append((min(1.0, 0.2 * (parts - most)), "components", said))
    p95 = float(reference["inconsistency"]["p95"])
    jump = float(signals["inconsistency"])
    if jump > p95:
        out.append(
            (
                min(1.0, 2 * (jump - p95)),
                "inconsistency",
                f"{name} changes shape between slices ({jump:.2f}; training ≤ {p95:.2f})",
            )
        )
    return out


def review_priority(
    signals: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Any] | None
) -> Priority:
    """The rule of the module docstring over :func:`class_signals`' output and the model's
    :func:`reference_stats` (``None``: not known, only the uncertainty counts)."""
    series = int(reference.get("series", 0)) if reference else 0
    ref_classes: Mapping[str, Any] = reference.get("classes", {}) if reference else {}
    scores: dict[str, dict[str, float]] = {}
    worst: list[tuple[float, str]] = []  # (score, reason) of each class that counts
    for name, values in signals.items():
        ref = ref_classes.get(name) if reference else None
        scored = _class_scores(name, values, ref, series)
        if scored:
            scores[name] = {signal: round(score, 4) for score, signal, _ in scored}
        if scored or float(values.get("volume_ml", 0)) > 0:
            top = max(scored, key=lambda s: s[0], default=(0.0, "", ""))
            worst.append((top[0], top[2]))
    if not worst:
        return Priority(0.0, "nothing unusual", scores)
    total = sum(score for score, _ in worst) / len(worst)
    top_score, top_reason = max(worst, key=lambda w: w[0])
    reason = top_reason if top_score > 0 else "nothing unusual"
    return Priority(round(total, 4), reason, scores)
