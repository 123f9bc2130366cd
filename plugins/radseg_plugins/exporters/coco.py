"""The ``coco`` exporter: a predicted label volume as a COCO dataset and a COCO results file.

:meth:`CocoExporter.export` writes one folder ``NAME/`` (all or nothing, through
:func:`radseg.storage.atomic_directory`)::

    instances.json   a COCO dataset: one image record per slice, one annotation per class per
                     slice that has voxels of it, categories from the class map
    results.json     the same masks in the COCO results format ``[{image_id, category_id,
                     segmentation, score}]`` that ``COCO.loadRes`` and ``COCOeval`` read

Image records have the layout of a radseg dataset version
(:func:`radseg.imaging.coco.image_record`):
``id`` (slice index + 1), ``file_name`` ``slice-00007.png`` (no pixel data is written — the
images are the DICOM instances named by ``sop_instance_uid``; the ``png`` exporter writes files of
these names), ``height``, ``width``, ``patient_key`` (pseudonymised), the study, series and SOP
instance UIDs, ``frame_number``, ``slice_index``, ``spacing``, ``origin`` (that slice's
ImagePositionPatient) and ``direction``, so any mask maps back to its voxels. A series that did not
come from DICOM has ``sop_instance_uid`` ``null`` and origins computed from its geometry.

Annotations are RLEs made by :func:`radseg.imaging.coco.rle_annotations` (``pycocotools.mask
.encode``, counts as text): holes are kept exactly. Every result's ``score`` is 1.0: radseg stores
a label map per prediction, not per-class scores, so there is no confidence to report.

:meth:`CocoExporter.verify` reads both files back with ``pycocotools.coco.COCO`` (the dataset, then
``loadRes`` for the results), decodes every mask with ``annToMask`` and rebuilds the label volume.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO

from radseg.contracts import ClassInfo, ExportCheck, ExportRequest, SliceRef
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.coco import class_record, image_record, rle_annotations, slice_file_name
from radseg.imaging.labels import index_to_patient, label_array
from radseg.storage import atomic_directory

__all__ = ["INSTANCES", "RESULTS", "CocoExporter", "radseg_register_exporters", "slice_file_name"]

log = logging.getLogger(__name__)

INSTANCES = "instances.json"
RESULTS = "results.json"
#: every result's score: radseg predictions are label maps, without per-class confidences
SCORE = 1.0


class CocoExporter:
    """Writes ``NAME/instances.json`` (COCO dataset) and ``NAME/results.json`` (COCO results)."""

    name: ClassVar[str] = "coco"
    suffix: ClassVar[str] = ""
    dicom: ClassVar[bool] = False

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write the folder ``out`` and return it.

        :raises InputError: the labels do not match the geometry, hold ids the class map does not
            list (a COCO annotation needs a category), or ``out`` exists already.
        """
        labels = label_array(request.labels, request.geometry)
        classes = sorted(request.classes, key=lambda c: c.id)
        _check_class_ids(labels, classes)
        images, annotations = _records(request, labels)
        results = [
            {
                "image_id": annotation["image_id"],
                "category_id": annotation["category_id"],
                "segmentation": annotation["segmentation"],
                "score": SCORE,
            }
            for annotation in annotations
        ]
        dataset = {
            "info": {
                "description": (
                    f"radseg prediction {request.prediction_id}: {request.algorithm.name}"
                ),
                "version": request.algorithm.version,
                "prediction_id": request.prediction_id,
                "model_version_id": request.algorithm.model_version_id,
                "score": "every result scores 1.0: radseg stores label maps, not class scores",
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{**class_record(c), "supercategory": "anatomy"} for c in classes],
        }
        out = Path(out)
        if out.exists():
            raise InputError(f"{out.name} exists already; export to a new folder name")
        with atomic_directory(out) as tmp:
            (tmp / INSTANCES).write_text(json.dumps(dataset, separators=(",", ":")), "utf-8")
            (tmp / RESULTS).write_text(json.dumps(results, separators=(",", ":")), "utf-8")
        log.info("wrote %d images and %d annotations to %s", len(images), len(annotations), out)
        return out

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Read ``written`` back with pycocotools and compare masks, records and categories."""
        written = Path(written)
        names = [
            "masks (pycocotools)",
            "results (pycocotools loadRes)",
            "image records",
            "categories",
        ]
        try:
            with _quiet():
                coco = COCO(str(written / INSTANCES))
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            reason = f"pycocotools cannot load {INSTANCES}: {type(exc).__name__}: {exc}"
            return [ExportCheck(name, False, reason) for name in names]
        return [
            _compare(names[0], request, coco, coco.dataset.get("annotations", [])),
            _results_check(names[1], request, coco, written / RESULTS),
            _records_check(names[2], request, coco),
            _categories_check(names[3], request.classes, coco),
        ]


def _records(
    request: ExportRequest, labels: np.ndarray
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The COCO image record of every slice, and an RLE annotation per class on each slice."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for z, ref in enumerate(_slice_refs(request)):
        image_id = z + 1
        images.append(
            {
                "id": image_id,
                "file_name": slice_file_name(z),
                **image_record(
                    patient_key=request.series.patient_key,
                    study_instance_uid=request.series.study_instance_uid,
                    series_instance_uid=request.series.series_instance_uid,
                    sop_instance_uid=ref.sop_instance_uid or None,
                    frame_number=ref.frame_number,
                    slice_index=z,
                    origin=ref.image_position_patient,
                    geometry=request.geometry,
                ),
            }
        )
        present = np.flatnonzero(np.bincount(labels[z].ravel(), minlength=256)[1:]) + 1
        for annotation in rle_annotations(labels[z], [int(i) for i in present]):
            annotation["id"] = len(annotations) + 1
            annotation["image_id"] = image_id
            annotations.append(annotation)
    return images, annotations


def _slice_refs(request: ExportRequest) -> list[SliceRef]:
    """One :class:`SliceRef` per z index: the series' own, or (no DICOM) from the geometry."""
    nz = int(request.geometry.size[2])
    if len(request.series.slices) == nz:
        return list(request.series.slices)
    if request.series.slices:
        log.warning(
            "series has %d slice references for %d slices; image records get no SOP UIDs",
            len(request.series.slices),
            nz,
        )
    # each slice's ImagePositionPatient: its first voxel centre, index (0, 0, z)
    positions = index_to_patient(np.asarray([(0, 0, z) for z in range(nz)]), request.geometry)
    return [
        SliceRef("", z, (float(x), float(y), float(w))) for z, (x, y, w) in enumerate(positions)
    ]


