"""Legends: the classes a label volume is drawn with (id, name, colour), from a class map.

A model version's ``config["classes"]`` and a label set's ``classes`` are lists of
``{id, name, color}``; :func:`legend` turns them (and the label values actually present in a
volume) into :class:`LegendEntry` rows sorted by id. The viewer draws with them, a review
decision's class is checked against them, and a correction's label set stores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radseg.imaging.palette import class_color


@dataclass(frozen=True)
class LegendEntry:
    id: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": self.hex}


def parse_color(value: Any) -> tuple[int, int, int] | None:
    """``"#rrggbb"``, ``"rrggbb"`` or ``[r, g, b]`` → a tuple; ``None`` if it is neither."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                return None
        return None
    if isinstance(value, Sequence) and len(value) == 3:
        try:
            r, g, b = (int(v) for v in value)
        except (TypeError, ValueError):
            return None
        if all(0 <= v <= 255 for v in (r, g, b)):
            return (r, g, b)
    return None


def legend(
    classes: Iterable[Mapping[str, Any]] | None, present: Iterable[int] = ()
) -> list[LegendEntry]:
    """Legend entries from a model version's ``config["classes"]`` (``{id, name, color}``).

    Classes without a colour get :func:`radseg.imaging.palette.class_color`; label values in
    ``present`` that the model version does not describe are listed as ``class N``.
    """
    entries: dict[int, LegendEntry] = {}
    for item in classes or ():
        try:
            class_id = int(item["id"])
        except (KeyError, TypeError, ValueError):
            continue
        if not 0 < class_id < 256:
            continue
        color = parse_color(item.get("color")) or class_color(class_id)
        entries[class_id] = LegendEntry(
            class_id, str(item.get("name") or f"class {class_id}"), color
        )
    for class_id in present:
        if 0 < class_id < 256 and class_id not in entries:
            entries[class_id] = LegendEntry(class_id, f"class {class_id}", class_color(class_id))
    return [entries[k] for k in sorted(entries)]


def prediction_classes(prediction: Any) -> list[Any]:
    """The ``{id, name, color}`` classes a prediction's model version was trained on."""
    classes = (prediction.model_version.config or {}).get("classes")
    return classes if isinstance(classes, list) else []


def labels_present(labels: np.ndarray) -> list[int]:
    counts = np.bincount(labels.astype(np.uint8, copy=False).ravel(), minlength=256)
    return [int(i) for i in np.flatnonzero(counts) if i > 0]
