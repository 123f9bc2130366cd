"""COCO records of CT slices: image records that map back to DICOM, RLE annotations, and back.

Every image record carries ``patient_key``, the study, series and SOP instance UIDs,
``frame_number`` (1-based frame of an enhanced multi-frame instance, ``null`` for a single-frame
one), ``slice_index`` (z index in the series volume), ``spacing`` ``(x, y, z)``, ``origin`` (that
slice's ImagePositionPatient) and ``direction`` (row-major 3x3), so any mask maps back to its
voxels (:func:`image_record`). Categories come from the class map: id, name, colour and, when the
label source named one, ``snomed_code`` (:func:`class_record`).

Annotations: one per (slice, class) — the union of that class's regions on the slice — as an RLE
(``pycocotools.mask.encode`` of a Fortran-ordered uint8 mask, counts as text), so holes are kept
exactly; ``bbox`` is ``[x, y, w, h]`` (:func:`rle_annotations`). :func:`use_polygons` turns them
into COCO polygons instead (:mod:`radseg.imaging.polygons`: exact but for holes, which a polygon
cannot hold); each such annotation states its loss as ``polygon_iou`` (IoU of the polygons, as
pycocotools fills them, with the mask).

:func:`coco_to_label_volume` turns the annotations of one series back into its label volume.
Dataset versions (:mod:`radseg.imaging.dataset_version`) and the ``coco`` exporter write these
records.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_util

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import InputError
from radseg.imaging.polygons import mask_to_polygons, polygon_iou

__all__ = [
    "class_record",
    "coco_to_label_volume",
    "image_record",
    "rle_annotations",
    "slice_file_name",
    "use_polygons",
]


def slice_file_name(slice_index: int) -> str:
    """The file name of slice ``slice_index`` in an exported folder: the ``png`` exporter's
    PNGs and the ``coco`` exporter's image records use it, so the two exports line up."""
    return f"slice-{slice_index:05d}.png"


def class_record(c: ClassInfo) -> dict[str, Any]:
    """A class as JSON: id, name, colour, and its SNOMED CT code when the source gave one."""
    record: dict[str, Any] = {"id": c.id, "name": c.name, "color": list(c.color)}
    if c.snomed_code:
        record["snomed_code"] = c.snomed_code
    return record


def image_record(
    *,
    patient_key: str,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str | None,
    frame_number: int | None,
    slice_index: int,
    origin: Sequence[float],
    geometry: Geometry,
) -> dict[str, Any]:
    """The fields of a COCO image record that map one slice back to its DICOM instance and voxels.

    ``origin`` is that slice's ImagePositionPatient; ``height``/``width`` come from ``geometry``
    (``size`` is ``(x, y, z)``). The caller adds ``id`` and ``file_name`` (and, in a dataset
    version, ``sem_seg_file_name``).
    """
    return {
        "height": int(geometry.size[1]),
        "width": int(geometry.size[0]),
        "patient_key": patient_key,
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "sop_instance_uid": sop_instance_uid,
        "frame_number": frame_number,
        "slice_index": int(slice_index),
        "spacing": [float(v) for v in geometry.spacing],
        "origin": [float(v) for v in origin],
        "direction": [float(v) for v in geometry.direction],
    }


def rle_annotations(labels: np.ndarray, class_ids: Sequence[int]) -> list[dict[str, Any]]:
    """One COCO annotation per id in ``class_ids`` for the uint8 ``(y, x)`` slice ``labels``.

    Each is the union of that class's pixels as a compressed RLE (counts as text; holes kept),
    with ``area``, ``bbox`` ``[x, y, w, h]`` and ``iscrowd`` 0. ``id`` and ``image_id`` are 0:
    the caller numbers them. Ids absent from the slice give an empty mask; pass only those
    present.
    """
    if not class_ids:
        return []
    height, width = labels.shape
    # COCO's RLE runs down the columns (Fortran order): the transposed slice, flattened, is
    # that order. OpenCV transposes uint8 in cache-sized tiles (0.03 ms instead of numpy's
    # 0.17 ms for a 512² slice).
    transposed = (
        cv2.transpose(np.ascontiguousarray(labels))
        if labels.dtype == np.uint8 and labels.size
        else np.ascontiguousarray(labels.T)
    )
    rles = mask_util.frPyObjects(
        [
            {"counts": counts, "size": [height, width]}
            for counts in _class_run_lengths(transposed.reshape(-1), class_ids)
        ],
        height,
        width,
    )
    areas = mask_util.area(rles)
    boxes = mask_util.toBbox(rles)
    return [
        {
            "id": 0,
            "image_id": 0,
            "category_id": int(class_id),
            "segmentation": {
                "size": [int(height), int(width)],
                "counts": rle["counts"].decode("ascii"),
            },
            "area": int(area),
            "bbox": [float(v) for v in box],
            "iscrowd": 0,
        }
        for class_id, rle, area, box in zip(class_ids, rles, areas, boxes, strict=True)
    ]


