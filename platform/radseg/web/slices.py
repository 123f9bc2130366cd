"""Slice images for the viewer, rendered on the server (no GPU, no client-side decoding).

``GET /series/<id>/slice/<z>.png?wl=&ww=`` is one HU slice through a window;
``GET /predictions/<id>/overlay/<z>.png?hide=2,3`` the prediction's labels on that slice, each
class in its colour over a transparent background (``hide`` lists classes to leave out);
``GET /label-sets/<id>/overlay/<z>.png`` the same for ground truth or a corrected mask;
``GET /predictions/<id>/uncertainty/<z>.png`` the prediction's uncertainty map on that slice as a
heat map (yellow to red, transparent where the model is sure; 404 when it has none).
Each has a twin for the anatomical planes, ``.../<plane>/<index>.png`` after the same prefix
(``/series/<id>/slice/coronal/12.png``, ``/predictions/<id>/overlay/sagittal/40.png``...):
``plane`` is axial, coronal or sagittal, cut through the voxels and turned to the display
convention as :func:`radseg.imaging.orientation.plane_layout` says (``viewer_convention``), and
``index`` counts along the voxel axis nearest the plane's normal.
``GET /series/<id>/voxel?i=&j=&k=`` answers one voxel's HU (from the HU volume, not a window)
and its centre in mm (LPS).
The overlays, of slices and of planes alike, take ``mode``: ``fill`` (the default), ``outline``
(class boundaries only) or, on a prediction's overlay, ``difference&labels=<label set id>``
(where the prediction and that label set of the same series disagree: false positives and
false negatives in
:data:`radseg.web.render.DIFFERENCE_COLORS`).
Volumes are read once per process (see :class:`radseg.web.render.VolumeCache`); each page view,
not each slice, is audited. What an image needs from its row (the file, the class colours) is
kept per process for ``RADSEG_ROW_CACHE_SECONDS`` (2 s, :class:`radseg.web.cache.TTLCache`), so
scrolling through a series reads the database about once every two seconds instead of once per
slice; a row that is gone is noticed within that time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from sqlalchemy.orm import joinedload

from radseg.contracts import Geometry
from radseg.db.models import LabelSet, Prediction, Series
from radseg.imaging.legend import legend, prediction_classes
from radseg.imaging.orientation import PlaneLayout, index_to_lps
from radseg.roles import VIEWERS
from radseg.web import plane_cuts, render
from radseg.web.auth import roles_required
from radseg.web.cache import TTLCache
from radseg.web.context import current_platform, db, images, volumes
from radseg.web.schemas import VoxelQuery
from radseg.web.validation import MAX_ROW_ID, query_args
from radseg.workflows.lookup import get_row

bp = Blueprint("slices", __name__)

DEFAULT_LEVEL = 40.0
DEFAULT_WIDTH = 400.0
#: beyond the HU range of any scanner; keeps nonsense out of the cache keys
MAX_HU = 100_000.0

ROWS = "radseg.image-rows"
#: what an image needs from its row, by (kind, id): a file path, or a path and a legend
RowCache = TTLCache[tuple[str, int], Any]


def _row(kind: str, row_id: int, read: Callable[[], Any]) -> Any:
    """``read()`` (from the database) unless this process read it less than the TTL ago."""
    cache = current_app.extensions.get(ROWS)
    if cache is None:
        ttl = float(current_app.config.get("RADSEG_ROW_CACHE_SECONDS", 2.0))
        cache = current_app.extensions.setdefault(ROWS, RowCache(ttl))
    return cast(RowCache, cache).get_or_read((kind, row_id), read)


def _float_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        abort(400, f"{name} must be a number, got {raw!r}")
    if not math.isfinite(value) or abs(value) > MAX_HU:
        abort(400, f"{name} must be a finite number within ±{MAX_HU:g}")
    return value


def _hidden_classes() -> list[int]:
    raw = request.args.get("hide", "")
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        abort(400, f"hide must be class ids separated by commas, got {raw!r}")


def _mode() -> str:
    raw = request.args.get("mode", "fill")
    if raw not in render.OVERLAY_MODES:
        abort(400, f"mode must be one of {', '.join(render.OVERLAY_MODES)}; got {raw!r}")
    return raw


def _labels_arg() -> int:
    raw = request.args.get("labels", "")
    if not raw.isdecimal() or not 0 < int(raw) <= MAX_ROW_ID:
        abort(
            400,
            "mode=difference compares the prediction with a label set: add labels=<label set id>"
            f" (a positive integer), got {raw!r}",
        )
    return int(raw)


def _draw_labels(
    mode: str, entries: tuple[Any, ...], hidden: tuple[int, ...], layout_key: tuple[Any, ...]
) -> tuple[tuple[Any, ...], Callable[[np.ndarray], np.ndarray]]:
    """The cache key's parameters and the drawing of labels (a prediction's or a label set's)
    in ``mode`` (fill or outline), for :func:`_image`."""
    draw = render.labels_drawer(mode)
    params = ("labels", mode, entries, hidden, *layout_key)
    return params, lambda labels: draw(labels, entries, hidden=hidden)


def _slice(volume: np.ndarray, z: int, what: str) -> np.ndarray:
    if not 0 <= z < volume.shape[0]:
        abort(404, f"{what} has slices 0 to {volume.shape[0] - 1}; there is no slice {z}")
    return volume[z]


def _image(
    stored: str,
    what: str,
    z: int | tuple[str, int],
    params: tuple[Any, ...],
    draw: Callable[..., np.ndarray],
    pick: Callable[[np.ndarray], np.ndarray] | None = None,
    against: tuple[str, str] | None = None,
) -> Any:
    """The PNG of ``draw(volume[z])`` (or of ``draw(pick(volume))`` for a reformatted plane, ``z``
    then naming it; ``draw(volume[z], other[z])`` with ``against``, the stored path and name of a
    second volume on the same grid): 304 when the browser has it (the ETag is known before
    anything is read), from the image cache when this process made it before, else rendered."""
    # The rows are read: end the transaction before the slow part, so that no snapshot (SQLite)
    # or pooled connection (PostgreSQL) is held while this request renders.
    if "radseg_db" in g:
        db().rollback()
    path: Path = current_platform().resolve(stored)
    other: Path | None = current_platform().resolve(against[0]) if against else None
    try:
        key: tuple[Any, ...] = (volumes().key(path), z, params)
        if other is not None:
            key += (volumes().key(other),)
    except FileNotFoundError:
        abort(404, f"the {what} file {stored} (or the one it is compared with) is missing")
    etag = hashlib.sha1(repr(key).encode(), usedforsecurity=False).hexdigest()[:24]
    response = Response(mimetype="image/png")
    response.cache_control.private = True
    response.cache_control.max_age = current_app.config["RADSEG_IMAGE_MAX_AGE"]
    response.set_etag(etag)
    if request.if_none_match.contains(etag):
        response.status_code = 304
        return response
    data = images().get(key)
    if data is None:
        try:
            volume = volumes().get(path)
        except FileNotFoundError:
            abort(404, f"the {what} file {stored} is missing under RADSEG_HOME")

        def cut(array: np.ndarray, name: str) -> np.ndarray:
            return pick(array) if pick is not None else _slice(array, cast(int, z), name)

        slices = [cut(volume, what)]
        if other is not None and against is not None:
            try:
                slices.append(cut(volumes().get(other), against[1]))
            except FileNotFoundError:
                abort(404, f"the {against[1]} file {against[0]} is missing under RADSEG_HOME")
        try:
            data = render.png_bytes(draw(*slices))
        except ValueError as exc:  # two volumes that are not on one grid
            abort(409, str(exc))
        images().put(key, data)
    response.set_data(data)
    return response


@bp.get("/series/<int:series_id>/slice/<int:z>.png")
@roles_required(*VIEWERS)
def slice_png(series_id: int, z: int) -> Any:
    level = _float_arg("wl", DEFAULT_LEVEL)
    width = _float_arg("ww", DEFAULT_WIDTH)
    if width <= 0:
        abort(400, f"ww (window width) must be positive, got {width:g}")

    def read() -> str:
        return get_row(db(), Series, series_id, "series").volume_path

    return _image(
        _row("series", series_id, read),
        f"series {series_id}",
        z,
        ("hu", level, width),
        lambda hu: render.window_to_uint8(hu, level, width),
    )


@bp.get("/predictions/<int:prediction_id>/overlay/<int:z>.png")
@roles_required(*VIEWERS)
def overlay_png(prediction_id: int, z: int) -> Any:
    def read() -> tuple[str, tuple[Any, ...]]:
        prediction = get_row(
            db(),
            Prediction,
            prediction_id,
            "prediction",
            options=[joinedload(Prediction.model_version)],
        )
        return prediction.mask_path, tuple(legend(prediction_classes(prediction)))

    stored, entries = _row("prediction", prediction_id, read)
    return _prediction_overlay(prediction_id, stored, entries, z)


def _prediction_overlay(
    prediction_id: int,
    stored: str,
    entries: tuple[Any, ...],
    where: int | tuple[str, int],
    layout_key: tuple[Any, ...] = (),
    pick: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Any:
    """A prediction's overlay on slice or plane ``where``, in the ``mode`` the query asks for."""
    mode = _mode()
    hidden = tuple(_hidden_classes())
    what = f"prediction {prediction_id}"
    if mode == "difference":
        label_set_id = _labels_arg()

        def read_labels() -> tuple[int, str]:
            row = get_row(db(), LabelSet, label_set_id, "label set")
            return row.series_id, row.path

        series_id, labels_path = _row("label set", label_set_id, read_labels)
        if series_id != _row("prediction series", prediction_id, lambda: _series_of(prediction_id)):
            abort(400, f"label set {label_set_id} is not of this prediction's series")
        return _image(
            stored,
            what,
            where,
            ("difference", hidden, *layout_key),
            lambda predicted, reference: render.difference_to_rgba(predicted, reference, hidden),
            pick,
            against=(labels_path, f"label set {label_set_id}"),
        )
    return _image(stored, what, where, *_draw_labels(mode, entries, hidden, layout_key), pick)


