"""The ``nifti-pairs`` dataset source: NIfTI/NRRD/MetaImage image volumes with label volumes.

Two layouts are recognised under the folder ``path`` (names are matched without their suffix):

* **Two folders**, ``images/`` + ``labels/`` (or nnU-Net's ``imagesTr/`` + ``labelsTr/``):
  ``images/case7.nii.gz`` pairs with ``labels/case7.nii.gz``; nnU-Net's channel suffix
  (``case7_0000``) is ignored. With ``labels`` given as a folder, images are in ``path`` itself.
* **One folder**: ``case7.nii.gz`` pairs with ``case7_seg``, ``_label``, ``_labels``, ``_mask`` or
  ``.seg`` + a volume suffix; a Slicer ``case7.seg.nrrd`` works too.

An image without labels is yielded unlabelled; a label file without an image is a problem. Every
label file goes through :func:`radseg.imaging.label_sources.read_label_source`: any orientation,
resampled nearest-neighbour onto the image grid, refused when it does not overlap. Image voxels are
taken as Hounsfield units (CT) or raw intensities (MR) as stored, after the file's own scaling
(NIfTI ``scl_slope``/``scl_inter``), as float32.

Classes: ``labels`` given as a JSON file, else ``dataset.json`` (the Medical Segmentation Decathlon
and nnU-Net form ``{"labels": {"0": "background", "1": "liver"}}``, or ``{"liver": 1}``), else
``labels.json``/``classes.json`` in ``path``, else each label file's sidecar or ``class_<id>``.

File names can carry identifiers, so none is kept: the case name is pseudonymised through the same
``deidentify`` as DICOM (a header with PatientID = case name and UIDs derived from it), which gives
the patient key and stable Study/Series/SOP Instance UIDs — re-ingesting the same case adds nothing.
Each case is one patient. Modality comes from ``dataset.json``'s ``modality`` ("CT"/"MR") or is
``"OT"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radseg.contracts import ClassInfo, IngestProblem, ProgressFn, SeriesVolume, SliceRef
from radseg.errors import InputError, RadsegError
from radseg.hookspecs import hookimpl
from radseg.imaging.label_sources import LABEL_VOLUME_SUFFIXES, read_label_source
from radseg.imaging.labels import read_class_map
from radseg.imaging.volumes import image_geometry

__all__ = ["NiftiPairsSource", "radseg_register_datasets"]

_LABEL_MARKERS = ("_seg", "_label", "_labels", "_mask", ".seg")
_NNUNET_CHANNEL = re.compile(r"_\d{4}$")
_CLASS_FILES = ("dataset.json", "labels.json", "classes.json")


class NiftiPairsSource:
    """Image + label volume pairs from a folder; see the module doc."""

    name: ClassVar[str] = "nifti-pairs"

    def read(
        self,
        path: Path,
        *,
        labels: Path | None,
        deidentify: Callable[[Any], Any],
        progress: ProgressFn,
        problems: list[IngestProblem],
    ) -> Iterator[SeriesVolume]:
        """Yield one series per image volume, with its labels when a label file pairs with it.

        :param labels: a folder of label volumes, or a JSON class map (see the module doc).
        :raises InputError: ``path`` is not a folder, holds no image volume, or a bad class map.
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path.name} is not a folder; give a folder of image/label volumes")
        label_dir = Path(labels) if labels is not None and Path(labels).is_dir() else None
        classes, modality = _dataset_info(path, labels if label_dir is None else None)
        pairs = _pairs(path, label_dir, problems)
        if not pairs:
            raise InputError(
                f"no image volume ({', '.join(LABEL_VOLUME_SUFFIXES)}) found in {path.name}"
            )
        for i, (case, image_path, label_path) in enumerate(pairs):
            progress(i / len(pairs), f"reading case {i + 1}/{len(pairs)}")
            try:
                volume = _read_case(case, image_path, deidentify, modality)
                if label_path is not None:
                    source = read_label_source(label_path, volume, classes=classes)
                    volume.labels, volume.classes = source.labels, source.classes
                    volume.warnings.extend(source.warnings)
            except RadsegError as exc:
                problems.append(IngestProblem(_rel(image_path, path), str(exc)))
                continue
            yield volume
        progress(1.0, f"read {len(pairs)} case(s)")


