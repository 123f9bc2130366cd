"""The ``nifti`` exporter: a predicted label volume as ``.nii.gz`` plus a JSON class map.

:meth:`NiftiExporter.export` writes two files next to each other:

- ``NAME.nii.gz``: the uint8 label volume, 0 = background, on the grid of the request's
  geometry. SimpleITK converts radseg's LPS geometry to the RAS affine NIfTI stores (qform and
  sform), so viewers such as 3D Slicer or ITK-SNAP overlay it on the source series.
- ``NAME.json``: the class map ``{"classes": [{"id": 1, "name": "liver", "color": [r, g, b],
  "snomed_code": "10200004"}]}`` (``snomed_code`` only when the class has one), the form
  :func:`radseg.imaging.labels.read_class_map` reads back, so an exported prediction can be
  ingested again as labels.

Both appear complete or not at all: each is written under a temporary name and renamed, the
sidecar first, so whoever sees the volume also sees its class map.

:meth:`NiftiExporter.verify` re-reads the volume with ``SimpleITK.ReadImage`` (not the writer's
helper) and compares voxels, the world position of the eight corner voxels (computed from the
request's geometry with numpy, to 1e-3 mm: NIfTI stores its affine in float32) and the sidecar.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk

from radseg.contracts import ClassInfo, ExportCheck, ExportRequest, Geometry
from radseg.hookspecs import hookimpl
from radseg.imaging.coco import class_record
from radseg.imaging.labels import index_to_patient, label_array
from radseg.imaging.volumes import array_to_image
from radseg.storage import atomic_path

__all__ = ["NiftiExporter", "class_map", "radseg_register_exporters", "sidecar_path"]

log = logging.getLogger(__name__)

SUFFIX = ".nii.gz"
#: how far a corner voxel may move in the float32 affine NIfTI stores, in mm
WORLD_TOLERANCE_MM = 1e-3


def _volume_path(out: Path) -> Path:
    """``out`` with a ``.nii.gz`` suffix: SimpleITK picks the file format from the name."""
    name = out.name
    if name.lower().endswith(SUFFIX):
        return out
    if name.lower().endswith(".nii"):
        return out.with_name(name + ".gz")
    return out.with_name(name + SUFFIX)


def sidecar_path(volume: Path) -> Path:
    """The class map written next to ``volume``: ``NAME.nii.gz`` → ``NAME.json``."""
    volume = Path(volume)
    return volume.with_name(volume.name[: -len(SUFFIX)] + ".json")


def class_map(classes: Iterable[ClassInfo]) -> dict[str, list[dict[str, Any]]]:
    """The sidecar's content, sorted by class id."""
    return {"classes": [class_record(c) for c in sorted(classes, key=lambda c: c.id)]}