def _series_of(prediction_id: int) -> int:
    return get_row(db(), Prediction, prediction_id, "prediction").series_id


@bp.get("/label-sets/<int:label_set_id>/overlay/<int:z>.png")
@roles_required(*VIEWERS)
def label_overlay_png(label_set_id: int, z: int) -> Any:
    """A label set (ground truth, or a reviewer's correction) drawn like a prediction."""
    label_set = get_row(db(), LabelSet, label_set_id, "label set")
    return _label_overlay(label_set, z)


def _label_overlay(
    label_set: LabelSet,
    where: int | tuple[str, int],
    layout_key: tuple[Any, ...] = (),
    pick: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Any:
    """A label set's overlay on slice or plane ``where``: fill or outline."""
    label_set_id, stored = label_set.id, label_set.path
    classes = label_set.classes if isinstance(label_set.classes, list) else []
    entries = tuple(legend(classes))
    hidden = tuple(_hidden_classes())
    mode = _mode()
    if mode == "difference":
        abort(
            400,
            "the difference view is drawn on the prediction's overlay: "
            f"/predictions/<id>/overlay/...?mode=difference&labels={label_set_id}",
        )
    what = f"label set {label_set_id}"
    return _image(stored, what, where, *_draw_labels(mode, entries, hidden, layout_key), pick)


@bp.get("/predictions/<int:prediction_id>/uncertainty/<int:z>.png")
@roles_required(*VIEWERS)
def uncertainty_png(prediction_id: int, z: int) -> Any:
    """Where the model doubts on slice ``z``: its stored uncertainty map as a heat map."""

    def read() -> str:
        return get_row(db(), Prediction, prediction_id, "prediction").uncertainty_path

    stored = _row("uncertainty", prediction_id, read)
    if not stored:
        abort(404, f"prediction {prediction_id} has no uncertainty map (its model gives none)")
    return _image(
        stored, f"prediction {prediction_id} uncertainty", z, ("heat",), render.uncertainty_to_rgba
    )


# --- axial, coronal and sagittal planes, and the voxel under the cursor -----------------------


def _layout_key(layout: PlaneLayout) -> tuple[Any, ...]:
    return (layout.axis, layout.column, layout.column_flip, layout.row, layout.row_flip)


def _plane(
    plane: str, index: int, geometry: dict[str, Any], what: str
) -> tuple[tuple[str, int], tuple[Any, ...], Callable[[np.ndarray], np.ndarray]]:
    """Plane ``index`` of ``plane`` for :func:`_image`: where it is, its layout's part of the
    cache key, and what cuts it out of a volume (404 for a plane that is none of the three)."""
    layout, pick = plane_cuts.plane_of(plane, index, geometry, what)
    return (layout.plane, index), _layout_key(layout), pick


def _series_volume(series_id: int) -> tuple[str, dict[str, Any]]:
    """A series' HU volume file and its geometry (kept like the other rows)."""

    def read() -> tuple[str, dict[str, Any]]:
        series = get_row(db(), Series, series_id, "series")
        return series.volume_path, series.geometry

    return cast(tuple[str, dict[str, Any]], _row("series-plane", series_id, read))


@bp.get("/series/<int:series_id>/slice/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def plane_png(series_id: int, plane: str, index: int) -> Any:
    """Plane ``index`` (along the voxel axis nearest the plane's normal) of the HU volume."""
    level = _float_arg("wl", DEFAULT_LEVEL)
    width = _float_arg("ww", DEFAULT_WIDTH)
    if width <= 0:
        abort(400, f"ww (window width) must be positive, got {width:g}")
    stored, geometry = _series_volume(series_id)
    what = f"series {series_id}"
    where, layout_key, pick = _plane(plane, index, geometry, what)
    return _image(
        stored,
        what,
        where,
        ("hu", level, width, layout_key),
        lambda hu: render.window_to_uint8(hu, level, width),
        pick,
    )


@bp.get("/predictions/<int:prediction_id>/overlay/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def overlay_plane_png(prediction_id: int, plane: str, index: int) -> Any:
    def read() -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        prediction = get_row(
            db(),
            Prediction,
            prediction_id,
            "prediction",
            options=[joinedload(Prediction.model_version), joinedload(Prediction.series)],
        )
        entries = tuple(legend(prediction_classes(prediction)))
        return prediction.mask_path, entries, prediction.series.geometry

    stored, entries, geometry = _row("prediction-plane", prediction_id, read)
    return _prediction_overlay(
        prediction_id,
        stored,
        entries,
        *_plane(plane, index, geometry, f"prediction {prediction_id}"),
    )


@bp.get("/label-sets/<int:label_set_id>/overlay/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def label_overlay_plane_png(label_set_id: int, plane: str, index: int) -> Any:
    label_set = get_row(
        db(), LabelSet, label_set_id, "label set", options=[joinedload(LabelSet.series)]
    )
    return _label_overlay(
        label_set, *_plane(plane, index, label_set.series.geometry, f"label set {label_set_id}")
    )


@bp.get("/predictions/<int:prediction_id>/uncertainty/<plane>/<int:index>.png")
@roles_required(*VIEWERS)
def uncertainty_plane_png(prediction_id: int, plane: str, index: int) -> Any:
    def read() -> tuple[str, dict[str, Any]]:
        prediction = get_row(
            db(), Prediction, prediction_id, "prediction", options=[joinedload(Prediction.series)]
        )
        return prediction.uncertainty_path, prediction.series.geometry

    stored, geometry = _row("uncertainty-plane", prediction_id, read)
    if not stored:
        abort(404, f"prediction {prediction_id} has no uncertainty map (its model gives none)")
    what = f"prediction {prediction_id} uncertainty"
    where, layout_key, pick = _plane(plane, index, geometry, what)
    return _image(stored, what, where, ("heat", layout_key), render.uncertainty_to_rgba, pick)


@bp.get("/series/<int:series_id>/voxel")
@roles_required(*VIEWERS)
def voxel(series_id: int) -> Any:
    """One voxel of the HU volume: its index, its centre in mm (LPS) and its HU value, as the
    HU cache holds it (not the windowed image)."""
    at = query_args(VoxelQuery)
    stored, geometry_dict = _series_volume(series_id)
    if "radseg_db" in g:
        db().rollback()
    try:
        volume = volumes().get(current_platform().resolve(stored))
    except FileNotFoundError:
        abort(404, f"the series {series_id} file {stored} is missing under RADSEG_HOME")
    size = (volume.shape[2], volume.shape[1], volume.shape[0])
    index = (at.i, at.j, at.k)
    for name, value, count in zip("ijk", index, size, strict=True):
        if value >= count:
            abort(404, f"series {series_id} has {name} from 0 to {count - 1}; there is no {value}")
    geometry = Geometry.from_dict(geometry_dict)
    return jsonify(
        index=list(index),
        position_mm=[round(v, 3) for v in index_to_lps(geometry, index)],
        frame="LPS",
        hu=float(volume[at.k, at.j, at.i]),
    )
