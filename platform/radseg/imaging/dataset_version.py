"""Dataset versions: labelled series → 2D COCO slices that detectron2 reads directly.

:func:`build_dataset_version` writes one immutable directory (all or nothing, through
:func:`radseg.storage.atomic_directory`)::

    manifest.json                       name, version, content_hash, classes, channels, recipe,
                                        split (patient keys), splits (image counts), created_by,
                                        label_versions (which label version each series is)
    images/<name>.png                   uint8 RGB (or grey for a 1-channel recipe), from the recipe
    labels/<name>.png                   uint8 class ids, 0 background, 255 ignore
                                        (detectron2's ``sem_seg_file_name``)
    annotations/instances_<split>.json  COCO, one file each for train, val and test

``<name>`` is ``<sha256(series_instance_uid)[:16]>_<slice_index:04d>`` (:func:`slice_name`) — no
identifier of the patient, whatever the source. Image records, categories (the manifest's
``classes`` too) and annotations are described in :mod:`radseg.imaging.coco`; with
``polygons=True`` the manifest sums up what the polygons lost under ``polygon_loss``.

Splits are by patient, never by slice (:func:`split_by_patient`). ``content_hash`` is the SHA-256
of the list of every file but the manifest, in sorted path order, each as ``path NUL
blake3(bytes)`` (:func:`content_hash`): each file's digest is taken where the file is written,
from the bytes in hand, so the slice writers hash their own files in parallel and nothing is read
back. BLAKE3 (a cryptographic hash like SHA-256) digests a 512² RGB image in 0.1 ms against
SHA-256's 0.4 ms with the CPU's SHA instructions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from blake3 import blake3

import radseg
from radseg.contracts import ClassInfo, ProgressFn, SeriesVolume, no_progress
from radseg.errors import InputError
from radseg.imaging.channels import ChannelRecipe, channel_slices
from radseg.imaging.coco import class_record, image_record, rle_annotations, use_polygons
from radseg.imaging.labels import IGNORE_LABEL
from radseg.imaging.png_writer import png_bytes
from radseg.storage import atomic_directory

__all__ = [
    "SPLITS",
    "build_dataset_version",
    "content_hash",
    "slice_name",
    "split_by_patient",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: one written slice: its split, its COCO image record and its annotations (ids not yet given)
_Record = tuple[str, dict[str, Any], list[dict[str, Any]]]
#: what writing one slice gives: its image record, its annotations and the SHA-256 of each file
#: it wrote, by path in the dataset
_Written = tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, bytes]]]


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


@dataclass(frozen=True)
class _ClassTables:
    """The dataset's classes as lookup tables over the 256 uint8 label values."""

    #: label value → the dataset's class id (values that are no class → 0; 255 stays ignore)
    lut: np.ndarray
    #: ``histogram @ merge`` sums a per-slice histogram of label values into one of class ids
    merge: np.ndarray
    #: the values the ``lut`` leaves as they are
    unchanged: np.ndarray

    @classmethod
    def of(cls, classes: Sequence[ClassInfo]) -> _ClassTables:
        lut = np.zeros(256, dtype=np.uint8)
        for c in classes:
            lut[c.id] = c.id
        lut[IGNORE_LABEL] = IGNORE_LABEL
        merge = np.zeros((256, 256), dtype=np.int64)
        merge[np.arange(256), lut] = 1
        return cls(lut, merge, lut == np.arange(256))

    def slice_plan(self, labels: np.ndarray, histogram: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The slice ``labels`` with every value that is no class of the dataset made
        background, and the dataset's classes on it, ascending (only those get an RLE), from
        its ``histogram`` of label values."""
        if histogram[~self.unchanged].any():
            labels = self.lut[labels]
        counts = histogram @ self.merge
        return labels, [int(i) for i in np.flatnonzero(counts[1:IGNORE_LABEL]) + 1]


@dataclass(frozen=True)
class _SeriesPlan:
    """What to write of one series, decided from its labels alone."""

    volume: SeriesVolume
    #: the z indices of the slices to write, ascending
    kept: np.ndarray
    #: ``(z, 256)`` pixel counts of each label value per slice; ``None`` when every slice is
    #: kept: then each slice's writer counts its own slice (:meth:`_ClassTables.slice_plan`),
    #: in the writing processes instead of before them
    histograms: np.ndarray | None = None


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
    label_versions: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write a dataset version to ``out_dir`` (which must not exist) and return its manifest.

    :param items: labelled series (``labels`` uint8 ``(z, y, x)`` on the ``hu`` grid).
    :param classes: the dataset's classes; label values not listed (other than 255, ignore)
        become background.
    :param split: patient keys per split (``train``/``val``/``test``); every item's patient must be
        in exactly one.
    :param keep_empty_ratio: fraction (0..1) of slices without any class to keep, chosen with
        ``seed`` per series; 1 keeps them all.
    :param workers: processes writing slices (default: one per CPU, at most 4; 1 writes them
        in this process).
    :param polygons: write COCO polygons instead of RLE, with the loss stated (module doc).
    :param label_versions: per SeriesInstanceUID, which label version its labels are (JSON-able;
        see :func:`radseg.label_versions.provenance`): each of its image records carries it as
        ``label_version``, and the manifest lists them all under ``label_versions``.
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
    tables = _ClassTables.of(classes)
    # Which slices to keep is decided first (labels only), so progress knows the total.
    plans = _plan(items, tables, keep_empty_ratio, seed)
    total = sum(len(plan.kept) for plan in plans)
    if total == 0:
        raise InputError(
            "no slice to write: no slice has a label of the dataset's classes and "
            "keep_empty_ratio is 0"
        )
    with atomic_directory(Path(out_dir)) as tmp:
        for sub in ("images", "labels", "annotations"):
            (tmp / sub).mkdir()
        records: list[_Record] = []
        digests: dict[str, bytes] = {}  # path in the dataset → SHA-256 of the file
        provenance = {uid: dict(v) for uid, v in (label_versions or {}).items()}
        writer = _write_slices(
            tmp, plans, patient_split, tables, recipe, polygons, workers, provenance, digests
        )
        with closing(writer) as written:
            for record in written:
                records.append(record)
                done = len(records)
                if done % 8 == 0 or done == total:
                    progress(0.95 * done / total, f"wrote {done}/{total} slices")
        counts = _write_annotations(tmp, records, classes, name, version, digests)
        manifest = {
            "name": name,
            "version": version,
            # after every other file is written: the hash covers them all
            "content_hash": _listed_hash(digests),
            "classes": [class_record(c) for c in classes],
            "channels": recipe.num_channels,
            "recipe": recipe.to_dict(),
            "split": {s: sorted(split.get(s, [])) for s in SPLITS},
            "splits": counts,
            "annotation_format": "polygon" if polygons else "rle",
            "created_by": f"radseg {radseg.__version__}",
        }
        if provenance:
            manifest["label_versions"] = provenance
        if polygons:
            manifest["polygon_loss"] = _polygon_loss([a for _, _, anns in records for a in anns])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        progress(1.0, f"dataset {name} v{version}: {total} slices")
    return manifest


def content_hash(dataset_dir: Path) -> str:
    """The ``content_hash`` of the dataset version in ``dataset_dir``, from its files: the
    SHA-256 of, for every file but ``manifest.json`` in sorted path order, ``path NUL`` and the
    file's own BLAKE3 digest (32 bytes). A build computes the same from the digests its writers
    took.

    A version keeps the hash it was built with; nothing recomputes it. Versions built before
    2026-12-05 hashed ``path NUL bytes`` of every file in one stream, and those built on
    2026-12-05 before 2026-12-06 took each file's SHA-256 instead of its BLAKE3 digest.
    """
    dataset_dir = Path(dataset_dir)
    digests = {}
    for path in dataset_dir.rglob("*"):
        rel = path.relative_to(dataset_dir).as_posix()
        if path.is_file() and rel != "manifest.json":
            # mapped, not read into memory: an instances file may be large
            digests[rel] = blake3().update_mmap(path).digest()
    return _listed_hash(digests)


def _digest(data: bytes | memoryview) -> bytes:
    """One file's digest in the content hash, from its bytes in hand: BLAKE3, 32 bytes (as
    :func:`content_hash` takes it from the file)."""
    return blake3(data).digest()


def _listed_hash(digests: Mapping[str, bytes]) -> str:
    """SHA-256 of ``path NUL digest`` for each file, in sorted path order (:func:`content_hash`)."""
    listed = hashlib.sha256()
    for rel in sorted(digests):
        listed.update(rel.encode("utf-8") + b"\0" + digests[rel])
    return listed.hexdigest()


def _plan(
    items: Sequence[SeriesVolume], tables: _ClassTables, keep_empty_ratio: float, seed: int
) -> list[_SeriesPlan]:
    """Per series (by patient, then series UID): the slices to keep.

    One histogram per slice tells which slices have a class, which classes each one has and
    whether any value must be made background. Where every slice is kept (``keep_empty_ratio``
    1, the default) nothing needs them before the slices are written: each writer counts its
    own slices, in parallel (this pass over the labels held up both writing processes for about
    0.1 s per 300 slices of 512²).
    """
    plans = []
    for volume in sorted(items, key=lambda v: (v.patient_key, v.series_instance_uid)):
        assert volume.labels is not None  # checked by _check_items
        if keep_empty_ratio >= 1.0:
            plans.append(_SeriesPlan(volume, np.arange(volume.labels.shape[0])))
            continue
        histograms = _slice_histograms(volume.labels)
        has_class = np.asarray((histograms @ tables.merge)[:, 1:IGNORE_LABEL].any(axis=1))
        keep = _keep_slices(has_class, keep_empty_ratio, seed, volume.series_instance_uid)
        plans.append(_SeriesPlan(volume, np.flatnonzero(keep), histograms))
    return plans


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's share), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: kept slices per task of the slice writers: few enough that progress moves and both
#: processes finish together, enough that a task's overhead stays small
_SLICES_PER_TASK = 8


@dataclass(frozen=True)
class _Build:
    """What the slice writers read. Forked processes inherit it (the volumes are not copied
    nor pickled); only the small records travel back."""

    root: Path
    plans: Sequence[_SeriesPlan]
    #: per plan: slice ``z`` → its ``(y, x, c)`` uint8 channels (:func:`channel_slices`)
    channels: Sequence[Callable[[int], np.ndarray]]
    tables: _ClassTables
    polygons: bool

    def write(self, plan_index: int, zs: Sequence[int]) -> list[_Written]:
        plan = self.plans[plan_index]
        labels = plan.volume.labels
        assert labels is not None
        out = []
        for z in zs:
            histogram = (
                _slice_histograms(labels[z : z + 1])[0]
                if plan.histograms is None
                else plan.histograms[z]
            )
            slice_labels, class_ids = self.tables.slice_plan(labels[z], histogram)
            job = _SliceJob(
                plan.volume,
                int(z),
                self.channels[plan_index](int(z)),
                slice_labels,
                class_ids,
                self.polygons,
            )
            out.append(_write_slice(self.root, job))
        return out


#: the builds under way in this process, by token: what a forked slice writer finds here is
#: what its parent set before forking
_BUILDS: dict[int, _Build] = {}
_build_tokens = itertools.count()


def _write_forked(token: int, plan_index: int, zs: Sequence[int]) -> list[Any]:
    return _BUILDS[token].write(plan_index, zs)


def _write_slices(
    root: Path,
    plans: Sequence[_SeriesPlan],
    patient_split: Mapping[str, str],
    tables: _ClassTables,
    recipe: ChannelRecipe,
    polygons: bool,
    workers: int | None,
    provenance: Mapping[str, dict[str, Any]],
    digests: dict[str, bytes],
) -> Generator[_Record, None, None]:
    """Write the kept slices' images and label PNGs; yield their records in plan order (image
    ids follow it).

    Each slice's channels are computed from the HU volume when the slice is written (no
    ``(z, y, x, c)`` copy of a series). The work is split into tasks of a few slices run by
    ``workers`` forked processes (default: one per CPU, at most 4): encoding, RLE and the
    channel arithmetic partly hold the GIL, so threads left a core idle. The children inherit
    the volumes through the fork; only each slice's records come back.
    """
    build = _Build(
        root, plans, [channel_slices(plan.volume.hu, recipe) for plan in plans], tables, polygons
    )
    tasks = [
        (p, [int(z) for z in plan.kept[i : i + _SLICES_PER_TASK]])
        for p, plan in enumerate(plans)
        for i in range(0, len(plan.kept), _SLICES_PER_TASK)
    ]
    workers = min(workers or min(4, _usable_cpus()), len(tasks))

    def records(p: int, written: Iterable[_Written]) -> Generator[_Record, None, None]:
        """The records of plan ``p``'s slices with their split and label version (the digests
        of their files go to ``digests``)."""
        volume = plans[p].volume
        split_name = patient_split[volume.patient_key]
        label_version = provenance.get(volume.series_instance_uid)
        for image, anns, files in written:
            digests.update(files)
            if label_version is not None:
                image["label_version"] = label_version
            yield split_name, image, anns

    if workers < 2 or multiprocessing.current_process().daemon:  # a daemon may not fork helpers
        for p, zs in tasks:
            yield from records(p, build.write(p, zs))
        return
    token = next(_build_tokens)
    _BUILDS[token] = build
    # fork: the children inherit the volumes and the imported modules (as the DICOM reading
    # pool of radseg.imaging.dicom_io does); all of them start at the first submit, after
    # _BUILDS holds this build
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        futures = [pool.submit(_write_forked, token, p, zs) for p, zs in tasks]
        for (p, _), future in zip(tasks, futures, strict=True):
            yield from records(p, future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        del _BUILDS[token]


def _write_slice(root: Path, job: _SliceJob) -> _Written:
    volume, z = job.volume, job.z
    stem = slice_name(volume.series_instance_uid, z)
    pixels = job.image[..., 0] if job.image.shape[-1] == 1 else job.image
    # images stored (deflate level 0): the cheapest PNG to write and to read back; the label
    # masks deflate to a few KB (radseg.imaging.png_writer)
    files = []
    for rel, data in (
        (f"images/{stem}.png", png_bytes(pixels, stored=True)),
        (f"labels/{stem}.png", png_bytes(job.labels)),
    ):
        (root / rel).write_bytes(data)
        files.append((rel, _digest(data)))

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
        use_polygons(job.labels, annotations)
    return image, annotations, files


def _write_annotations(
    root: Path,
    records: Sequence[_Record],
    classes: Sequence[ClassInfo],
    name: str,
    version: str | int,
    digests: dict[str, bytes],
) -> dict[str, int]:
    """Number the images and annotations (in record order) and write one instances file per
    split (its digest goes to ``digests``); returns the number of images in each split."""
    categories = [{**class_record(c), "supercategory": "anatomy"} for c in classes]
    per_split: dict[str, dict[str, list[Any]]] = {
        s: {"images": [], "annotations": []} for s in SPLITS
    }
    annotation_id = 0
    for image_id, (split_name, image, image_annotations) in enumerate(records, 1):
        image["id"] = image_id
        per_split[split_name]["images"].append(image)
        for ann in image_annotations:
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
        rel = f"annotations/instances_{s}.json"
        data = json.dumps(coco, separators=(",", ":")).encode("utf-8")
        (root / rel).write_bytes(data)
        digests[rel] = _digest(data)
    return {s: len(per_split[s]["images"]) for s in SPLITS}


def _slice_histograms(labels: np.ndarray) -> np.ndarray:
    """``(z, 256)`` pixel counts of each uint8 value per slice (one slice at a time: a
    whole-volume ``bincount`` would need an int64 copy of the volume).

    OpenCV's histogram is about 3x faster than ``np.bincount`` (which widens every value to
    int64 first); it counts in float32, exact up to 2**24, so larger slices use ``bincount``.
    """
    flat = labels.reshape(labels.shape[0], -1)
    if not len(flat):
        return np.zeros((0, 256), dtype=np.int64)
    if flat.shape[1] <= 1 << 24:
        rows = [
            cv2.calcHist([row.reshape(1, -1)], [0], None, [256], [0, 256]).ravel() for row in flat
        ]
        return np.stack(rows).astype(np.int64)
    return np.stack([np.bincount(row, minlength=256) for row in flat])


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
    """Each patient's split; refuses unknown splits and a patient in two of them."""
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
