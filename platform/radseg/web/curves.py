"""Training curves for the jobs page: loss and Dice series from a training job's files.

detectron2's ``JSONWriter`` appends one JSON object per logging step to
``models/job-<id>/metrics.json`` (``iteration``, ``total_loss``, ``loss_*``; a validation adds
``*dice*`` keys); the final validation's Dice per class is in the job's result. Nothing here
knows Flask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_POINTS = 2000


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _wanted(key: str) -> bool:
    lowered = key.lower()
    return "loss" in lowered or "dice" in lowered


def read_curves(
    metrics_file: Path, result: dict[str, Any] | None = None
) -> dict[str, list[list[float]]]:
    """``{series name: [[iteration, value], ...]}`` for every loss and Dice scalar."""
    series: dict[str, list[list[float]]] = {}
    last_iteration = 0.0
    try:
        lines = metrics_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if not isinstance(row, dict) or not _numeric(row.get("iteration")):
            continue
        iteration = float(row["iteration"])
        last_iteration = max(last_iteration, iteration)
        for key, value in row.items():
            if key != "iteration" and _wanted(key) and _numeric(value):
                series.setdefault(key, []).append([iteration, float(value)])
    val = ((result or {}).get("metrics") or {}).get("val")
    if isinstance(val, dict):
        iteration = float((result or {}).get("metrics", {}).get("iterations") or last_iteration)
        for key, value in _flatten(val):
            if "dice" in key.lower() and _numeric(value):
                series.setdefault(f"val/{key}", []).append([iteration, float(value)])
    return {k: _thin(v) for k, v in series.items()}


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, name + "/"))
        else:
            out.append((name, value))
    return out


def _thin(points: list[list[float]]) -> list[list[float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
