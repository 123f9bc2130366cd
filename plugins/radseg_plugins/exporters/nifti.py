"""The ``nifti`` exporter: a predicted label volume as ``.nii.gz`` plus a JSON class map.

``export(labels, geometry, classes, out)`` writes two files next to each other:

- ``out`` (``NAME.nii.gz``): the uint8 label volume, 0 = background, on the grid ``geometry``
  describes. SimpleITK converts radseg's LPS geometry to the RAS affine NIfTI stores (qform and
  sform), so viewers such as 3D Slicer or ITK-SNAP overlay it on the source series.
- ``NAME.json``: the class map ``{"classes": [{"id": 1, "name": "liver", "color": [r, g, b]}]}``,
  the same form :func:`radseg.imaging.labels.read_class_map` reads back, so an exported
  prediction can be ingested again as labels.

Both appear complete or not at all: each is written under a temporary name and renamed, the
sidecar first, so whoever sees the volume also sees its class map.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import SimpleITK as sitk

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.volumes import array_to_image
from radseg.storage import atomic_path

__all__ = ["NiftiExporter", "radseg_register_exporters", "sidecar_path"]

log = logging.getLogger(__name__)

SUFFIX = ".nii.gz"


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


def class_map(classes: Iterable[ClassInfo]) -> dict[str, list[dict[str, object]]]:
    """The sidecar's content, sorted by class id."""
    return {
        "classes": [
            {"id": int(c.id), "name": c.name, "color": [int(v) for v in c.color]}
            for c in sorted(classes, key=lambda c: c.id)
        ]
    }


def _as_uint8(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
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


class NiftiExporter:
    """Writes ``NAME.nii.gz`` (uint8 labels, source geometry) and ``NAME.json`` (class map)."""

    name: ClassVar[str] = "nifti"
    suffix: ClassVar[str] = SUFFIX

    def export(
        self,
        labels: np.ndarray,
        geometry: Geometry,
        classes: Iterable[ClassInfo],
        out: Path,
    ) -> Path:
        """Write ``labels`` (``(z, y, x)``) with ``geometry`` to ``out`` and return the path.

        ``out`` gets a ``.nii.gz`` suffix if it has none (``pred.nii`` becomes ``pred.nii.gz``);
        the returned path is the one written.

        :raises InputError: ``labels`` do not match ``geometry`` or are not ids 0-255.
        """
        array = _as_uint8(labels, geometry)
        classes = list(classes)
        unknown = sorted(set(np.unique(array).tolist()) - {0} - {c.id for c in classes})
        if unknown:
            log.warning("labels contain class ids %s that have no entry in the class map", unknown)
        volume = _volume_path(Path(out))
        sidecar = sidecar_path(volume)
        text = json.dumps(class_map(classes), indent=2) + "\n"
        # The inner block renames first: the sidecar is in place before the volume appears.
        with atomic_path(volume) as tmp_volume, atomic_path(sidecar) as tmp_sidecar:
            tmp_sidecar.write_text(text, encoding="utf-8")
            sitk.WriteImage(array_to_image(array, geometry), str(tmp_volume), useCompression=True)
        return volume


@hookimpl
def radseg_register_exporters() -> list[type[NiftiExporter]]:
    return [NiftiExporter]
