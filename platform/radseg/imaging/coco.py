"""Dataset versions: labelled series → 2D COCO slices that detectron2 reads directly.

:func:`build_dataset_version` writes one immutable directory (all or nothing, through
:func:`radseg.storage.atomic_directory`)::

    manifest.json                       name, version, content_hash, classes, channels, recipe,
                                        split (patient keys), splits (image counts), created_by
    images/<name>.png                   uint8 RGB (or grey for a 1-channel recipe), from the recipe
    labels/<name>.png                   uint8 class ids, 0 background, 255 ignore
                                        (detectron2's ``sem_seg_file_name``)
    annotations/instances_<split>.json  COCO, one file each for train, val and test

``<name>`` is ``<sha256(series_instance_uid)[:16]>_<slice_index:04d>`` — no identifier of the
patient, whatever the source. Every image record carries ``patient_key``, the study, series and SOP
instance UIDs, ``frame_number`` (1-based frame of an enhanced multi-frame instance, ``null`` for
a single-frame one), ``slice_index`` (z index in the series volume), ``spacing`` ``(x, y, z)``,
``origin`` (that slice's ImagePositionPatient) and ``direction`` (row-major 3x3), so any mask maps
back to its voxels. Categories (and the manifest's ``classes``) come from the class map: id, name,
colour and, when the label source named one, ``snomed_code``.

Annotations: one per (slice, class) — the union of that class's regions on the slice — as an RLE
(``pycocotools.mask.encode`` of a Fortran-ordered uint8 mask, counts as text), so holes are kept
exactly; ``bbox`` is ``[x, y, w, h]``. With ``polygons=True`` the segmentation is a list of COCO
polygons instead (:mod:`radseg.imaging.polygons`: exact but for holes, which a polygon cannot
hold); each such annotation states its loss as ``polygon_iou`` (IoU of the polygons, as
pycocotools fills them, with the mask) and the manifest sums it up under ``polygon_loss``.

Splits are by patient, never by slice (:func:`split_by_patient`). ``content_hash`` is the SHA-256
of every file but the manifest, in sorted path order, each as ``path NUL bytes``.
:func:`coco_to_label_volume` turns the annotations of one series back into its label volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

import radseg
from radseg.contracts import ClassInfo, Geometry, ProgressFn, SeriesVolume, no_progress
from radseg.errors import InputError
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.labels import IGNORE_LABEL
from radseg.imaging.polygons import mask_to_polygons, polygon_iou
from radseg.storage import atomic_directory

try:  # ISA-L's deflate: same zlib stream, ~2x faster than zlib at level 1 and smaller output
    from isal.isal_zlib import compress as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; plain zlib still works
    from zlib import compress as _deflate

__all__ = [
    "SPLITS",
    "build_dataset_version",
    "class_record",
    "coco_to_label_volume",
    "content_hash",
    "image_record",
    "png_bytes",
    "rle_annotations",
    "slice_file_name",
    "slice_name",
    "split_by_patient",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Deflate level 1: within ~15% of level 6 in size on CT slices, several times faster to write.
_PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def split_by_patient(
    patient_keys: Iterable[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> dict[str, list[str]]:
    """Assign each patient to train, val or test (seeded; the input order does not matter).

    Every split with a non-zero fraction gets at least one patient once there are enough:
    one patient → train only; two → train and val; three or more → all three. Lists are sorted.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(f"split fractions must be three non-negative numbers, got {fractions}")
    total = float(sum(fractions))
    f_train, f_val, f_test = (f / total for f in fractions)
    keys = sorted(set(patient_keys))
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    n = len(order)
    n_val = max(1, round(n * f_val)) if f_val > 0 and n >= 2 else 0
    n_test = max(1, round(n * f_test)) if f_test > 0 and n >= 3 else 0
    if f_train > 0:
        while n - n_val - n_test < 1 and (n_val or n_test):
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
    n_train = n - n_val - n_test
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def slice_name(series_instance_uid: str, slice_index: int) -> str:
    """The PHI-free file stem of one slice: a hash of the series UID and the slice index."""
    digest = hashlib.sha256(series_instance_uid.encode("utf-8")).hexdigest()[:16]
    return f"{digest}_{slice_index:04d}"


def slice_file_name(slice_index: int) -> str:
    """The file name of slice ``slice_index`` in an exported folder: the ``png`` exporter's
    PNGs and the ``coco`` exporter's image records use it, so the two exports line up."""
    return f"slice-{slice_index:05d}.png"


@dataclass
class _SliceJob:
    volume: SeriesVolume
    z: int
    image: np.ndarray  # (y, x, c) uint8
    labels: np.ndarray  # (y, x) uint8
    class_ids: list[int]  # the dataset's classes present on this slice, ascending
    polygons: bool = False


