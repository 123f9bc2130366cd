"""The ``nifti-pairs`` dataset source: NIfTI/NRRD/MetaImage image volumes with label volumes.

``path`` is a folder, or one image volume. Files are paired by name
(:mod:`radseg.imaging.pairing` lists the conventions): in one folder ``case.nii.gz`` with
``case_seg``/``_label``/``_mask``/``.seg.nrrd``, ``case_image`` with ``case_label``, nnU-Net's
``case_0000``; or two folders, ``images/`` + ``labels/`` (nnU-Net's ``imagesTr/`` + ``labelsTr/``).

``labels`` is a label source, as for every dataset source: a folder of label volumes (then the
images are in ``path`` itself, paired by name), or — for a single image — one label source of
any kind :func:`radseg.imaging.label_sources.read_label_source` reads (label volume,
``.seg.nrrd``, DICOM SEG, RTSTRUCT, folder of PNG masks). For one image volume given as ``path``
without ``labels``, a label file beside it is paired by name.

An image without labels is yielded unlabelled (reported, with the label names that would have
paired it, when the input has labels at all); a label file without an image is a problem that
names the images that would have paired it. Every label file goes through
:func:`radseg.imaging.label_sources.read_label_source`: any orientation, resampled
nearest-neighbour onto the image grid, refused when it does not overlap. Image voxels are taken
as Hounsfield units (CT) or raw intensities (MR) as stored, after the file's own scaling (NIfTI
``scl_slope``/``scl_inter``), as float32.

Classes: ``classes`` (the class map the user gave, ``radseg ingest --class-map``), else
``dataset.json`` (the Medical Segmentation Decathlon and nnU-Net form
``{"labels": {"0": "background", "1": "liver"}}``, or ``{"liver": 1}``), else
``labels.json``/``classes.json`` in the folder, else each label file's sidecar or ``class_<id>``.

File names can carry identifiers, so none is kept: the case name is pseudonymised through the same
``deidentify`` as DICOM (a header with PatientID = case name and UIDs derived from it), which gives
the patient key and stable Study/Series/SOP Instance UIDs — re-ingesting the same case adds nothing.
Each case is one patient. Modality comes from ``dataset.json``'s ``modality`` ("CT"/"MR") or is
``"OT"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radseg.contracts import (
    ClassInfo,
    IngestProblem,
    ProgressFn,
    ReadRequest,
    SeriesVolume,
    SliceRef,
)
from radseg.errors import InputError, RadsegError
from radseg.hookspecs import hookimpl
from radseg.imaging.label_sources import read_label_source
from radseg.imaging.labels import read_class_map
from radseg.imaging.pairing import VOLUME_SUFFIXES, Case, Pairing, pair_volumes, volume_stem
from radseg.imaging.volumes import image_geometry

__all__ = ["NiftiPairsSource", "radseg_register_datasets"]

_CLASS_FILES = ("dataset.json", "labels.json", "classes.json")


class NiftiPairsSource:
    """Image + label volume pairs from a folder; see the module doc."""

    name: ClassVar[str] = "nifti-pairs"

    def read(self, request: ReadRequest, progress: ProgressFn) -> Iterator[SeriesVolume]:
        """Yield one series per image volume, with its labels when a label file pairs with it.

        ``request.labels`` is a folder of label volumes, or one label source for a single image;
        ``request.classes`` the class map to use (else ``dataset.json`` and the like, see above).

        :raises InputError: ``path`` is neither a folder nor an image volume, holds no image
            volume, a bad class map, or one label source for several images.
        """
        path, labels, problems = Path(request.path), request.labels, request.problems
        root = path if path.is_dir() else path.parent
        if not path.is_dir() and not (path.is_file() and volume_stem(path.name)[1]):
            raise InputError(
                f"{path.name} is neither a folder nor an image volume "
                f"({', '.join(VOLUME_SUFFIXES)}); give a folder of image/label volumes or one "
                "image volume"
            )
        dataset_classes, modality = _dataset_info(root)
        classes = list(request.classes) if request.classes is not None else dataset_classes
        pairing = _pairing(path, labels)
        problems.extend(IngestProblem(_rel(f, root), reason) for f, reason in pairing.problems)
        problems.extend(IngestProblem(_rel(f, root), reason) for f, reason in pairing.unlabelled)
        cases = pairing.cases
        if not cases:
            detail = "; ".join(f"{_rel(f, root)}: {r}" for f, r in pairing.problems[:3])
            raise InputError(
                f"no image volume ({', '.join(VOLUME_SUFFIXES)}) found in {path.name}"
                + (f" ({detail})" if detail else "")
            )
        single = Path(labels) if labels is not None and not _is_label_folder(Path(labels)) else None
        if single is not None and len(cases) > 1:
            raise InputError(
                f"the labels {single.name} are one label source but {path.name} holds "
                f"{len(cases)} image volumes; give a folder of label volumes named like the "
                "images, or one image volume"
            )
        for i, case in enumerate(cases):
            progress(i / len(cases), f"reading case {i + 1}/{len(cases)}")
            label_path = single if single is not None else case.label
            try:
                volume = _read_case(case.case, case.image, request.deidentify, modality)
                if label_path is not None:
                    source = read_label_source(label_path, volume, classes=classes)
                    volume.labels, volume.classes = source.labels, source.classes
                    volume.warnings.extend(source.warnings)
            except RadsegError as exc:
                problems.append(IngestProblem(_rel(case.image, root), str(exc)))
                continue
            yield volume
        progress(1.0, f"read {len(cases)} case(s)")


@hookimpl
def radseg_register_datasets() -> list[type[NiftiPairsSource]]:
    return [NiftiPairsSource]


def _volumes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and volume_stem(p.name)[1])


def _is_label_folder(labels: Path) -> bool:
    """A folder of label volumes (paired by name), not one label source such as PNG masks."""
    return labels.is_dir() and bool(_volumes(labels))


def _pairing(path: Path, labels: Path | None) -> Pairing:
    """The cases under ``path`` (a folder or one image volume) with their label files."""
    if labels is not None and not _is_label_folder(Path(labels)):
        # one label source for the only image: the label files beside it are not used
        found = pair_volumes([path] if path.is_file() else _volumes(path))
        return Pairing(
            cases=[Case(c.case, c.image, None) for c in found.cases],
            problems=[(f, r) for f, r in found.problems if "without a matching image" not in r],
        )
    if path.is_file():
        return _one_image(path, labels)
    if labels is not None:
        return pair_volumes(_volumes(path), _volumes(Path(labels)), label_folder=Path(labels).name)
    for image_name, label_name in (("images", "labels"), ("imagesTr", "labelsTr")):
        if (path / image_name).is_dir() and (path / label_name).is_dir():
            return pair_volumes(
                _volumes(path / image_name), _volumes(path / label_name), label_folder=label_name
            )
    return pair_volumes(_volumes(path))


def _one_image(image: Path, labels: Path | None) -> Pairing:
    """One image volume, paired with a label file beside it (or in ``labels``) by name."""
    if labels is not None:
        found = pair_volumes([image], _volumes(Path(labels)), label_folder=Path(labels).name)
    else:
        found = pair_volumes([image, *(p for p in _volumes(image.parent) if p != image)])
    # Only this image's case matters: the folder's other files are not part of the input.
    return Pairing(
        cases=[c for c in found.cases if c.image == image],
        problems=[(f, r) for f, r in found.problems if f == image],
        unlabelled=[(f, r) for f, r in found.unlabelled if f == image],
    )


def _dataset_info(root: Path) -> tuple[list[ClassInfo] | None, str]:
    modality = "OT"
    for candidate in (root / n for n in _CLASS_FILES):
        if not candidate.is_file():
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
