"""Segmentation metrics on label maps, 2D ``(y, x)`` or 3D ``(z, y, x)``, spacing-aware.

Per class of one study (:func:`class_metrics`), per study (:func:`study_summary`) and per
dataset (:func:`dataset_summary`). ``spacing`` is always given in the array's axis order, in mm
(``(z, y, x)`` for a volume: reverse :class:`radseg.contracts.Geometry`'s ``(x, y, z)`` spacing,
see :func:`spacing_zyx`).

Definitions, for a prediction ``P`` and a ground truth ``G`` (boolean masks of one class):

* **Dice** ``2|P∩G| / (|P|+|G|)``; **IoU** ``|P∩G| / |P∪G|`` (medpy's ``dc`` and ``jc``).
* **Surfaces** are medpy's: the mask voxels that a one-voxel erosion with face connectivity
  removes (voxels outside the array count as background). A surface distance is the Euclidean
  distance, in mm, from a surface voxel of one mask to the nearest surface voxel of the other.
  This is the definition of ``medpy.metric.binary`` (``hd95``, ``assd``), with which these
  metrics agree exactly. DeepMind's ``surface-distance`` package instead puts surface elements
  on the voxel corners and weights them by their area: on the same masks its numbers differ by
  up to about a voxel (tests show both and how close they are).
* **HD95**: the 95th percentile (numpy's linear interpolation) of the distances of both
  directions pooled (medpy's ``hd95``).
* **ASSD**: the mean of the surface distances of both directions pooled,
  ``(Σd_PG + Σd_GP) / (|∂P| + |∂G|)`` (Heimann et al. 2009; medpy's ``assd`` from 0.5). It
  weighs each surface by its size; ``surface-distance``'s ``compute_average_surface_distance``
  returns the two directed means instead.
* **Surface Dice at τ mm**: the share of the surface voxels of both masks that lie within τ of
  the other mask's surface: ``(|{d_PG ≤ τ}| + |{d_GP ≤ τ}|) / (|∂P| + |∂G|)``. This is
  Nikolov et al.'s normalised surface Dice with every surface voxel weighing the same (rather
  than ``surface-distance``'s surfel areas). With a tolerance below the slice thickness the
  two definitions can differ by ~0.1 (distances on a grid take few values, and a tolerance
  between two of them moves many voxels at once); pick tolerances ≥ the largest spacing.
* **Volume difference**: ``(|P| - |G|) · voxel volume`` in mm³ (mm² in 2D), and relative to
  ``|G|``.

Empty masks (a class not in the truth, not predicted, or both):

==================  ==============  ==============  =========================
case                Dice, IoU       HD95, ASSD      surface Dice
==================  ==============  ==============  =========================
both empty          ``None``        ``None``        ``None``
one of them empty   0.0             ``inf``         0.0
==================  ==============  ==============  =========================

``None`` means "undefined": a correct empty answer is neither rewarded (1.0 would inflate the
means) nor punished (0.0). ``inf`` means "no surface to measure to"; JSON output writes it as
``null`` with ``*_inf`` counts in the summaries. Means over classes or studies skip ``None``
and ``inf`` and say how many values they used (``n``) and how many were infinite.
The relative volume difference is ``None`` when ``|G| = 0``. Voxels whose truth is the ignore
label (255) are left out of every metric (set to background in both masks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

IGNORE_LABEL = 255
#: the default surface Dice tolerance in mm
DEFAULT_TOLERANCE_MM = 2.0
#: metrics every summary reports, in table order
METRIC_NAMES = ("dice", "iou", "hd95", "assd", "surface_dice", "volume_diff_mm3", "volume_diff_rel")


@dataclass(frozen=True)
class BinaryMetrics:
    """The metrics of one class in one image or volume (see the module docstring)."""

    dice: float | None
    iou: float | None
    hd95: float | None
    assd: float | None
    surface_dice: float | None
    volume_diff_mm3: float
    volume_diff_rel: float | None
    predicted_voxels: int
    truth_voxels: int

    def to_json(self) -> dict[str, float | int | None]:
        """A JSON-able dict: ``inf`` becomes ``None``."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def spacing_zyx(spacing_xyz: Sequence[float]) -> tuple[float, ...]:
    """A :class:`~radseg.contracts.Geometry` spacing ``(x, y, z)`` in array order ``(z, y, x)``."""
    return tuple(float(v) for v in reversed(spacing_xyz))