def build_dataset_version(
    out_dir: Path,
    items: Sequence[SeriesVolume],
    classes: Sequence[ClassInfo],
    recipe: ChannelRecipe,
    split: Mapping[str, Sequence[str]],
    *,
    name: str,
    version: str | int,
    keep_empty_ratio: float = 1.0,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
    polygons: bool = False,
) -> dict[str, Any]:
    """Write a dataset version to ``out_dir`` (which must not exist) and return its manifest.

    :param items: labelled series (``labels`` uint8 ``(z, y, x)`` on the ``hu`` grid).
    :param classes: the dataset's classes; label values not listed (other than 255, ignore)
        become background.
    :param split: patient keys per split (``train``/``val``/``test``); every item's patient must be
        in exactly one.
    :param keep_empty_ratio: fraction (0..1) of slices without any class to keep, chosen with
        ``seed`` per series; 1 keeps them all.
    :param workers: threads writing slices (default: one per CPU, at most 4).
    :param polygons: write COCO polygons instead of RLE, with the loss stated (module doc).
    :raises InputError: inconsistent items, classes or split; nothing is written then.
    """
    if not 0.0 <= keep_empty_ratio <= 1.0:
        raise InputError(f"keep_empty_ratio must be between 0 and 1, got {keep_empty_ratio}")
    if recipe.num_channels not in (1, 3):
        raise InputError(f"PNG images hold 1 or 3 channels; the recipe has {recipe.num_channels}")
    classes = sorted(classes, key=lambda c: c.id)
    _check_classes(classes)
    patient_split = _patient_split(split)
    _check_items(items, patient_split)

    lut = np.zeros(256, dtype=np.uint8)
    for c in classes:
        lut[c.id] = c.id
    lut[IGNORE_LABEL] = IGNORE_LABEL
    # counts @ merge sums a per-slice histogram of label values into one of dataset classes.
    merge = np.zeros((256, 256), dtype=np.int64)
    merge[np.arange(256), lut] = 1

    # Decide which slices to keep first (labels only), so progress knows the total. One
    # histogram per slice tells which slices have a class, which classes each one has (only
    # those get an RLE) and whether any value must be mapped to background at all.
    volumes = sorted(items, key=lambda v: (v.patient_key, v.series_instance_uid))
    kept: list[np.ndarray] = []
    present: list[np.ndarray] = []  # per volume: (z, 256) pixel counts of dataset classes
    remap: list[bool] = []  # per volume: has values that are no class (they become background)
    unchanged = lut == np.arange(256)
    for volume in volumes:
        assert volume.labels is not None  # checked above
        histograms = _slice_histograms(volume.labels)
        counts = histograms @ merge
        has_class = np.asarray(counts[:, 1:IGNORE_LABEL].any(axis=1))
        present.append(counts)
        remap.append(bool(histograms[:, ~unchanged].any()))
        kept.append(
            np.flatnonzero(
                _keep_slices(has_class, keep_empty_ratio, seed, volume.series_instance_uid)
            )
        )
    total = sum(len(k) for k in kept)
    if total == 0:
        raise InputError(
            "no slice to write: no slice has a label of the dataset's classes and "
            "keep_empty_ratio is 0"
        )

    workers = workers or min(4, os.cpu_count() or 1)
    with atomic_directory(Path(out_dir)) as tmp:
        for sub in ("images", "labels", "annotations"):
            (tmp / sub).mkdir()
        # (split, image record, annotations) in a deterministic order: ids follow it.
        records: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            # One series at a time, so only its channel volume is in memory.
            for volume, indices, counts, mapped in zip(volumes, kept, present, remap, strict=True):
                assert volume.labels is not None
                split_name = patient_split[volume.patient_key]
                labels = lut[volume.labels] if mapped else volume.labels
                channels = hu_to_channels(volume.hu, recipe)
                jobs = [
                    _SliceJob(
                        volume,
                        int(z),
                        channels[z],
                        labels[z],
                        [int(i) for i in np.flatnonzero(counts[z, 1:IGNORE_LABEL]) + 1],
                        polygons,
                    )
                    for z in indices
                ]
                for image, annotations in pool.map(lambda job: _write_slice(tmp, job), jobs):
                    records.append((split_name, image, annotations))
                    done = len(records)
                    if done % 8 == 0 or done == total:
                        progress(0.95 * done / total, f"wrote {done}/{total} slices")
                del jobs, channels, labels
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

        categories = [{**class_record(c), "supercategory": "anatomy"} for c in classes]
        per_split: dict[str, dict[str, list[Any]]] = {
            s: {"images": [], "annotations": []} for s in SPLITS
        }
        annotation_id = 0
        for image_id, (split_name, image, annotations) in enumerate(records, 1):
            image["id"] = image_id
            per_split[split_name]["images"].append(image)
            for ann in annotations:
                annotation_id += 1
                ann["id"] = annotation_id
                ann["image_id"] = image_id
                per_split[split_name]["annotations"].append(ann)
        for s in SPLITS:
            coco = {
                "info": {"description": f"{name} v{version}", "version": str(version)},
                "images": per_split[s]["images"],
                "annotations": per_split[s]["annotations"],
                "categories": categories,
            }
            (tmp / "annotations" / f"instances_{s}.json").write_text(
                json.dumps(coco, separators=(",", ":")), encoding="utf-8"
            )

        manifest = {
            "name": name,
            "version": version,
            "content_hash": content_hash(tmp),
            "classes": [class_record(c) for c in classes],
            "channels": recipe.num_channels,
            "recipe": recipe.to_dict(),
            "split": {s: sorted(split.get(s, [])) for s in SPLITS},
            "splits": {s: len(per_split[s]["images"]) for s in SPLITS},
            "annotation_format": "polygon" if polygons else "rle",
            "created_by": f"radseg {radseg.__version__}",
        }
        if polygons:
            manifest["polygon_loss"] = _polygon_loss([a for _, _, anns in records for a in anns])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        progress(1.0, f"dataset {name} v{version}: {total} slices")
    return manifest


