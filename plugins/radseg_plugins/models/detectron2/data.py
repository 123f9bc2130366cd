"""A dataset version as detectron2 datasets.

A dataset version (written by the core's COCO writer) holds, relative to its directory::

    annotations/instances_{train,val,test}.json   COCO: images, annotations (RLE), categories
    images/<name>.png                             uint8 RGB, the channel recipe's output
    labels/<name>.png                             uint8 class ids: 0 background, 255 ignore

:func:`load_split` reads one split into detectron2's dataset-dict format; :func:`registered`
puts splits into detectron2's catalogs under names unique to the call and takes them out again,
so that nothing depends on registrations made at import time or in another process (a process
started by ``launch`` registers again). :class:`ClassIndex` is the one place where the dataset's
class ids meet the contiguous indices detectron2's heads predict.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radseg.contracts import ClassInfo
from radseg.errors import InputError

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255


@dataclass(frozen=True)
class ClassIndex:
    """Dataset class ids ↔ head indices.

    Semantic heads predict index 0 for background and ``i + 1`` for ``classes[i]``; instance
    heads predict ``i`` for ``classes[i]``. ``classes`` are sorted by id, so the mapping does not
    depend on the order a caller lists them in.
    """

    classes: tuple[ClassInfo, ...]

    @classmethod
    def of(cls, classes: Sequence[ClassInfo]) -> ClassIndex:
        if not classes:
            raise InputError("the dataset version has no classes; label some structures first")
        ordered = tuple(sorted(classes, key=lambda c: c.id))
        ids = [c.id for c in ordered]
        if len(set(ids)) != len(ids):
            raise InputError(f"class ids must be unique, got {ids}")
        bad = [i for i in ids if not 0 < i < IGNORE_LABEL]
        if bad:
            raise InputError(f"class ids must be 1..254 (0 is background, 255 ignore), got {bad}")
        return cls(ordered)

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def label_to_semantic(self) -> np.ndarray:
        """A 256-entry lookup table: label id → semantic index; unknown ids → ignore."""
        lut = np.full(256, IGNORE_LABEL, dtype=np.int64)
        lut[0] = 0
        for index, class_id in enumerate(self.ids, start=1):
            lut[class_id] = index
        return lut

    def semantic_to_label(self) -> np.ndarray:
        """Semantic index → label id, ``uint8``."""
        return np.array([0, *self.ids], dtype=np.uint8)

    def instance_to_label(self) -> np.ndarray:
        """Instance class index → label id, ``uint8``."""
        return np.array(self.ids, dtype=np.uint8)


def annotations_path(dataset_dir: Path, split: str) -> Path:
    return Path(dataset_dir) / "annotations" / f"instances_{split}.json"


def load_split(
    dataset_dir: Path, split: str, index: ClassIndex, *, instances: bool
) -> list[dict[str, Any]]:
    """Read ``split`` of the dataset version at ``dataset_dir`` as detectron2 dataset dicts.

    ``instances`` adds each image's ``annotations`` (category ids mapped to instance indices,
    RLE masks kept as RLE); without it every image must have a ``sem_seg_file_name``. A split
    without an annotations file or without images gives ``[]``.
    """
    from detectron2.structures import BoxMode

    dataset_dir = Path(dataset_dir)
    path = annotations_path(dataset_dir, split)
    if not path.is_file():
        logger.info("dataset version %s has no %s split (%s)", dataset_dir, split, path.name)
        return []
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc

    contiguous = {class_id: i for i, class_id in enumerate(index.ids)}
    unknown = {c["id"] for c in coco.get("categories", [])} - set(contiguous)
    if unknown:
        logger.warning(
            "%s has categories %s that the model's classes do not list; their annotations "
            "are left out",
            path,
            sorted(unknown),
        )
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)

    records = []
    for image in coco.get("images", []):
        record: dict[str, Any] = {
            "file_name": str(dataset_dir / image["file_name"]),
            "height": int(image["height"]),
            "width": int(image["width"]),
            "image_id": image["id"],
        }
        # Where the slice sits in its series: validation puts slices back into volumes.
        for key in ("series_instance_uid", "slice_index", "spacing"):
            if key in image:
                record[key] = image[key]
        if image.get("sem_seg_file_name"):
            record["sem_seg_file_name"] = str(dataset_dir / image["sem_seg_file_name"])
        elif not instances:
            raise InputError(
                f"image {image['file_name']} in {path} has no sem_seg_file_name; semantic "
                "models need the label PNGs (rebuild the dataset version)"
            )
        if instances:
            record["annotations"] = [
                {
                    "bbox": [float(v) for v in ann["bbox"]],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": contiguous[ann["category_id"]],
                    "segmentation": ann["segmentation"],
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
                for ann in by_image.get(image["id"], [])
                if ann["category_id"] in contiguous
            ]
        records.append(record)
    return records


@contextlib.contextmanager
def registered(
    splits: dict[str, list[dict[str, Any]]],
    index: ClassIndex,
    *,
    dataset_dir: Path,
    tag: str = "radseg",
) -> Iterator[dict[str, str]]:
    """Register each non-empty split with detectron2's catalogs; yield ``{split: name}``.

    The names are unique to this call; the registrations are removed when the block ends.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    token = uuid.uuid4().hex[:8]
    names: dict[str, str] = {}
    try:
        for split, records in splits.items():
            if not records:
                continue
            name = f"{tag}_{split}_{token}"
            DatasetCatalog.register(name, _Records(records))
            metadata = MetadataCatalog.get(name)
            metadata.set(
                thing_classes=index.names,
                stuff_classes=["background", *index.names],
                ignore_label=IGNORE_LABEL,
                thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(index.ids)},
                json_file=str(annotations_path(dataset_dir, split)),
                image_root=str(dataset_dir),
            )
            names[split] = name
        yield names
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