def binary_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> BinaryMetrics:
    """All metrics of the boolean masks ``prediction`` and ``truth`` (same shape, 2D or 3D)."""
    pred = np.asarray(prediction, dtype=bool)
    true = np.asarray(truth, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {true.shape}")
    sampling = _sampling(spacing, pred.ndim)
    voxel_volume = float(np.prod(sampling))
    n_pred = int(np.count_nonzero(pred))
    n_true = int(np.count_nonzero(true))
    overlap = int(np.count_nonzero(pred & true))
    volume_diff = (n_pred - n_true) * voxel_volume
    volume_rel = (n_pred - n_true) / n_true if n_true else None
    if n_pred == 0 and n_true == 0:
        return BinaryMetrics(None, None, None, None, None, 0.0, None, 0, 0)
    dice = 2 * overlap / (n_pred + n_true)
    iou = overlap / (n_pred + n_true - overlap)
    if n_pred == 0 or n_true == 0:
        return BinaryMetrics(
            dice, iou, math.inf, math.inf, 0.0, volume_diff, volume_rel, n_pred, n_true
        )
    d_pred, d_true = surface_distances(pred, true, sampling)
    hd95 = float(np.percentile(np.concatenate([d_pred, d_true]), 95))
    assd = float((d_pred.sum() + d_true.sum()) / (d_pred.size + d_true.size))
    within = np.count_nonzero(d_pred <= tolerance_mm) + np.count_nonzero(d_true <= tolerance_mm)
    surface_dice = within / (d_pred.size + d_true.size)
    return BinaryMetrics(
        dice, iou, hd95, assd, float(surface_dice), volume_diff, volume_rel, n_pred, n_true
    )


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to ``b``'s surface, and of ``b`` to ``a``.

    Both masks must be non-empty. The work is done on the bounding box of both masks plus one
    voxel, which gives the same distances as the whole array (every nearest surface voxel lies
    inside the box) at a fraction of the cost on a CT volume.
    """
    from scipy import ndimage  # scipy comes with the models extra; the rest needs only numpy

    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = _sampling(spacing, a.ndim)
    box = _bounding_box(a | b, margin=1)
    a, b = a[box], b[box]
    footprint = ndimage.generate_binary_structure(a.ndim, 1)
    # Voxels outside the array are background (border_value=0), as in medpy; the margin keeps
    # the crop from creating surface where the full array has none.
    surface_a = a ^ ndimage.binary_erosion(a, structure=footprint, border_value=0)
    surface_b = b ^ ndimage.binary_erosion(b, structure=footprint, border_value=0)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)
    return np.asarray(to_b[surface_a]), np.asarray(to_a[surface_b])


def class_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    class_ids: Iterable[int],
    spacing: Sequence[float] | None = None,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = IGNORE_LABEL,
) -> dict[int, BinaryMetrics]:
    """Metrics per class id of two label maps (one study, or one slice)."""
    prediction = np.asarray(prediction)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {prediction.shape}, truth {truth.shape}")
    valid = truth != ignore_label if ignore_label is not None else np.ones(truth.shape, bool)
    return {
        c: binary_metrics((prediction == c) & valid, truth == c, spacing, tolerance_mm=tolerance_mm)
        for c in class_ids
    }


def summarise(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, median, std and min/max of the finite values; counts of the used and inf ones."""
    values = list(values)
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    infinite = sum(1 for v in values if v is not None and math.isinf(v))
    if finite.size == 0:
        return {
            "mean": None,
            "median": None,
            "std": None,
            "min": None,
            "max": None,
            "n": 0,
            "inf": infinite,
        }
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        "inf": infinite,
    }


def study_summary(per_class: Mapping[str, BinaryMetrics]) -> dict[str, object]:
    """One study: each class's metrics and, per metric, the mean over the classes."""
    return {
        "per_class": {name: m.to_json() for name, m in per_class.items()},
        "mean": {
            metric: summarise(getattr(m, metric) for m in per_class.values())["mean"]
            for metric in METRIC_NAMES
        },
    }


def dataset_summary(studies: Mapping[str, Mapping[str, BinaryMetrics]]) -> dict[str, object]:
    """A dataset: per class and metric, :func:`summarise` over the studies; and per study.

    ``studies`` maps a study key (a series UID) to its per-class metrics (class name → metrics).
    ``mean_dice`` is the mean over classes of each class's mean Dice over studies.
    """
    class_names: list[str] = []
    for per_class in studies.values():
        class_names.extend(n for n in per_class if n not in class_names)
    per_class_summary = {
        name: {
            metric: summarise(
                getattr(per_class[name], metric)
                for per_class in studies.values()
                if name in per_class
            )
            for metric in METRIC_NAMES
        }
        for name in class_names
    }
    class_dice = [s["dice"]["mean"] for s in per_class_summary.values()]
    defined = [v for v in class_dice if v is not None]
    return {
        "studies": {key: study_summary(per_class) for key, per_class in studies.items()},
        "per_class": per_class_summary,
        "mean_dice": float(np.mean(defined)) if defined else None,
        "mean": {
            metric: summarise(s[metric]["mean"] for s in per_class_summary.values())["mean"]
            for metric in METRIC_NAMES
        },
    }


def dice_per_class(
    prediction: np.ndarray, truth: np.ndarray, class_ids: Iterable[int]
) -> dict[int, float | None]:
    """Dice only, per class id, in one pass over the voxels (``None``: absent from both)."""
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


def mean_defined(scores: Mapping[int, float | None]) -> float | None:
    values = [v for v in scores.values() if v is not None]
    return float(np.mean(values)) if values else None


def _sampling(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sampling = tuple(float(s) for s in spacing)
    if len(sampling) != ndim:
        raise ValueError(f"spacing {sampling} has {len(sampling)} values, the masks {ndim} axes")
    if any(not s > 0 for s in sampling):
        raise ValueError(f"spacing must be positive, got {sampling}")
    return sampling


def _bounding_box(mask: np.ndarray, *, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(0, hits[0] - margin), min(mask.shape[axis], hits[-1] + 1 + margin)))
    return tuple(box)


def _finite_or_none(value: float | int | None) -> float | int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
