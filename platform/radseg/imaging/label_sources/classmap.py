"""Class maps from several sources put together without silent id collisions.

A class map is a list of :class:`~radseg.contracts.ClassInfo` (id 1-254, unique ids and names).
Two maps *agree* when every name they share has the same id and every id they share has the
same name. When they disagree, :func:`merge_class_maps` either raises
:class:`~radseg.errors.InputError` naming every conflict, or — with ``remap="by_name"`` — keeps
the first map's ids, gives a class of the second map the id its name has in the first, and new
names the lowest free ids; the returned lookup table turns the second source's labels into the
merged ids (:func:`apply_lut`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from radseg.contracts import ClassInfo
from radseg.errors import InputError
from radseg.imaging.labels import IGNORE_LABEL

__all__ = ["apply_lut", "identity_lut", "merge_class_maps", "remap_by_name"]

Remap = Literal["error", "by_name"]


def identity_lut() -> np.ndarray:
    """A uint8 lookup table that maps every label to itself."""
    return np.arange(256, dtype=np.uint8)


def apply_lut(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` as uint8, skipped when ``lut`` is the identity."""
    if np.array_equal(lut, identity_lut()):
        return labels
    return lut[labels]


def merge_class_maps(
    first: Sequence[ClassInfo], second: Sequence[ClassInfo], *, remap: Remap = "error"
) -> tuple[list[ClassInfo], np.ndarray]:
    """Merge ``second`` into ``first``; return the merged map and the LUT for ``second``'s labels.

    :param remap: ``"error"`` (default) refuses any conflict; ``"by_name"`` keeps ``first``'s
        ids and renumbers ``second``'s classes by name.
    :raises InputError: conflicting ids or names with ``remap="error"``, or no free id left.
    """
    by_id = {c.id: c for c in first}
    by_name = {c.name: c for c in first}
    conflicts = []
    for c in second:
        same_id, same_name = by_id.get(c.id), by_name.get(c.name)
        if same_id is not None and same_id.name != c.name:
            conflicts.append(
                f'id {c.id} is "{same_id.name}" in one source and "{c.name}" in the other'
            )
        if same_name is not None and same_name.id != c.id:
            conflicts.append(
                f'"{c.name}" has id {same_name.id} in one source and {c.id} in the other'
            )
    lut = identity_lut()
    if not conflicts:
        merged = dict(by_id)
        for c in second:
            merged.setdefault(c.id, c)
        return sorted(merged.values(), key=lambda c: c.id), lut
    if remap != "by_name":
        raise InputError(
            "the class maps of the label sources disagree: "
            + "; ".join(dict.fromkeys(conflicts))
            + '. Give one class map for all of them, or merge by name (remap="by_name")'
        )
    merged_list = list(first)
    used = set(by_id)
    for c in second:
        if c.name in by_name:
            lut[c.id] = by_name[c.name].id
            continue
        new_id = c.id if c.id not in used else _lowest_free(used)
        used.add(new_id)
        added = replace(c, id=new_id)
        by_name[c.name] = added
        merged_list.append(added)
        lut[c.id] = new_id
    return sorted(merged_list, key=lambda c: c.id), lut


def remap_by_name(
    labels: np.ndarray, source: Sequence[ClassInfo], target: Sequence[ClassInfo], *, where: str
) -> np.ndarray:
    """Relabel ``labels`` (ids of ``source``) with the ids ``target`` gives the same names.

    Used when a class map is given for a source that names its own classes (SEG segments,
    RTSTRUCT ROIs, Slicer segments): names decide, never the source's numbering.

    :raises InputError: a class present in ``labels`` whose name ``target`` does not list.
    """
    wanted = {c.name: c.id for c in target}
    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist())
    missing = [c.name for c in source if c.id in present and c.name not in wanted]
    if missing:
        raise InputError(
            f"{where}: the given class map has no class named {', '.join(repr(m) for m in missing)}"
            f" (it lists {', '.join(repr(n) for n in wanted) or 'nothing'}); add them or rename "
            "the segments"
        )
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    for c in source:
        lut[c.id] = wanted.get(c.name, 0)
    return lut[labels]


def _lowest_free(used: set[int]) -> int:
    for candidate in range(1, IGNORE_LABEL):
        if candidate not in used:
            return candidate
    raise InputError("more than 254 classes; a label volume holds at most 254")