class _Records:
    """A picklable catalog entry that hands out a fresh copy of the dataset dicts."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def __call__(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._records)


def pixel_statistics(
    records: list[dict[str, Any]], *, limit: int = 256
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (RGB order) of the images of ``records``.

    At most ``limit`` images, evenly spread over the split, are read: enough for two decimals on
    CT slices, without reading a large training split twice.
    """
    if not records:
        raise InputError("no training images to measure pixel statistics on")
    step = max(1, len(records) // limit)
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for record in records[::step]:
        image = read_image(record["file_name"]).reshape(-1, 3).astype(np.float64)
        total += image.sum(0)
        squares += np.square(image).sum(0)
        count += image.shape[0]
    mean = total / count
    # A constant channel would divide by 0: a std of at least 1 grey level.
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0)).clip(min=1.0)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def semantic_mapper(cfg: Any, lut: np.ndarray, *, is_train: bool) -> LabelMapper:
    """detectron2's ``DatasetMapper`` that also maps label ids to semantic indices via ``lut``."""
    from detectron2.data import DatasetMapper

    return LabelMapper(DatasetMapper(cfg, is_train), lut)


class LabelMapper:
    """Wraps a ``DatasetMapper``: its ``sem_seg`` label ids become semantic indices.

    A module-level class (not a subclass made inside a function) so that data-loader worker
    processes can unpickle it whatever their start method.
    """

    def __init__(self, mapper: Any, lut: np.ndarray) -> None:
        self.mapper = mapper
        self.lut = lut

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        import torch

        out = self.mapper(dataset_dict)
        if "sem_seg" in out:
            out["sem_seg"] = torch.from_numpy(self.lut[out["sem_seg"].numpy()])
        return out


def read_image(path: str | Path) -> np.ndarray:
    """An image PNG as uint8 ``(y, x, 3)`` RGB."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def read_labels(path: str | Path) -> np.ndarray:
    """A label PNG as uint8 ``(y, x)`` class ids."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)
