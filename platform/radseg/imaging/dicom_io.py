"""Read DICOM image series into HU volumes with their geometry.

:func:`read_series` walks a folder (or takes files), de-identifies every header as soon as it is
read, groups slices by SeriesInstanceUID and hands each group to :func:`dicom_to_volume`.

Conventions:

* Slices are ordered by ImagePositionPatient projected on the slice normal
  ``n = row x column`` of ImageOrientationPatient, ascending — never by file name or
  InstanceNumber. This is the order GDCM (and so SimpleITK's ``ImageSeriesReader``) uses.
* The volume is float32 ``(z, y, x)``: HU = stored value x RescaleSlope + RescaleIntercept, per
  slice.
* :class:`~radseg.contracts.Geometry` follows SimpleITK: ``size``/``spacing`` are ``(x, y, z)``;
  x spacing is PixelSpacing[1] (between columns), y spacing PixelSpacing[0] (between rows), z the
  mean distance between consecutive positions along ``n``; ``origin`` is the first slice's
  ImagePositionPatient; ``direction`` is row-major with columns ``(row, column, n)``.

Files that are not DICOM (and DICOMDIR indexes) are skipped quietly; a DICOM file that cannot be
used (truncated, no pixels, undecodable, not an image) is reported as an
:class:`~radseg.contracts.IngestProblem` and the rest of the series is still read. Problems name the
file relative to the folder read and never quote header values.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from radseg.contracts import (
    Geometry,
    IngestProblem,
    ProgressFn,
    SeriesVolume,
    SliceRef,
    no_progress,
)
from radseg.errors import InputError

__all__ = ["dicom_to_volume", "find_files", "read_series"]

log = logging.getLogger(__name__)

Deidentify = Callable[[Dataset], Dataset]

#: Two orientations (cosines) or positions (mm) closer than this are the same.
_ORIENTATION_TOL = 1e-4
_POSITION_TOL = 1e-3
#: Relative deviation of a slice gap from the mean gap that counts as uneven spacing.
_SPACING_TOL = 0.01


@dataclass
class _Slice:
    """One decoded slice: de-identified header (pixels dropped) and raw stored values."""

    source: str
    ds: Dataset
    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    slope: float
    intercept: float


def find_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursive, hidden files included), in a stable order."""
    root = Path(root)
    if root.is_file():
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / name for name in sorted(filenames))
    return out


def read_series(
    source: Path | Iterable[Path],
    *,
    deidentify: Deidentify,
    problems: list[IngestProblem],
    progress: ProgressFn = no_progress,
) -> list[SeriesVolume]:
    """Read every image series in ``source`` (a folder, searched recursively, or a list of files).

    :param deidentify: applied to each pydicom ``Dataset`` right after it is read and before any
        identifier is looked at; patient key and UIDs of the result come from its output.
    :param problems: receives one :class:`IngestProblem` per unusable file or dropped slice.
    :param progress: told the fraction of files read.
    :returns: one :class:`SeriesVolume` per series, in order of SeriesInstanceUID (after
        de-identification).
    """
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        paths = find_files(root)
        base = root if root.is_dir() else root.parent
    else:
        paths = [Path(p) for p in source]
        base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()

    groups: dict[str, list[_Slice]] = defaultdict(list)
    for i, path in enumerate(paths):
        name = _display_name(path, base)
        item = _read_file(path, deidentify=deidentify, problems=problems, name=name)
        if item is not None:
            groups[str(item.ds.get("SeriesInstanceUID", ""))].append(item)
        if i % 16 == 0 or i == len(paths) - 1:
            progress((i + 1) / len(paths), f"read {i + 1}/{len(paths)} files")

    volumes = []
    for uid in sorted(groups):
        volume = _slices_to_volume(groups[uid], problems)
        if volume is not None:
            volumes.append(volume)
    return volumes