def content_hash(dataset_dir: Path) -> str:
    """SHA-256 of every file but ``manifest.json``, in sorted path order, as ``path NUL bytes``."""
    dataset_dir = Path(dataset_dir)
    files = sorted(
        p.relative_to(dataset_dir).as_posix() for p in dataset_dir.rglob("*") if p.is_file()
    )
    digest = hashlib.sha256()
    for rel in files:
        if rel == "manifest.json":
            continue
        digest.update(rel.encode("utf-8") + b"\0")
        with open(dataset_dir / rel, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


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
            rles = [_rle(ann) for ann in anns]
            with warnings.catch_warnings():
                # pycocotools 2.0.x + numpy 2 warn about __array__(copy=...) on every decode.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
                masks = mask_util.decode(rles).astype(bool)  # (h, w, n)
            target = volume[images[image_id]["slice_index"]]
            for k, ann in enumerate(anns):
                target[masks[:, :, k]] = ann["category_id"]
    return volume


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 grey ``(h, w)`` or RGB ``(h, w, 3)`` as a PNG: filter "None", deflate level 1.

    Why not Pillow: its PNG encoder filters every row adaptively and holds the GIL while it
    compresses. On 512x512 RGB CT slices this writer with zlib is about 3x faster (14 ms instead
    of 47 ms) and its files are no larger; with ISA-L's deflate (``isal``) it is about 6x faster
    (5 ms) and the files are slightly smaller. Both release the GIL, so the build's threads run in
    parallel. "Up"/"Sub" filters were measured and make CT slices larger at this level. Level 0
    (stored) would be faster still but triples the size. Any PNG reader (Pillow, OpenCV,
    detectron2) reads the result.
    """
    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (2, 3)
        or (pixels.ndim == 3 and pixels.shape[2] != 3)
    ):
        raise ValueError(f"expected uint8 (h, w) or (h, w, 3), got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    rows = np.empty((height, 1 + pixels[0].size), dtype=np.uint8)
    rows[:, 0] = 0  # per-row filter type: None
    rows[:, 1:] = pixels.reshape(height, -1)
    colour_type = 0 if pixels.ndim == 2 else 2  # greyscale or truecolour
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", _deflate(rows.data, _PNG_COMPRESS_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rle(ann: Mapping[str, Any]) -> dict[str, Any]:
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
    # pycocotools wants a Fortran-ordered (h, w, n) mask. Comparing the transposed slice into
    # C-ordered (n, w, h) planes writes each plane contiguously (2x faster than writing
    # column-major planes from the row-major slice), and its (2, 1, 0) transpose is that
    # Fortran array without a copy.
    transposed = np.ascontiguousarray(labels.T)
    planes = np.empty((len(class_ids), width, height), dtype=np.uint8)
    for k, class_id in enumerate(class_ids):
        np.equal(transposed, class_id, out=planes[k], casting="unsafe")
    rles = mask_util.encode(planes.transpose(2, 1, 0))
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


def _write_slice(root: Path, job: _SliceJob) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    volume, z = job.volume, job.z
    stem = slice_name(volume.series_instance_uid, z)
    pixels = job.image[..., 0] if job.image.shape[-1] == 1 else job.image
    (root / "images" / f"{stem}.png").write_bytes(png_bytes(pixels))
    (root / "labels" / f"{stem}.png").write_bytes(png_bytes(job.labels))

    ref = volume.slices[z]
    image = {
        "id": 0,  # numbered once all slices are written
        "file_name": f"images/{stem}.png",
        "sem_seg_file_name": f"labels/{stem}.png",
        **image_record(
            patient_key=volume.patient_key,
            study_instance_uid=volume.study_instance_uid,
            series_instance_uid=volume.series_instance_uid,
            sop_instance_uid=ref.sop_instance_uid,
            frame_number=ref.frame_number,
            slice_index=z,
            origin=ref.image_position_patient,
            geometry=volume.geometry,
        ),
    }
    # the slice's own shape, whatever the geometry says (they agree for a checked volume)
    image["height"], image["width"] = (int(v) for v in job.labels.shape)
    annotations = rle_annotations(job.labels, job.class_ids)
    if job.polygons:
        for annotation in annotations:
            mask = job.labels == annotation["category_id"]
            polygons = mask_to_polygons(mask)
            annotation["segmentation"] = polygons
            annotation["polygon_iou"] = round(polygon_iou(polygons, mask), 6)
    return image, annotations


def _slice_histograms(labels: np.ndarray) -> np.ndarray:
    """``(z, 256)`` pixel counts of each uint8 value per slice (one slice at a time: a
    whole-volume ``bincount`` would need an int64 copy of the volume)."""
    flat = labels.reshape(labels.shape[0], -1)
    return (
        np.stack([np.bincount(row, minlength=256) for row in flat])
        if len(flat)
        else (np.zeros((0, 256), dtype=np.int64))
    )


def class_record(c: ClassInfo) -> dict[str, Any]:
    """A class as JSON: id, name, colour, and its SNOMED CT code when the source gave one."""
    record: dict[str, Any] = {"id": c.id, "name": c.name, "color": list(c.color)}
    if c.snomed_code:
        record["snomed_code"] = c.snomed_code
    return record


def _polygon_loss(annotations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What writing polygons instead of RLE lost, over all annotations (1.0 = nothing)."""
    ious = [float(a["polygon_iou"]) for a in annotations]
    return {
        "annotations": len(ious),
        "exact": sum(1 for v in ious if v >= 1.0),
        "mean_iou": round(float(np.mean(ious)), 6) if ious else 1.0,
        "min_iou": round(float(np.min(ious)), 6) if ious else 1.0,
        "why": "COCO polygons cannot hold holes; every other pixel is kept",
    }


def _keep_slices(has_class: np.ndarray, ratio: float, seed: int, series_uid: str) -> np.ndarray:
    """Labelled slices, plus ``round(ratio x empty)`` empty ones drawn with a per-series seed."""
    keep = has_class.copy()
    empty = np.flatnonzero(~has_class)
    if ratio >= 1.0:
        keep[empty] = True
    elif ratio > 0.0 and empty.size:
        series_seed = int(hashlib.sha256(series_uid.encode("utf-8")).hexdigest()[:8], 16)
        rng = np.random.default_rng([seed, series_seed])
        chosen = rng.choice(empty, size=round(ratio * empty.size), replace=False)
        keep[chosen] = True
    return keep


def _patient_split(split: Mapping[str, Sequence[str]]) -> dict[str, str]:
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise InputError(f"unknown split(s) {sorted(unknown)}; use {', '.join(SPLITS)}")
    owner: dict[str, str] = {}
    for s in SPLITS:
        for key in split.get(s, ()):
            if key in owner and owner[key] != s:
                raise InputError(
                    f"patient {key} is in both {owner[key]} and {s}; a patient belongs to one split"
                )
            owner[key] = s
    return owner


def _check_classes(classes: Sequence[ClassInfo]) -> None:
    ids = [c.id for c in classes]
    if not classes:
        raise InputError("a dataset needs at least one class")
    if len(set(ids)) != len(ids) or not all(1 <= i < IGNORE_LABEL for i in ids):
        raise InputError(f"class ids must be unique and within 1-254, got {ids}")


def _check_items(items: Sequence[SeriesVolume], patient_split: Mapping[str, str]) -> None:
    if not items:
        raise InputError("no series given; a dataset needs at least one labelled series")
    seen: set[str] = set()
    for volume in items:
        uid = volume.series_instance_uid
        if uid in seen:
            raise InputError(f"series {uid} is given twice")
        seen.add(uid)
        if volume.labels is None:
            raise InputError(f"series {uid} has no labels; label it or leave it out")
        if volume.labels.shape != volume.hu.shape:
            raise InputError(
                f"series {uid}: labels {volume.labels.shape} and image {volume.hu.shape} differ "
                "in shape; load the labels onto the image grid first"
            )
        if volume.patient_key not in patient_split:
            raise InputError(
                f"patient {volume.patient_key} (series {uid}) is in no split; add it to train, "
                "val or test"
            )
