"""Label volumes (NIfTI, NRRD, MetaImage...) placed on an image series' grid, and class maps.

:func:`load_label_volume` reads a label file with SimpleITK — whatever its orientation on disk —
and returns uint8 ``(z, y, x)`` on the image's :class:`~radseg.contracts.Geometry`:

* the same grid (size, spacing, origin, direction within tolerance) → the voxels as they are;
* any other grid that overlaps the image in patient space → nearest-neighbour resampling
  (``sitk.Resample``), which also reorders flipped or permuted axes exactly, voxel centre for
  voxel centre; image voxels outside the label volume are background;
* no overlap of the two physical bounding boxes → :class:`~radseg.errors.GeometryError`.

Class maps come from an explicit list, a sidecar JSON next to the label file (``labels.json`` or
``labels.nii.gz.json`` for ``labels.nii.gz``) of the form
``{"classes": [{"id": 1, "name": "liver", "color": [r, g, b]}]}``, or default to
``class_<id>`` for every id present. Ids are 1-254: 0 is background and 255 means "ignore".
A class without a colour gets :func:`radseg.imaging.palette.class_color` of its id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import GeometryError, InputError
from radseg.imaging.palette import class_color
from radseg.imaging.volumes import array_to_image, image_geometry

__all__ = [
    "IGNORE_LABEL",
    "LabelVolume",
    "classes_for_labels",
    "find_class_map",
    "index_to_patient",
    "label_array",
    "label_image_to_grid",
    "load_label_volume",
    "patient_to_index",
    "physical_bounds",
    "read_class_map",
    "read_label_geometry",
    "same_grid",
]

#: Label value that means "not annotated" (detectron2's ``ignore_label``).
IGNORE_LABEL = 255

_LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gz")
_SPACING_TOL = 1e-4  # relative
_ORIGIN_TOL = 1e-3  # mm
_DIRECTION_TOL = 1e-4


@dataclass
class LabelVolume:
    """Labels of one series on its image grid, with their class map.

    ``labels`` is uint8 ``(z, y, x)`` on the image :class:`~radseg.contracts.Geometry`
    (0 background, 255 ignore); ``classes`` lists every id present; ``source`` names the kind of
    file read (``"volume"``, ``"slicer"``, ``"seg"``, ``"rtstruct"``, ``"png"``); ``warnings`` are
    what was lossy or odd (overlapping segments, contours off the grid...), free of PHI.
    """

    labels: np.ndarray
    classes: list[ClassInfo]
    source: str
    warnings: list[str] = field(default_factory=list)


def load_label_volume(path: Path, geometry: Geometry) -> np.ndarray:
    """Read the label file at ``path`` and return uint8 ``(z, y, x)`` on ``geometry``'s grid.

    :raises InputError: the file cannot be read or does not hold integer labels 0-255.
    :raises GeometryError: the label volume does not overlap the image in patient space.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"cannot read label volume {path.name}: {_last_line(exc)}; "
            "give a NIfTI (.nii/.nii.gz), NRRD or MetaImage file"
        ) from exc
    return label_image_to_grid(image, geometry, name=path.name)


