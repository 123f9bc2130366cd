"""Give a label source to the one series it belongs to, among the series read from an upload.

:func:`attach_label_source` is what dataset sources call with the series they read and the label
path the user gave (``radseg ingest --labels``). It chooses the target series, reads the labels
onto its grid (:func:`radseg.imaging.label_sources.read_label_source`) and sets ``labels``,
``classes`` and ``warnings`` on it:

* one series read → that series;
* a label volume (NIfTI/NRRD/MetaImage) → the one series on exactly the label volume's grid;
* a Slicer segmentation, DICOM SEG or RTSTRUCT → the one series the labels land on (the others
  raise :class:`~radseg.errors.GeometryError` or come out empty);
* PNG masks → the one series with as many slices, rows and columns.

Anything else — no series or several — is an :class:`~radseg.errors.InputError` that says to
ingest one series at a time.

:func:`attach_label_objects` does the same for DICOM SEG and RTSTRUCT files found *with* the
images (in the uploaded folder, or in the study on a PACS). Their headers go through the same
``deidentify`` as the images, which maps the UIDs they reference exactly as it mapped the images'
own, so the referenced series (ReferencedSeriesSequence, RTReferencedSeriesSequence) is found by
its de-identified SeriesInstanceUID; without a usable reference the labels go to the one series
they land on. Several label objects for one series are merged by class name
(:func:`~radseg.imaging.label_sources.classmap.merge_class_maps`). A label object that cannot be
used is reported in ``problems`` and the series stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from radseg.contracts import ClassInfo, IngestProblem, SeriesVolume
from radseg.errors import GeometryError, InputError, RadsegError
from radseg.imaging.file_failures import is_file_failure
from radseg.imaging.label_sources import label_source_kind, read_label_source
from radseg.imaging.label_sources.classmap import merge_class_maps
from radseg.imaging.labels import LabelVolume, read_label_geometry, same_grid

__all__ = ["attach_label_objects", "attach_label_source"]


def attach_label_source(
    volumes: Sequence[SeriesVolume],
    label_path: Path,
    *,
    classes: Sequence[ClassInfo] | None = None,
) -> SeriesVolume:
    """Read ``label_path`` onto the series it belongs to, attach it there and return that series.

    :param classes: the class map, if the user gave one (else the source's own, a sidecar JSON
        for label volumes, or ``class_<id>``).
    :raises InputError: the labels fit no single series, or cannot be read.
    :raises GeometryError: the labels do not overlap the (only) series.
    """
    label_path = Path(label_path)
    if not volumes:
        raise InputError(f"labels {label_path.name} were given but no image series was read")
    kind = label_source_kind(label_path)
    if len(volumes) == 1:
        target, result = volumes[0], read_label_source(label_path, volumes[0], classes=classes)
    elif kind == "volume":
        grid = read_label_geometry(label_path)
        matches = [v for v in volumes if same_grid(v.geometry, grid)]
        _one(matches, volumes, label_path, "share the label grid")
        target = matches[0]
        result = read_label_source(label_path, target, classes=classes)
    elif kind == "png":
        matches = [v for v in volumes if _png_fits(label_path, v)]
        _one(matches, volumes, label_path, "have the masks' size")
        target = matches[0]
        result = read_label_source(label_path, target, classes=classes)
    else:
        landed = _landed(volumes, label_path, classes)
        _one([v for v, _ in landed], volumes, label_path, "are covered by the labels")
        target, result = landed[0]
    target.labels = result.labels
    target.classes = result.classes
    target.warnings.extend(result.warnings)
    return target


def _one(
    matches: Sequence[SeriesVolume], volumes: Sequence[SeriesVolume], label_path: Path, how: str
) -> None:
    if len(matches) != 1:
        raise InputError(
            f"labels {label_path.name} were given but the input holds {len(volumes)} series "
            f"and {len(matches)} {how}; ingest one series at a time"
        )


def _png_fits(folder: Path, volume: SeriesVolume) -> bool:
    from PIL import Image

    first = next((p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png"), None)
    if first is None:
        return False
    with Image.open(first) as image:
        width, height = image.size
    return (width, height) == (volume.geometry.size[0], volume.geometry.size[1])


def attach_label_objects(
    volumes: Sequence[SeriesVolume],
    label_paths: Sequence[Path],
    *,
    deidentify: Callable[[Any], Any],
    problems: list[IngestProblem],
    names: Sequence[str] | None = None,
    stored_names: Sequence[str] | None = None,
    classes: Sequence[ClassInfo] | None = None,
) -> None:
    """Attach each DICOM SEG/RTSTRUCT file to the series it references; see the module doc.

    A problem's reason never holds the file's name (the problem names the file, and what is
    stored names it de-identified): a SEG may be named after the patient.

    :param deidentify: the function the images went through (it maps referenced UIDs alike).
    :param problems: receives one :class:`IngestProblem` per label object that was not used.
    :param names: how to name each file in ``problems`` (default: its file name).
    :param stored_names: how to name each file in the series' warnings, which are stored with
        the study (default: ``names``).
    :param classes: the user's class map: each object's classes are renumbered to it by name
        (one the map lacks makes that object a problem).
    """
    by_uid = {v.series_instance_uid: v for v in volumes}
    for i, path in enumerate(label_paths):
        name = names[i] if names is not None else Path(path).name
        stored = (stored_names[i] if stored_names is not None else name) or "label object"
        try:
            referenced = _referenced_series(Path(path), deidentify)
            if referenced in by_uid:
                target = by_uid[referenced]
                found = read_label_source(Path(path), target, classes=classes)
            else:
                target, found = _landing(volumes, Path(path), classes)
            _merge_into(target, found, stored)
        except RadsegError as exc:
            problems.append(IngestProblem(name, _without_name(str(exc), Path(path).name)))
        except BaseException as exc:  # one damaged label object must not stop the others
            if not is_file_failure(exc):
                raise
            problems.append(IngestProblem(name, f"unusable label object: {type(exc).__name__}"))


def _without_name(reason: str, name: str) -> str:
    """``reason`` without the file's ``name``, which the label sources' errors start with."""
    if reason.startswith(f"{name}: "):
        reason = reason[len(name) + 2 :]
    return reason.replace(name, "the file") if name else reason


def _referenced_series(path: Path, deidentify: Callable[[Any], Any]) -> str:
    """The de-identified SeriesInstanceUID a SEG or RTSTRUCT refers to, or ``""``."""
    header = deidentify(pydicom.dcmread(str(path), stop_before_pixels=True, force=True))
    for item in header.get("ReferencedSeriesSequence", []):  # SEG
        if item.get("SeriesInstanceUID"):
            return str(item.SeriesInstanceUID)
    for frame in header.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                if item.get("SeriesInstanceUID"):
                    return str(item.SeriesInstanceUID)
    return ""


def _landed(
    volumes: Sequence[SeriesVolume], path: Path, classes: Sequence[ClassInfo] | None
) -> list[tuple[SeriesVolume, LabelVolume]]:
    """The series the labels at ``path`` land on (some label inside the image), each with the
    labels read onto its grid: how a source that names no series finds its own."""
    landed: list[tuple[SeriesVolume, LabelVolume]] = []
    for volume in volumes:
        try:
            found = read_label_source(path, volume, classes=classes)
        except GeometryError:
            continue
        if found.labels.any():
            landed.append((volume, found))
    return landed


def _landing(
    volumes: Sequence[SeriesVolume], path: Path, classes: Sequence[ClassInfo] | None
) -> tuple[SeriesVolume, LabelVolume]:
    """The one series a label object that references no read series lands on."""
    landed = _landed(volumes, path, classes)
    if len(landed) != 1:
        raise InputError(
            "the label object references no series that was read, and its labels land on "
            f"{len(landed)} of the {len(volumes)} series; add its image series to the upload"
        )
    return landed[0]


def _merge_into(target: SeriesVolume, found: LabelVolume, name: str) -> None:
    target.warnings.extend(f"{name}: {w.split(': ', 1)[-1]}" for w in found.warnings)
    if target.labels is None:
        target.labels, target.classes = found.labels, found.classes
        return
    classes, lut = merge_class_maps(target.classes, found.classes, remap="by_name")
    incoming = lut[found.labels]
    overlap = int(np.count_nonzero((incoming > 0) & (target.labels > 0)))
    if overlap:
        target.warnings.append(f"{name}: overlaps earlier labels on {overlap} voxel(s); it won")
    target.labels = np.where(incoming > 0, incoming, target.labels)
    target.classes = classes