def _read_file(
    path: Path,
    *,
    deidentify: Deidentify,
    problems: list[IngestProblem],
    name: str | None = None,
) -> _Slice | None:
    """Read, de-identify and decode one file; ``None`` when it is not an image slice.

    Non-DICOM files and DICOMDIRs return ``None`` silently; anything else that fails is appended
    to ``problems`` under ``name`` (default: the file name).
    """
    name = name or Path(path).name
    try:
        ds = _dcmread(Path(path))
    except Exception as exc:  # truncated headers raise anything from EOFError to ValueError
        problems.append(IngestProblem(name, f"unreadable DICOM file ({type(exc).__name__})"))
        return None
    if ds is None:
        log.debug("skipping %s: not a DICOM file", name)
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        log.debug("skipping %s: DICOMDIR", name)
        return None
    try:
        ds = deidentify(ds)
    except Exception as exc:
        problems.append(IngestProblem(name, f"de-identification failed ({type(exc).__name__})"))
        return None
    try:
        item = _decode(name, ds)
    except _NotAnImage as exc:
        problems.append(IngestProblem(name, str(exc)))
        return None
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        problems.append(IngestProblem(name, f"pixel data could not be decoded: {reason}"))
        return None
    del ds.PixelData  # only the header is kept; the pixels now live in ``item.pixels``
    return item


