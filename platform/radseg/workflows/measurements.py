"""Measurements kept with a prediction's review: rulers, ellipses and freehand regions.

A reviewer draws one on a slice of the prediction's series; :func:`record_measurement` checks
it against the series' geometry, computes its length (mm), or its area (mm²) and the HU mean and
SD of the voxels inside from the HU volume (never from a windowed image; see
:mod:`radseg.imaging.measure`), stores a :class:`~radseg.db.models.Measurement` signed by the
reviewer and audits it (``measurement.create``). The numbers are computed once: the HU volume of a
series does not change. Anyone who may look at the prediction sees its measurements
(:func:`measurements_of`); the author or an admin may delete one (``measurement.delete``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import Measurement, Prediction, Role
from radseg.errors import InputError, NotFound, PermissionDenied
from radseg.imaging.measure import (
    MAX_POINTS,
    MEASUREMENT_KINDS,
    MeasurementKind,
    Point,
    distance_mm,
    region_mask,
    region_stats,
)
from radseg.imaging.volumes import read_volume
from radseg.roles import REVIEWERS, Actor, require_role
from radseg.workflows.lookup import get_row

#: reads an HU volume ``(z, y, x)`` from its stored file; the web passes its volume cache
HUReader = Callable[[Path], np.ndarray]


def _read_hu(path: Path) -> np.ndarray:
    array, _ = read_volume(path)
    return array


def measurements_of(session: Session, prediction_id: int) -> list[Measurement]:
    """The prediction's measurements, oldest first, with their authors loaded."""
    return list(
        session.scalars(
            select(Measurement)
            .where(Measurement.prediction_id == prediction_id)
            .options(joinedload(Measurement.author))
            .order_by(Measurement.id)
        )
    )


def _check_shape(kind: str, points: Sequence[Point]) -> MeasurementKind:
    if kind not in MEASUREMENT_KINDS:
        raise InputError(f"kind must be one of: {', '.join(MEASUREMENT_KINDS)}; got {kind!r}")
    if kind in ("ruler", "ellipse") and len(points) != 2:
        what = "its two ends" if kind == "ruler" else "two opposite corners of its box"
        raise InputError(f"a {kind} has 2 points ({what}), got {len(points)}")
    if kind == "freehand" and not 3 <= len(points) <= MAX_POINTS:
        raise InputError(f"a freehand outline has 3 to {MAX_POINTS} points, got {len(points)}")
    return kind  # type: ignore[return-value]


def _check_points(size: Sequence[int], slice_index: int, points: Sequence[Point]) -> None:
    if not 0 <= slice_index < size[2]:
        raise InputError(f"slice_index {slice_index} is outside 0..{size[2] - 1}")
    for x, y in points:
        if not (0 <= x <= size[0] and 0 <= y <= size[1]):
            raise InputError(f"the point ({x:g}, {y:g}) is outside the {size[0]}×{size[1]} slice")


def record_measurement(
    platform: Platform,
    actor: Actor,
    prediction_id: int,
    *,
    kind: str,
    slice_index: int,
    points: Sequence[Sequence[float]],
    label: str = "",
    via: str | None = None,
    read_hu: HUReader = _read_hu,
) -> Measurement:
    """Measure on slice ``slice_index`` of the prediction's series and keep it with the review,
    signed by ``actor``; audited. ``points`` are ``[x, y]`` voxels (see
    :mod:`radseg.imaging.measure` for each ``kind``'s points).

    :raises PermissionDenied: ``actor`` is not a reviewer (clinician or admin).
    :raises NotFound: there is no such prediction, or its series' HU volume is missing.
    :raises InputError: the kind, slice or points do not fit the series, or ``actor`` has no
        user account to sign it with.
    """
    require_role(actor, REVIEWERS, "measure on predictions")
    outline: list[Point] = [(float(p[0]), float(p[1])) for p in points]
    shape = _check_shape(kind, outline)
    with platform.sessions.begin() as session:
        prediction = get_row(session, Prediction, prediction_id, "prediction")
        series = prediction.series
        size = series.geometry.get("size", [0, 0, 0])
        spacing = series.geometry.get("spacing", [1.0, 1.0, 1.0])
        _check_points(size, slice_index, outline)
        measurement = Measurement(
            prediction_id=prediction.id,
            author=users.get_user(session, actor.username),
            kind=shape,
            slice_index=slice_index,
            points=[list(p) for p in outline],
            label=label.strip(),
        )
        if shape == "ruler":
            measurement.length_mm = distance_mm(outline[0], outline[1], spacing)
        else:
            stored = platform.resolve(series.volume_path)
            missing = NotFound(f"the HU volume of series {series.id} is missing under RADSEG_HOME")
            # checked here: the volume reader reports a missing file as a generic RuntimeError
            if not stored.is_file():
                raise missing
            try:
                hu = read_hu(stored)
            except FileNotFoundError as exc:  # removed since
                raise missing from exc
            hu_slice = hu[slice_index]
            stats = region_stats(hu_slice, region_mask(hu_slice.shape, shape, outline), spacing)
            measurement.area_mm2 = stats.area_mm2
            measurement.mean_hu, measurement.sd_hu = stats.mean_hu, stats.sd_hu
            measurement.voxels = stats.voxels
        session.add(measurement)
        session.flush()
        audit.record(
            session,
            actor.username,
            "measurement.create",
            f"prediction:{prediction.id}",
            measurement=measurement.id,
            kind=shape,
            slice_index=slice_index,
            **({"via": via} if via else {}),
        )
        session.refresh(measurement, ["author"])
    return measurement


def delete_measurement(
    platform: Platform, actor: Actor, measurement_id: int, *, via: str | None = None
) -> None:
    """Delete a measurement: its author's, or any as an admin; audited.

    :raises PermissionDenied: ``actor`` is not a reviewer, or neither the author nor an admin.
    :raises NotFound: there is no such measurement.
    """
    require_role(actor, REVIEWERS, "delete measurements")
    with platform.sessions.begin() as session:
        measurement = session.get(Measurement, measurement_id)
        if measurement is None:
            raise NotFound(f"there is no measurement {measurement_id}")
        if measurement.author.username != actor.username and actor.role != Role.ADMIN:
            raise PermissionDenied(
                f"measurement {measurement_id} is {measurement.author.username}'s; "
                "only its author or an admin may delete it"
            )
        audit.record(
            session,
            actor.username,
            "measurement.delete",
            f"prediction:{measurement.prediction_id}",
            measurement=measurement.id,
            kind=measurement.kind,
            slice_index=measurement.slice_index,
            **({"via": via} if via else {}),
        )
        session.delete(measurement)
