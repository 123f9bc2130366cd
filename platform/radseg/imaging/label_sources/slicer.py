"""3D Slicer segmentations (``.seg.nrrd``) → a label volume on an image series' grid.

Read with ``slicerio`` (Slicer's own reader): voxels ``(i, j, k)`` — or ``(layer, i, j, k)`` when
segments overlap — with the ``ijkToLPS`` matrix and one entry per segment (name, layer, label
value, colour, terminology). Each segment becomes a class: its id is its label value when all
segments share one layer and their values are 1-254 and unique, else 1..n in the file's order.
Names are segment names, colours Slicer's (the palette's without one), ``snomed_code`` the
terminology's type code when it is SNOMED CT. The volume is then placed on the image grid like any
label volume (:func:`radseg.imaging.labels.label_image_to_grid`: same grid as is, else
nearest-neighbour resampling, refused without overlap). Overlapping segments: the later segment
wins, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import InputError
from radseg.imaging.labels import (
    IGNORE_LABEL,
    LabelVolume,
    classes_for_labels,
    label_image_to_grid,
)
from radseg.imaging.palette import class_color

__all__ = ["read_slicer_segmentation"]

log = logging.getLogger(__name__)


def read_slicer_segmentation(path: Path, geometry: Geometry) -> LabelVolume:
    """Read a ``.seg.nrrd`` onto ``geometry``'s grid; see the module doc.

    :raises InputError: unreadable file, no segments, or more than 254 segments.
    :raises radseg.errors.GeometryError: the segmentation does not overlap the image.
    """
    import slicerio  # imported here: only this reader needs it

    path = Path(path)
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:
        raise InputError(f"cannot read Slicer segmentation {path.name}: {exc}") from exc
    segments: list[dict[str, Any]] = list(segmentation.get("segments", []))
    if not segments:
        raise InputError(f"{path.name} holds no segments")
    if len(segments) >= IGNORE_LABEL:
        raise InputError(f"{path.name}: {len(segments)} segments do not fit a label volume (254)")
    voxels = np.asarray(segmentation["voxels"])
    if voxels.ndim == 3:
        voxels = voxels[None]
    values = [int(s.get("labelValue", i + 1)) for i, s in enumerate(segments)]
    layers = [int(s.get("layer", 0)) for s in segments]
    keep_values = (
        len(set(layers)) == 1
        and all(1 <= v < IGNORE_LABEL for v in values)
        and len(set(values)) == len(values)
    )
    labels_ijk = np.zeros(voxels.shape[1:], dtype=np.uint8)
    classes = []
    overlapping = 0
    for n, (segment, value, layer) in enumerate(zip(segments, values, layers, strict=True), 1):
        class_id = value if keep_values else n
        mask = voxels[layer] == value
        overlapping += int(np.count_nonzero(mask & (labels_ijk > 0)))
        labels_ijk[mask] = class_id
        classes.append(_segment_class(segment, class_id, path.name))

    warnings = []
    if overlapping:
        warnings.append(
            f"{path.name}: segments overlap on {overlapping} voxel(s); the later segment won"
        )
        log.warning("%s", warnings[-1])
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels_ijk.transpose(2, 1, 0)))
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    axes = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetOrigin(tuple(float(v) for v in ijk_to_lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (axes / spacing).ravel()))
    labels = label_image_to_grid(image, geometry, name=path.name)
    return LabelVolume(
        labels=labels,
        classes=classes_for_labels(labels, classes),
        source="slicer",
        warnings=warnings,
    )


def _segment_class(segment: dict[str, Any], class_id: int, where: str) -> ClassInfo:
    name = str(segment.get("name") or f"segment_{class_id}").strip()
    colour = segment.get("color")
    rgb: tuple[int, int, int] = class_color(class_id)
    if colour:
        r, g, b = (round(float(c) * 255) for c in colour[:3])
        rgb = (r, g, b)
    snomed = None
    terminology = segment.get("terminology") or {}
    kind = terminology.get("type") if isinstance(terminology, dict) else None
    if kind and len(kind) >= 2 and str(kind[0]) in ("SCT", "SRT"):
        snomed = str(kind[1])
    return ClassInfo(class_id, name, rgb, snomed)