def _dcmread(path: Path) -> Dataset | None:
    """``dcmread``, also accepting files without the Part 10 preamble; ``None`` if not DICOM.

    Old exports sometimes omit the 128-byte preamble and ``DICM``; such a file starts straight
    with a group 0008 element, so it is read with ``force=True`` and its transfer syntax
    taken from how it decoded.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x08\x00":
                return None
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    return ds


def dicom_to_volume(
    datasets: Sequence[Dataset],
    *,
    problems: list[IngestProblem] | None = None,
    names: Sequence[str] | None = None,
) -> SeriesVolume:
    """Assemble one series from already de-identified datasets that still hold their pixels.

    The datasets may come in any order. Slices with a different orientation, matrix or pixel
    spacing than the majority, and repeated positions, are dropped and reported in ``problems``.

    :raises InputError: when no dataset is a usable image slice.
    """
    problems = problems if problems is not None else []
    names = names if names is not None else [f"instance {i}" for i in range(len(datasets))]
    slices = []
    for name, ds in zip(names, datasets, strict=True):
        try:
            slices.append(_decode(name, ds))
        except Exception as exc:
            problems.append(IngestProblem(name, str(exc) or type(exc).__name__))
    volume = _slices_to_volume(slices, problems)
    if volume is None:
        raise InputError(
            "none of the datasets is a usable image slice (pixel data, position, orientation "
            "and pixel spacing are needed)"
        )
    return volume


class _NotAnImage(Exception):
    """The dataset is valid DICOM but not a single-frame image slice with geometry."""


def _decode(name: str, ds: Dataset) -> _Slice:
    if "PixelData" not in ds:
        sop_class = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        raise _NotAnImage(f"no pixel data ({sop_class}): a truncated file or not an image; skipped")
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds or ds[keyword].value in (None, ""):
            raise _NotAnImage(f"missing {keyword}; cannot place the slice in space, skipped")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise _NotAnImage("multi-frame images are not supported yet; skipped")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise _NotAnImage("colour images are not supported; skipped")
    pixels = ds.pixel_array
    if pixels.ndim != 2:
        raise _NotAnImage(f"pixel array has shape {pixels.shape}, expected rows x columns")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    if position.shape != (3,) or orientation.shape != (6,):
        raise _NotAnImage("malformed ImagePositionPatient/ImageOrientationPatient; skipped")
    return _Slice(name, ds, pixels, position, orientation, slope, intercept)


def _slices_to_volume(slices: list[_Slice], problems: list[IngestProblem]) -> SeriesVolume | None:
    if not slices:
        return None
    warnings: list[str] = []
    first = slices[0].ds
    series_uid = str(first.get("SeriesInstanceUID", ""))

    # Keep the largest group that shares orientation, matrix and pixel spacing.
    def layout(s: _Slice) -> tuple[Any, ...]:
        return (
            tuple(np.round(s.orientation / _ORIENTATION_TOL).astype(np.int64)),
            s.pixels.shape,
            tuple(round(float(v), 4) for v in s.ds.PixelSpacing),
        )

    counts = Counter(layout(s) for s in slices)
    if len(counts) > 1:
        keep = counts.most_common(1)[0][0]
        dropped = [s for s in slices if layout(s) != keep]
        slices = [s for s in slices if layout(s) == keep]
        for s in dropped:
            problems.append(
                IngestProblem(
                    s.source,
                    f"series {series_uid}: orientation, matrix or pixel spacing differs from the "
                    "other slices; left out (split the series to keep it)",
                )
            )
        warnings.append(
            f"{len(dropped)} slice(s) with a different orientation, matrix or pixel spacing were "
            "left out (e.g. a localizer in the same series)"
        )

    row = slices[0].orientation[:3]
    col = slices[0].orientation[3:]
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    # Sort along the normal; ties keep the lowest InstanceNumber then SOPInstanceUID, for a
    # deterministic choice of which duplicate survives.
    def order(s: _Slice) -> tuple[float, int, str]:
        return (
            float(s.position @ normal),
            int(s.ds.get("InstanceNumber", 0) or 0),
            str(s.ds.get("SOPInstanceUID", "")),
        )

    slices.sort(key=order)
    kept: list[_Slice] = [slices[0]]
    duplicates = 0
    for s in slices[1:]:
        if abs(float((s.position - kept[-1].position) @ normal)) < _POSITION_TOL:
            duplicates += 1
            same = s.ds.get("SOPInstanceUID") == kept[-1].ds.get("SOPInstanceUID")
            problems.append(
                IngestProblem(
                    s.source,
                    f"series {series_uid}: "
                    + (
                        "same instance stored twice"
                        if same
                        else "another slice has the same position"
                    )
                    + f" ({kept[-1].source}); left out",
                )
            )
            continue
        kept.append(s)
    if duplicates:
        warnings.append(f"{duplicates} slice(s) at duplicate positions were left out")
    slices = kept

    positions = np.stack([s.position for s in slices])
    distances = positions @ normal
    nz = len(slices)
    if nz > 1:
        gaps = np.diff(distances)
        z_spacing = float((distances[-1] - distances[0]) / (nz - 1))
        if np.max(np.abs(gaps - z_spacing)) > _SPACING_TOL * z_spacing:
            warnings.append(
                f"uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm, mean "
                f"{z_spacing:.3f} mm): missing slices or a variable-thickness scan; the volume "
                "uses the mean, resample before measuring"
            )
        drift = positions[-1] - positions[0]
        in_plane = drift - normal * float(drift @ normal)
        if np.linalg.norm(in_plane) > 0.01 * abs(float(drift @ normal)) + _POSITION_TOL:
            warnings.append(
                "slice positions are not along the slice normal (gantry tilt?); the volume is "
                "treated as orthogonal"
            )
    else:
        z_spacing = float(
            first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 0) or 1.0
        )
        warnings.append("single-slice series; z spacing taken from the header")

    patient_ids = {str(s.ds.get("PatientID", "")) for s in slices}
    if len(patient_ids) > 1:
        warnings.append("slices disagree on PatientID; the first slice's is used")

    raw = np.stack([s.pixels for s in slices])
    slopes = np.array([s.slope for s in slices], dtype=np.float32)[:, None, None]
    intercepts = np.array([s.intercept for s in slices], dtype=np.float32)[:, None, None]
    hu = raw.astype(np.float32)
    if np.any(slopes != 1):
        hu *= slopes
    if np.any(intercepts != 0):
        hu += intercepts

    ny, nx = raw.shape[1:]
    pixel_spacing = [float(v) for v in slices[0].ds.PixelSpacing]
    direction = np.stack([row, col, normal], axis=1)
    geometry = Geometry(
        size=(int(nx), int(ny), int(nz)),
        spacing=(pixel_spacing[1], pixel_spacing[0], abs(z_spacing)),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )
    refs = [
        SliceRef(
            sop_instance_uid=str(s.ds.get("SOPInstanceUID", "")),
            slice_index=k,
            image_position_patient=tuple(float(v) for v in s.position),  # type: ignore[arg-type]
        )
        for k, s in enumerate(slices)
    ]
    head = slices[0].ds
    return SeriesVolume(
        patient_key=str(head.get("PatientID", "")),
        study_instance_uid=str(head.get("StudyInstanceUID", "")),
        series_instance_uid=series_uid,
        modality=str(head.get("Modality", "")),
        geometry=geometry,
        hu=hu,
        slices=refs,
        description=str(head.get("SeriesDescription", "") or ""),
        warnings=warnings,
    )


def _display_name(path: Path, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).name