def _check_class_ids(labels: np.ndarray, classes: Sequence[ClassInfo]) -> None:
    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()) - {0}
    unknown = sorted(present - {c.id for c in classes})
    if unknown:
        raise InputError(
            f"labels hold class ids {unknown} that the class map does not list; a COCO "
            "annotation needs a category, so add them to the model version's classes"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pycocotools prints progress to stdout and numpy 2 deprecation warnings on every decode."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        yield


def _rebuild(
    request: ExportRequest, coco: COCO, annotations: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, list[str]]:
    """The label volume ``annotations`` describe, and what is wrong with them (if anything)."""
    expected_shape = np.asarray(request.labels).shape
    nz, ny, nx = expected_shape
    volume = np.zeros(expected_shape, dtype=np.uint8)
    problems: list[str] = []
    overlaps = 0
    for ann in annotations:
        image = coco.imgs.get(ann.get("image_id"))
        if image is None:
            problems.append(f"annotation {ann.get('id')} names no image")
            continue
        z = image.get("slice_index")
        if not isinstance(z, int) or not 0 <= z < nz:
            problems.append(f"image {image['id']} has slice_index {z!r}, outside 0-{nz - 1}")
            continue
        if (image.get("height"), image.get("width")) != (ny, nx):
            problems.append(
                f"image {image['id']} is {image.get('width')}x{image.get('height')}, "
                f"expected {nx}x{ny}"
            )
            continue
        with _quiet():
            mask = coco.annToMask(ann).astype(bool)
        overlaps += int(np.count_nonzero(volume[z][mask]))
        volume[z][mask] = int(ann["category_id"])
    if overlaps:
        problems.append(f"{overlaps} pixels belong to two annotations")
    return volume, problems


def _compare(
    name: str, request: ExportRequest, coco: COCO, annotations: Sequence[Mapping[str, Any]]
) -> ExportCheck:
    try:
        volume, problems = _rebuild(request, coco, annotations)
    except (KeyError, TypeError, ValueError) as exc:  # a malformed segmentation
        return ExportCheck(name, False, f"cannot decode a mask: {type(exc).__name__}: {exc}")
    differ = int(np.count_nonzero(volume != np.asarray(request.labels)))
    detail = (
        f"{len(annotations)} masks decoded onto {volume.shape[0]} slices, {differ} voxels differ"
    )
    if problems:
        detail += "; " + "; ".join(problems[:3])
    return ExportCheck(name, differ == 0 and not problems, detail)


def _results_check(name: str, request: ExportRequest, coco: COCO, path: Path) -> ExportCheck:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return ExportCheck(name, False, f"cannot read {RESULTS}: {exc}")
    if not isinstance(entries, list):
        return ExportCheck(name, False, f"{RESULTS} must hold a list of results")
    if not entries:
        # loadRes cannot take an empty list; an empty prediction has nothing to load.
        empty = not np.any(np.asarray(request.labels))
        return ExportCheck(
            name,
            empty,
            f"{RESULTS} is empty; the prediction has {'no' if empty else 'some'} labels",
        )
    try:
        with _quiet():
            res = coco.loadRes(str(path))
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        return ExportCheck(name, False, f"COCO.loadRes refuses {RESULTS}: {exc!r}")
    check = _compare(name, request, res, res.dataset["annotations"])
    scores = sorted({float(e.get("score", -1)) for e in entries})
    if scores != [SCORE]:
        return ExportCheck(name, False, f"{check.detail}; scores {scores[:5]}, expected {SCORE}")
    return check


def _records_check(name: str, request: ExportRequest, coco: COCO) -> ExportCheck:
    images = sorted(coco.dataset.get("images", []), key=lambda i: i["id"])
    refs = _slice_refs(request)
    expected_uids = [r.sop_instance_uid or None for r in refs]
    found_uids = [i.get("sop_instance_uid") for i in images]
    problems = []
    if found_uids != expected_uids:
        wrong = sum(1 for a, b in zip(found_uids, expected_uids, strict=False) if a != b)
        problems.append(
            f"{len(images)} image records for {len(refs)} slices, {wrong} SOP instance UIDs "
            "out of place"
        )
    if [i.get("slice_index") for i in images] != list(range(len(refs))):
        problems.append("slice indices are not 0..n-1 in image id order")
    series = request.series
    if any(
        (i.get("study_instance_uid"), i.get("series_instance_uid"))
        != (series.study_instance_uid, series.series_instance_uid)
        for i in images
    ):
        problems.append("some records name another study or series")
    if problems:
        return ExportCheck(name, False, "; ".join(problems))
    carried = sum(1 for u in found_uids if u)
    return ExportCheck(
        name,
        True,
        f"{len(images)} image records in slice order, {carried} with their SOP instance UID, "
        "study and series UIDs equal",
    )


def _categories_check(name: str, classes: Sequence[ClassInfo], coco: COCO) -> ExportCheck:
    expected = [(c.id, c.name, list(c.color)) for c in sorted(classes, key=lambda c: c.id)]
    found = sorted(
        ((c.get("id"), c.get("name"), c.get("color")) for c in coco.dataset.get("categories", [])),
        key=lambda c: c[0] if isinstance(c[0], int) else -1,
    )
    if found != expected:
        return ExportCheck(
            name,
            False,
            f"{len(found)} categories, expected {len(expected)} with the class map's "
            "ids, names and colours",
        )
    return ExportCheck(name, True, f"{len(found)} categories; ids, names and colours equal")


@hookimpl
def radseg_register_exporters() -> list[type[CocoExporter]]:
    return [CocoExporter]