def read_label_geometry(path: Path) -> Geometry:
    """The grid of the label file at ``path``, read from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read label volume {Path(path).name}: {_last_line(exc)}") from exc
    return Geometry(
        size=tuple(int(v) for v in reader.GetSize()),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in reader.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in reader.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in reader.GetDirection()),
    )


def label_image_to_grid(
    image: sitk.Image, geometry: Geometry, *, name: str = "labels"
) -> np.ndarray:
    """Place a SimpleITK label image on ``geometry``'s grid; see :func:`load_label_volume`."""
    if image.GetDimension() != 3:
        raise InputError(
            f"label volume {name} has {image.GetDimension()} dimensions; give a 3D volume"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"label volume {name} has {image.GetNumberOfComponentsPerPixel()} components per "
            "voxel; give one integer label per voxel"
        )
    image = _as_uint8(image, name)
    source = image_geometry(image)
    if same_grid(source, geometry):
        return sitk.GetArrayFromImage(image)

    lo_a, hi_a = physical_bounds(source)
    lo_b, hi_b = physical_bounds(geometry)
    if np.any(np.minimum(hi_a, hi_b) <= np.maximum(lo_a, lo_b)):
        raise GeometryError(
            f"label volume {name} does not overlap the image series: the labels span "
            f"{_fmt_box(lo_a, hi_a)} and the image {_fmt_box(lo_b, hi_b)} (mm, LPS). Check that "
            "the labels belong to this series and were saved with its origin and direction "
            "(e.g. export them from the DICOM series, not from a PNG stack)"
        )
    reference = array_to_image(np.zeros(tuple(reversed(geometry.size)), dtype=np.uint8), geometry)
    resampled = sitk.Resample(
        image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return sitk.GetArrayFromImage(resampled)


def same_grid(a: Geometry, b: Geometry) -> bool:
    """Whether two geometries put the same voxels at the same places (within tolerance)."""
    return (
        tuple(a.size) == tuple(b.size)
        and np.allclose(a.spacing, b.spacing, rtol=_SPACING_TOL, atol=0)
        and np.allclose(a.origin, b.origin, rtol=0, atol=_ORIGIN_TOL)
        and np.allclose(a.direction, b.direction, rtol=0, atol=_DIRECTION_TOL)
    )


def patient_to_index(points: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Continuous voxel indices ``(x, y, z)`` of patient points (LPS mm, shape ``(n, 3)``).

    Integer values are voxel centres; ``-0.5`` and ``size - 0.5`` are the grid's outer faces.
    """
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(geometry.spacing, dtype=float)
    offset = np.asarray(points, dtype=float).reshape(-1, 3) - np.asarray(geometry.origin)
    # direction's columns are unit axes; solve() keeps non-orthogonal (sheared) grids right too.
    return np.linalg.solve(direction, offset.T).T / spacing


def index_to_patient(points: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Patient points (LPS mm, ``(n, 3)``) of continuous voxel indices ``(x, y, z)``.

    The inverse of :func:`patient_to_index`: ``origin + direction @ (spacing * index)``.
    """
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(geometry.spacing, dtype=float)
    ijk = np.asarray(points, dtype=float).reshape(-1, 3)
    return np.asarray(geometry.origin, dtype=float) + (ijk * spacing) @ direction.T


def physical_bounds(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box ``(low, high)`` (LPS mm) around ``geometry``, edges included."""
    size = np.asarray(geometry.size, dtype=float)
    corners = np.array(
        [
            [i, j, k]
            for i in (-0.5, size[0] - 0.5)
            for j in (-0.5, size[1] - 0.5)
            for k in (-0.5, size[2] - 0.5)
        ]
    )
    points = index_to_patient(corners, geometry)
    return points.min(axis=0), points.max(axis=0)


def find_class_map(label_path: Path) -> Path | None:
    """The sidecar class map of ``label_path``, if any: ``<stem>.json`` or ``<name>.json``."""
    label_path = Path(label_path)
    name = label_path.name
    stem = name
    for suffix in _LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            break
    for candidate in (label_path.with_name(stem + ".json"), label_path.with_name(name + ".json")):
        if candidate.is_file():
            return candidate
    return None


def read_class_map(source: Path | Mapping[str, Any] | Sequence[Any]) -> list[ClassInfo]:
    """Parse a class map from a JSON file or its loaded content.

    Accepted forms: ``{"classes": [{"id", "name", "color"?}, ...]}``, the bare list, or
    ``{"1": "liver", ...}``.

    :raises InputError: ids outside 1-254, duplicate ids or names, malformed colours.
    """
    data: Any = source
    where = "class map"
    if isinstance(source, str | Path):
        where = Path(source).name
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read class map {where}: {exc}") from exc
    if isinstance(data, Mapping) and "classes" in data:
        data = data["classes"]
    if isinstance(data, Mapping):
        data = [{"id": k, "name": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError(f'{where}: expected {{"classes": [{{"id": 1, "name": "liver"}}, ...]}}')
    classes = []
    for i, entry in enumerate(data):
        if isinstance(entry, ClassInfo):
            classes.append(entry)
            continue
        try:
            class_id = int(entry["id"])
            name = str(entry["name"]).strip()
            color = entry.get("color")
            given = [int(c) for c in color] if color is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f'{where}: class #{i + 1} needs an integer "id" and a "name" ({exc})'
            ) from exc
        rgb: tuple[int, int, int]
        if given is None:
            rgb = class_color(class_id)  # generated: a label source's own colour may replace it
        elif len(given) == 3 and all(0 <= c <= 255 for c in given):
            rgb = (given[0], given[1], given[2])
        else:
            raise InputError(f'{where}: class "{name}" colour must be [r, g, b] with 0-255 values')
        classes.append(ClassInfo(class_id, name, rgb, entry.get("snomed_code")))
    _validate(classes, where)
    return sorted(classes, key=lambda c: c.id)


def classes_for_labels(
    labels: np.ndarray | Iterable[int], classes: Sequence[ClassInfo] | None = None
) -> list[ClassInfo]:
    """The class list for a label volume: ``classes`` plus ``class_<id>`` for unlisted ids present.

    :param labels: a label array, or the ids present in it.
    """
    if isinstance(labels, np.ndarray):
        present = [int(v) for v in np.flatnonzero(np.bincount(labels.ravel(), minlength=256))]
    else:
        present = sorted({int(v) for v in labels})
    known = {c.id: c for c in classes or ()}
    for value in present:
        if value in (0, IGNORE_LABEL) or value in known:
            continue
        known[value] = ClassInfo(value, f"class_{value}", class_color(value))
    result = sorted(known.values(), key=lambda c: c.id)
    _validate(result, "class map")
    return result


def _validate(classes: Sequence[ClassInfo], where: str) -> None:
    ids = [c.id for c in classes]
    names = [c.name for c in classes]
    bad = [i for i in ids if not 1 <= i <= 254]
    if bad:
        raise InputError(
            f"{where}: class ids must be 1-254 (0 is background, 255 ignore), got {bad}"
        )
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: duplicate class ids in {sorted(ids)}")
    if len(set(names)) != len(names) or any(not n for n in names):
        raise InputError(f"{where}: class names must be unique and non-empty, got {names}")


def _as_uint8(image: sitk.Image, name: str) -> sitk.Image:
    """Check the voxels are integers 0-255 and return the image as UInt8."""
    if image.GetPixelID() == sitk.sitkUInt8:
        return image
    values = sitk.GetArrayViewFromImage(image)
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"label volume {name} holds values {lo:g}..{hi:g}; labels must be integers 0-255"
            )
        if values.dtype.kind == "f" and not np.array_equal(values, np.rint(values)):
            raise InputError(
                f"label volume {name} holds non-integer values; it looks like an image, not labels"
            )
    return sitk.Cast(image, sitk.sitkUInt8)


def _last_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _fmt_box(lo: np.ndarray, hi: np.ndarray) -> str:
    return ", ".join(f"{axis} {a:.1f}..{b:.1f}" for axis, a, b in zip("xyz", lo, hi, strict=True))


def label_array(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``labels`` as uint8 ``(z, y, x)`` on ``geometry``'s grid.

    :raises InputError: the shape does not match the geometry, or the values are not ids 0-255.
    """
    labels = np.asarray(labels)
    expected = tuple(reversed(geometry.size))
    if labels.ndim != 3 or labels.shape != expected:
        raise InputError(
            f"labels have shape {labels.shape} (z, y, x) but the geometry's size "
            f"{tuple(geometry.size)} (x, y, z) needs {expected}; export the prediction on the "
            "grid of its series"
        )
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype.kind not in "iub" or (
        labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255)
    ):
        raise InputError(
            f"labels must be integer class ids 0-255, got dtype {labels.dtype}; "
            "convert the prediction to a uint8 label map first"
        )
    return labels.astype(np.uint8)