def corner_points(geometry: Geometry) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The 8 corner voxel indices ``(x, y, z)`` and their centres in mm (LPS), ``(8, 3)``.

    ``origin + D · (spacing ⊙ index)``, straight from the geometry with numpy
    (:func:`~radseg.imaging.labels.index_to_patient`): no image library involved.
    """
    nx, ny, nz = geometry.size
    corners = list(itertools.product((0, nx - 1), (0, ny - 1), (0, nz - 1)))
    return corners, index_to_patient(np.asarray(corners), geometry)


class NiftiExporter:
    """Writes ``NAME.nii.gz`` (uint8 labels, source geometry) and ``NAME.json`` (class map)."""

    name: ClassVar[str] = "nifti"
    suffix: ClassVar[str] = SUFFIX
    dicom: ClassVar[bool] = False

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write ``request.labels`` with its geometry to ``out`` and return the path written.

        ``out`` gets a ``.nii.gz`` suffix if it has none (``pred.nii`` becomes ``pred.nii.gz``).

        :raises InputError: the labels do not match the geometry or are not ids 0-255.
        """
        array = label_array(request.labels, request.geometry)
        classes = list(request.classes)
        unknown = sorted(set(np.unique(array).tolist()) - {0} - {c.id for c in classes})
        if unknown:
            log.warning("labels contain class ids %s that have no entry in the class map", unknown)
        volume = _volume_path(Path(out))
        sidecar = sidecar_path(volume)
        text = json.dumps(class_map(classes), indent=2) + "\n"
        image = array_to_image(array, request.geometry)
        # The inner block renames first: the sidecar is in place before the volume appears.
        with atomic_path(volume) as tmp_volume, atomic_path(sidecar) as tmp_sidecar:
            tmp_sidecar.write_text(text, encoding="utf-8")
            sitk.WriteImage(image, str(tmp_volume), useCompression=True)
        return volume

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Re-read ``written`` with ``SimpleITK.ReadImage`` and its sidecar with ``json``."""
        written = Path(written)
        try:
            image = sitk.ReadImage(str(written))
        except RuntimeError as exc:
            reason = f"SimpleITK cannot read {written.name}: {str(exc).strip().splitlines()[-1]}"
            checks = [
                ExportCheck("voxels (SimpleITK)", False, reason),
                ExportCheck("world coordinates", False, reason),
            ]
        else:
            checks = [_voxels_check(request, image), _world_check(request.geometry, image)]
        checks.append(_class_map_check(request.classes, sidecar_path(written)))
        return checks


def _voxels_check(request: ExportRequest, image: sitk.Image) -> ExportCheck:
    name = "voxels (SimpleITK)"
    array = sitk.GetArrayFromImage(image)
    expected = np.asarray(request.labels)
    if array.shape != expected.shape:
        return ExportCheck(
            name, False, f"the file holds {array.shape} (z, y, x) voxels, expected {expected.shape}"
        )
    if image.GetPixelID() != sitk.sitkUInt8:
        return ExportCheck(
            name, False, f"voxel type is {image.GetPixelIDTypeAsString()}, expected 8-bit unsigned"
        )
    differ = int(np.count_nonzero(array != expected))
    nz, ny, nx = array.shape
    return ExportCheck(
        name,
        differ == 0,
        f"{nz} slices of {nx}x{ny} uint8 voxels read back, {differ} voxels differ",
    )


def _world_check(geometry: Geometry, image: sitk.Image) -> ExportCheck:
    name = "world coordinates"
    if tuple(image.GetSize()) != tuple(geometry.size):
        return ExportCheck(
            name, False, f"image size {image.GetSize()} (x, y, z), expected {geometry.size}"
        )
    corners, expected = corner_points(geometry)
    read = np.asarray([image.TransformIndexToPhysicalPoint(c) for c in corners], dtype=np.float64)
    deviation = float(np.max(np.linalg.norm(read - expected, axis=1)))
    return ExportCheck(
        name,
        deviation <= WORLD_TOLERANCE_MM,
        f"8 corner voxels lie at most {deviation:.2e} mm from the series geometry's "
        f"(tolerance {WORLD_TOLERANCE_MM:g} mm)",
    )


def _class_map_check(classes: Iterable[ClassInfo], sidecar: Path) -> ExportCheck:
    name = "class map"
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        found = [
            (int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]), c.get("snomed_code"))
            for c in data["classes"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ExportCheck(name, False, f"cannot read {sidecar.name}: {exc}")
    expected = [
        (c.id, c.name, tuple(c.color), c.snomed_code) for c in sorted(classes, key=lambda c: c.id)
    ]
    found.sort(key=lambda c: c[0])
    ids = sorted(
        {
            int(entry[0])
            for pair in itertools.zip_longest(expected, found)
            if pair[0] != pair[1]
            for entry in pair
            if entry is not None
        }
    )
    if ids:
        return ExportCheck(
            name,
            False,
            f"{sidecar.name} lists {len(found)} classes, expected {len(expected)}; "
            f"ids {ids} differ in id, name, colour or SNOMED code",
        )
    return ExportCheck(
        name, True, f"{sidecar.name}: {len(found)} classes, ids, names and colours equal"
    )


@hookimpl
def radseg_register_exporters() -> list[type[NiftiExporter]]:
    return [NiftiExporter]
