"""The anatomical planes of the image endpoints: which plane a request names, cut through the
voxels as :func:`radseg.imaging.orientation.plane_layout` says for the ``viewer_convention``.
Shared by the series' and predictions' images (:mod:`radseg.web.slices`) and the readers'
(:mod:`radseg.web.readings`), as is what the viewer's pages are told of the planes
(:func:`viewer_planes_of`, for :mod:`radseg.web.studies` and :mod:`radseg.web.readings`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from flask import abort

from radseg.contracts import Geometry
from radseg.db.models import Series
from radseg.imaging.orientation import PLANES, Plane, PlaneLayout, plane_layout, viewer_planes
from radseg.web.context import current_platform


def layout_of(plane: str, geometry: dict[str, Any]) -> PlaneLayout:
    """The layout of ``plane`` (404 naming the planes when it is none of them)."""
    if plane not in PLANES:
        abort(404, f"there is no plane {plane[:40]!r}; the planes are {', '.join(PLANES)}")
    convention = current_platform().settings.viewer_convention
    return plane_layout(Geometry.from_dict(geometry), cast(Plane, plane), convention)


def plane_of(
    plane: str, index: int, geometry: dict[str, Any], what: str
) -> tuple[PlaneLayout, Callable[[np.ndarray], np.ndarray]]:
    """The layout of ``plane`` and what picks its plane ``index`` out of a volume (``what``
    names the volume in the 404 of an index it does not have)."""
    layout = layout_of(plane, geometry)
    return layout, plane_cut(layout, index, what)


def viewer_planes_of(series: Series) -> dict[str, object] | None:
    """:func:`radseg.imaging.orientation.viewer_planes` of ``series`` in the configured
    convention; ``None`` for a geometry without its direction (one plane, no letters)."""
    try:
        return viewer_planes(
            Geometry.from_dict(series.geometry),
            current_platform().settings.viewer_convention,
            thickness=series.slice_thickness,
        )
    except (KeyError, TypeError, ValueError):
        return None


def plane_cut(layout: PlaneLayout, index: int, what: str) -> Callable[[np.ndarray], np.ndarray]:
    """What picks plane ``index`` out of a volume (404 when it has no such plane)."""

    def pick(volume: np.ndarray) -> np.ndarray:
        count = volume.shape[2 - layout.axis]
        if not 0 <= index < count:
            abort(
                404,
                f"{what} has {layout.plane} planes 0 to {count - 1}; there is no plane {index}",
            )
        return layout.cut(volume, index)

    return pick