def _class_run_lengths(flat: np.ndarray, class_ids: Sequence[int]) -> list[list[int]]:
    """For each id, the uncompressed COCO RLE counts of ``flat == id``: the lengths of the
    alternating runs of other values and of the id, the first run being of other values
    (possibly empty).

    The runs of every class are found from one pass over the slice (where the label value
    changes) instead of one binary plane per class encoded by pycocotools (0.35 ms instead of
    1.1 ms for a 512² slice with three classes); pycocotools then compresses the counts, so the
    text is exactly what ``mask_util.encode`` gives for the plane.
    """
    size = flat.size
    if size == 0:
        return [[0] for _ in class_ids]  # one empty run, as pycocotools encodes it
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    values = flat[starts]
    runs = []
    for class_id in class_ids:
        inside = values == class_id
        # merge the neighbouring runs of other values: only where "is the id" flips
        flips = np.flatnonzero(inside[1:] != inside[:-1]) + 1
        bounds = np.concatenate((starts[np.concatenate(([0], flips))], [size]))
        counts = np.diff(bounds).tolist()
        runs.append([0, *counts] if inside[0] else counts)
    return runs


def use_polygons(labels: np.ndarray, annotations: Sequence[dict[str, Any]]) -> None:
    """Replace the segmentation of each annotation of the slice ``labels`` by COCO polygons,
    and state what that lost as ``polygon_iou`` (1.0: nothing)."""
    for annotation in annotations:
        mask = labels == annotation["category_id"]
        polygons = mask_to_polygons(mask)
        annotation["segmentation"] = polygons
        annotation["polygon_iou"] = round(polygon_iou(polygons, mask), 6)


def coco_to_label_volume(
    annotations: Path | Mapping[str, Any] | Sequence[Path | Mapping[str, Any]],
    series_uid: str,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Rebuild uint8 ``(z, y, x)`` labels of one series from COCO instances file(s).

    Slices with no image record (left out as empty) and pixels under no annotation are 0.
    """
    sources: Sequence[Path | Mapping[str, Any]] = (
        annotations if isinstance(annotations, list | tuple) else [annotations]  # type: ignore[list-item]
    )
    volume = np.zeros(shape, dtype=np.uint8)
    for source in sources:
        coco: Mapping[str, Any] = (
            json.loads(Path(source).read_text(encoding="utf-8"))
            if isinstance(source, str | Path)
            else source
        )
        images = {
            img["id"]: img for img in coco["images"] if img.get("series_instance_uid") == series_uid
        }
        per_image: dict[int, list[Mapping[str, Any]]] = {}
        for ann in coco["annotations"]:
            if ann["image_id"] in images:
                per_image.setdefault(ann["image_id"], []).append(ann)
        for image_id, anns in per_image.items():
            _paint(volume[images[image_id]["slice_index"]], anns)
    return volume


def _paint(target: np.ndarray, annotations: Sequence[Mapping[str, Any]]) -> None:
    """Write each annotation's class id into the ``(y, x)`` slice ``target``, in order."""
    rles = [_rle(ann) for ann in annotations]
    with warnings.catch_warnings():
        # pycocotools 2.0.x + numpy 2 warn about __array__(copy=...) on every decode.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        masks = mask_util.decode(rles).astype(bool)  # (h, w, n)
    for k, ann in enumerate(annotations):
        target[masks[:, :, k]] = ann["category_id"]


def _rle(ann: Mapping[str, Any]) -> dict[str, Any]:
    """An annotation's segmentation as the compressed RLE pycocotools decodes."""
    segmentation = ann["segmentation"]
    if not isinstance(segmentation, Mapping):
        raise InputError(
            f"annotation {ann.get('id')} is a polygon; only RLE masks turn back into labels exactly"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = segmentation["size"]
        return dict(mask_util.frPyObjects(dict(segmentation), h, w))
    return {
        "size": list(segmentation["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
