"""Training curves: the loss and the validation Dice of a training run, against the iteration.

Two files of a training run's folder (``models/job-<id>/``) hold them:

- ``metrics.json``, which detectron2's ``JSONWriter`` appends one JSON object to per logging
  step (``iteration``, ``total_loss``, ``loss_*``, ``lr``...). Its losses are already detectron2's
  median over the last 20 iterations; that is the "raw" line. A resumed run appends again from
  its checkpoint, so an iteration can appear twice: the later row wins.
- ``history.json``, which the detectron2 plugin's validation hook rewrites after every
  validation (``validations``: ``iteration``, ``mean_dice``, ``dice`` per class, ``loss``...).
  A model version keeps the same list in its ``history`` column.

The smoothed loss is an exponential moving average with TensorBoard's debiasing
(:func:`smooth`, weight :data:`SMOOTHING`). Nothing here knows Flask.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

#: the most points of one line sent to a page (longer runs are thinned evenly)
MAX_POINTS = 2000
#: the weight of the running average in :func:`smooth` (0: no smoothing; TensorBoard's default)
SMOOTHING = 0.6
#: the loss drawn: detectron2's sum of the model's losses
LOSS_KEY = "total_loss"

Points = list[list[float]]


class LossCurves(TypedDict):
    raw: Points
    smoothed: Points
    smoothing: float


class DiceCurves(TypedDict):
    mean: Points
    classes: dict[str, Points]


class Curves(TypedDict):
    loss: LossCurves
    dice: DiceCurves


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(metrics_file: Path | None) -> dict[int, dict[str, Any]]:
    """The rows of a ``metrics.json`` by iteration (the last row of an iteration wins).

    A missing file (or none) is no rows; a line being written (not yet JSON) is skipped.
    """
    if metrics_file is None:
        return {}
    try:
        lines = metrics_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    rows: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and _numeric(row.get("iteration")):
            rows[int(row["iteration"])] = row
    return rows


def read_validations(history_file: Path) -> list[dict[str, Any]]:
    """The validations of a ``history.json`` (none when it is missing or half written)."""
    try:
        data = json.loads(history_file.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    validations = data.get("validations") if isinstance(data, dict) else None
    return [v for v in validations or [] if isinstance(v, dict)]


def smooth(points: Points, weight: float = SMOOTHING) -> Points:
    """An exponential moving average of ``points`` (``[[x, y], ...]``), debiased as TensorBoard
    does: ``s_n = weight * s_(n-1) + (1 - weight) * y_n`` from ``s_0 = 0``, divided by
    ``1 - weight ** n`` so that the first points are not pulled towards zero."""
    out: Points = []
    running = 0.0
    for n, (x, y) in enumerate(points, start=1):
        running = weight * running + (1 - weight) * y
        debias = 1 - weight**n
        out.append([x, running / debias if debias else y])
    return out


def _sorted_points(pairs: Iterable[tuple[int, Any]]) -> Points:
    """``[[x, y], ...]`` by increasing x, one point per x (the last given), finite y only."""
    by_x: dict[int, float] = {}
    for x, y in pairs:
        if _numeric(y):
            by_x[x] = float(y)
    return [[float(x), by_x[x]] for x in sorted(by_x)]


def loss_curves(rows: dict[int, dict[str, Any]], validations: list[dict[str, Any]]) -> LossCurves:
    """The training loss from ``metrics.json`` rows; without any, the loss at each validation."""
    raw = _sorted_points((it, row.get(LOSS_KEY)) for it, row in rows.items())
    if not raw:
        raw = _sorted_points((int(v["iteration"]), v.get("loss")) for v in _valid(validations))
    return {"raw": _thin(raw), "smoothed": _thin(smooth(raw)), "smoothing": SMOOTHING}


def dice_curves(validations: list[dict[str, Any]]) -> DiceCurves:
    """The mean Dice and each class's Dice at each validation."""
    entries = _valid(validations)
    mean = _sorted_points((int(v["iteration"]), v.get("mean_dice")) for v in entries)
    names: list[str] = []
    for entry in entries:
        names.extend(name for name in _class_dice(entry) if name not in names)
    classes = {
        name: _sorted_points((int(v["iteration"]), _class_dice(v).get(name)) for v in entries)
        for name in names
    }
    return {"mean": mean, "classes": {k: v for k, v in classes.items() if v}}


def training_curves(metrics_file: Path | None, validations: list[dict[str, Any]]) -> Curves:
    """The curves of a training run: its ``metrics.json`` and its validations."""
    return {
        "loss": loss_curves(read_metrics(metrics_file), validations),
        "dice": dice_curves(validations),
    }


def _valid(validations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in validations if _numeric(v.get("iteration"))]


def _class_dice(validation: dict[str, Any]) -> dict[str, Any]:
    dice = validation.get("dice")
    return {str(k): v for k, v in dice.items()} if isinstance(dice, dict) else {}


def _thin(points: Points) -> Points:
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