@hookimpl
def radseg_register_datasets() -> list[type[NiftiPairsSource]]:
    return [NiftiPairsSource]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", *LABEL_VOLUME_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _volumes(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.lower().endswith(LABEL_VOLUME_SUFFIXES)
    )


def _pairs(
    root: Path, label_dir: Path | None, problems: list[IngestProblem]
) -> list[tuple[str, Path, Path | None]]:
    """``(case, image, label or None)`` for every image volume, sorted by case."""
    image_dir = root
    if label_dir is None:
        for image_name, label_name in (("images", "labels"), ("imagesTr", "labelsTr")):
            if (root / image_name).is_dir() and (root / label_name).is_dir():
                image_dir, label_dir = root / image_name, root / label_name
                break
    images: dict[str, Path]
    found: dict[str, Path]
    if label_dir is not None:
        images = {_NNUNET_CHANNEL.sub("", _stem(p)): p for p in _volumes(image_dir)}
        found = {_stem(p): p for p in _volumes(label_dir)}
    else:
        images, found = {}, {}
        for p in _volumes(root):
            stem = _stem(p)
            marker = next((m for m in _LABEL_MARKERS if stem.lower().endswith(m)), None)
            if marker is not None or p.name.lower().endswith(".seg.nrrd"):
                found[stem[: -len(marker)] if marker else stem] = p
            else:
                images[stem] = p
    for case in sorted(set(found) - set(images)):
        problems.append(
            IngestProblem(_rel(found[case], root), "label volume without a matching image volume")
        )
    return [(case, images[case], found.get(case)) for case in sorted(images)]


def _dataset_info(root: Path, class_file: Path | None) -> tuple[list[ClassInfo] | None, str]:
    modality = "OT"
    candidates = [class_file] if class_file is not None else [root / n for n in _CLASS_FILES]
    for candidate in candidates:
        if candidate is None or not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {candidate.name}: {exc}") from exc
        if isinstance(data, dict):
            found = data.get("modality")
            if isinstance(found, dict):  # MSD: {"0": "CT"}
                found = next(iter(found.values()), None)
            if isinstance(found, str) and found.upper() in ("CT", "MR", "MRI", "PT"):
                modality = "MR" if found.upper() == "MRI" else found.upper()
            if "labels" in data and isinstance(data["labels"], dict):
                data = _labels_mapping(data["labels"])
        return read_class_map(data), modality
    return None, modality


def _labels_mapping(labels: dict[str, Any]) -> list[dict[str, Any]]:
    """MSD ``{"1": "liver"}`` or nnU-Net v2 ``{"liver": 1}`` → class entries, background dropped."""
    entries = []
    for key, value in labels.items():
        if str(key).isdigit():
            class_id, name = int(key), str(value)
        else:
            class_id, name = int(value), str(key)
        if class_id != 0:
            entries.append({"id": class_id, "name": name})
    return entries


def _read_case(
    case: str, image_path: Path, deidentify: Callable[[Any], Any], modality: str
) -> SeriesVolume:
    try:
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise InputError(f"cannot read image volume: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"image volume has {image.GetDimension()} dimensions and "
            f"{image.GetNumberOfComponentsPerPixel()} component(s); give one 3D scalar volume "
            "per case (split 4D multi-channel files into one file per channel)"
        )
    geometry = image_geometry(image)
    hu = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    nz = hu.shape[0]
    header = _identity(case, nz)
    header = deidentify(header)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    step = direction[:, 2] * geometry.spacing[2]
    origin = np.asarray(geometry.origin)
    slices = [
        SliceRef(
            str(item.ReferencedSOPInstanceUID),
            k,
            tuple(float(v) for v in origin + k * step),  # type: ignore[arg-type]
        )
        for k, item in enumerate(header.ReferencedImageSequence)
    ]
    return SeriesVolume(
        patient_key=str(header.PatientID),
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=str(header.SeriesInstanceUID),
        modality=modality,
        geometry=geometry,
        hu=hu,
        slices=slices,
    )


def _identity(case: str, slices: int) -> Dataset:
    """A header that carries the case's identity, for ``deidentify`` to pseudonymise."""
    entropy = ["radseg-nifti-pairs", case]
    ds = Dataset()
    ds.PatientID = case
    ds.PatientName = case
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*entropy, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "series"])
    refs = []
    for k in range(slices):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=[*entropy, "sop", str(k)])
        refs.append(item)
    ds.ReferencedImageSequence = refs
    return ds


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name
