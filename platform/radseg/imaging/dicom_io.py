"""Read DICOM image series into HU volumes with their geometry.

:func:`read_series` walks a folder (or takes files), de-identifies every header as soon as it is
read, decodes every frame (:mod:`radseg.imaging.dicom_frames`: all common transfer syntaxes,
legacy single-frame and enhanced multi-frame instances) and assembles the frames into series
volumes (:mod:`radseg.imaging.geometry_checks`: split by SeriesInstanceUID and geometry,
localizers excluded, duplicates, missing slices and gantry tilt reported).

Conventions:

* Slices are ordered by ImagePositionPatient projected on the slice normal
  ``n = row x column`` of ImageOrientationPatient, ascending — never by file name or
  InstanceNumber. This is the order GDCM (and so SimpleITK's ``ImageSeriesReader``) uses.
* The volume is float32 ``(z, y, x)``: HU = stored value x RescaleSlope + RescaleIntercept, per
  slice (per frame for enhanced instances).
* :class:`~radseg.contracts.Geometry` follows SimpleITK: ``size``/``spacing`` are ``(x, y, z)``;
  x spacing is PixelSpacing[1] (between columns), y spacing PixelSpacing[0] (between rows), z the
  mean distance between consecutive positions along ``n``; ``origin`` is the first slice's
  ImagePositionPatient; ``direction`` is row-major with columns ``(row, column, n)``.

Files that are not DICOM (and DICOMDIR indexes) are skipped quietly; a DICOM file that cannot be
used (truncated, no pixels, undecodable, not an image) is reported as an
:class:`~radseg.contracts.IngestProblem` and the rest of the series is still read. Problems name the
file relative to the folder read, with the patient's name and ID replaced by ``[patient]`` where
a folder or file is named after them (files whose header cannot be read are named as they are),
and never quote header values.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from radseg.contracts import IngestProblem, ProgressFn, SeriesVolume, no_progress
from radseg.errors import InputError
from radseg.imaging.deid import RefusedInstance
from radseg.imaging.dicom_frames import Frame, NotAnImage, dataset_to_frames
from radseg.imaging.geometry_checks import assemble_series
from radseg.imaging.part10 import part10_bytes

__all__ = ["dicom_to_volume", "find_files", "read_file", "read_series", "scrub_name"]

log = logging.getLogger(__name__)

#: Segmentation Storage and RT Structure Set Storage: labels, not images.
_LABEL_OBJECT_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.3"})

Deidentify = Callable[[Dataset], Dataset]


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
    keep_originals: bool = False,
    workers: int | None = None,
    label_objects: list[tuple[Path, str]] | None = None,
) -> list[SeriesVolume]:
    """Read every image series in ``source`` (a folder, searched recursively, or a list of files).

    :param deidentify: applied to each pydicom ``Dataset`` right after it is read and before any
        identifier is looked at; patient key and UIDs of the result come from its output. It may
        raise :class:`RefusedInstance` (e.g. burned-in annotation) to have the file reported.
    :param problems: receives one :class:`IngestProblem` per unusable file or dropped slice.
    :param progress: told the fraction of files read.
    :param keep_originals: keep each de-identified instance, pixel data included, as Part 10
        bytes in :attr:`SeriesVolume.originals` (for storing the de-identified originals).
    :param workers: processes that read, de-identify and decode files. Parsing DICOM is pure
        Python and holds the GIL, so threads would not help; but each slice then crosses a pipe
        twice over (pixels and original, about 1 MB for 512²), and on the 2-core development
        machine a pool of 2 was slower than reading in this process (docs/benchmarks.md). The
        default, 1, reads here; a pool is used only for larger inputs and a ``deidentify`` that
        can be pickled.
    :returns: one :class:`SeriesVolume` per series (or per stack of a series that mixes
        orientations), in order of SeriesInstanceUID (after de-identification).
    :param label_objects: when given, DICOM SEG and RTSTRUCT files are appended to it as
        ``(path, name)`` instead of being reported as not images (see
        :func:`radseg.imaging.label_sources.attach.attach_label_objects`).
    """
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        paths = find_files(root)
        base = root if root.is_dir() else root.parent
    else:
        paths = [Path(p) for p in source]
        base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path()

    jobs = [(path, _display_name(path, base)) for path in paths]
    read = partial(
        _read_job,
        deidentify=deidentify,
        keep_originals=keep_originals,
        collect_labels=label_objects is not None,
    )
    workers = workers if workers is not None else 1
    frames: list[Frame] = []
    total = len(jobs)
    with _executor(workers, total, deidentify) as pool:
        results = pool.map(read, jobs, chunksize=8) if pool else map(read, jobs)
        for i, (found_frames, found_problems, found_labels) in enumerate(results):
            frames.extend(found_frames)
            problems.extend(found_problems)
            if label_objects is not None:
                label_objects.extend(found_labels)
            if i % 16 == 0 or i == total - 1:
                progress((i + 1) / total, f"read {i + 1}/{total} files")
    return assemble_series(frames, problems, keep_originals=keep_originals)


#: Below this many files a process pool costs more than it saves.
_MIN_FILES_PER_PROCESS = 32


@contextmanager
def _executor(workers: int, files: int, deidentify: Deidentify) -> Iterator[Executor | None]:
    """A process pool when it pays off and ``deidentify`` can travel to it, else ``None``."""
    workers = min(workers, files // _MIN_FILES_PER_PROCESS)
    if workers < 2:
        yield None
        return
    try:
        pickle.dumps(deidentify)
    except Exception:  # a closure or lambda: read in this process
        yield None
        return
    # fork: the children inherit the imported modules (pydicom, numpy) instead of importing
    # them again, which would cost more than reading a few hundred files.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool


def _read_job(
    job: tuple[Path, str], *, deidentify: Deidentify, keep_originals: bool, collect_labels: bool
) -> tuple[list[Frame], list[IngestProblem], list[tuple[Path, str]]]:
    path, name = job
    found: list[IngestProblem] = []
    labels: list[tuple[Path, str]] = []
    frames = read_file(
        path,
        deidentify=deidentify,
        problems=found,
        name=name,
        keep_pixels=keep_originals,
        label_objects=labels if collect_labels else None,
    )
    if keep_originals and frames:
        ds = frames[0].ds
        if getattr(ds, "preamble", None) is not None:
            data = part10_bytes(ds)  # as it was encoded, de-identified
        else:
            # files that lacked the preamble and file meta get them
            buffer = io.BytesIO()
            try:
                pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            except (ValueError, AttributeError):
                buffer = io.BytesIO()
                pydicom.dcmwrite(buffer, ds)
            data = buffer.getvalue()
        for frame in frames:  # one bytes object shared by the frames of a multi-frame file
            frame.original = data
        del ds.PixelData  # the pixels now live in the frames and in ``original``
    return frames, found, labels


def read_file(
    path: Path,
    *,
    deidentify: Deidentify,
    problems: list[IngestProblem],
    name: str | None = None,
    keep_pixels: bool = False,
    label_objects: list[tuple[Path, str]] | None = None,
) -> list[Frame]:
    """Read, de-identify and decode one file into its frames; ``[]`` when it is not usable.

    Non-DICOM files and DICOMDIRs return ``[]`` silently; anything else that fails is appended
    to ``problems`` under ``name`` (default: the file name).
    """
    name = name or Path(path).name
    try:
        ds = _dcmread(Path(path))
    except Exception as exc:  # truncated headers raise anything from EOFError to ValueError
        problems.append(IngestProblem(name, f"unreadable DICOM file ({type(exc).__name__})"))
        return []
    if ds is None:
        log.debug("skipping %s: not a DICOM file", name)
        return []
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        log.debug("skipping %s: DICOMDIR", name)
        return []
    name = scrub_name(name, ds)
    if label_objects is not None and ds.get("SOPClassUID") in _LABEL_OBJECT_CLASSES:
        label_objects.append((Path(path), name))
        return []
    try:
        ds = deidentify(ds)
    except RefusedInstance as exc:
        problems.append(IngestProblem(name, str(exc)))
        return []
    except Exception as exc:
        problems.append(IngestProblem(name, f"de-identification failed ({type(exc).__name__})"))
        return []
    try:
        frames = dataset_to_frames(name, ds)
    except NotAnImage as exc:
        problems.append(IngestProblem(name, str(exc)))
        return []
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        problems.append(IngestProblem(name, f"pixel data could not be decoded: {reason}"))
        return []
    if not keep_pixels:
        del ds.PixelData  # only the header is kept; the pixels now live in the frames
    return frames


def scrub_name(name: str, ds: Dataset) -> str:
    """``name`` with the patient's ID and name parts (from the not yet de-identified ``ds``)
    replaced by ``[patient]``: exports often name folders after the patient, and file names
    end up in problems, reports and logs."""
    tokens = {str(ds.get("PatientID", "") or "").strip()}
    tokens.update(re.split(r"[\^\s,]+", str(ds.get("PatientName", "") or "")))
    for token in sorted((t for t in tokens if len(t) >= 3), key=len, reverse=True):
        name = re.sub(re.escape(token), "[patient]", name, flags=re.IGNORECASE)
    return name


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

    The datasets may come in any order and may be multi-frame. Slices with a different
    orientation, matrix or pixel spacing than the majority, and repeated positions, are dropped
    and reported in ``problems``; when several series or stacks result, the largest is returned.

    :raises InputError: when no dataset is a usable image slice.
    """
    problems = problems if problems is not None else []
    names = names if names is not None else [f"instance {i}" for i in range(len(datasets))]
    frames: list[Frame] = []
    for name, ds in zip(names, datasets, strict=True):
        try:
            frames.extend(dataset_to_frames(name, ds))
        except Exception as exc:
            problems.append(IngestProblem(name, str(exc) or type(exc).__name__))
    volumes = assemble_series(frames, problems)
    if not volumes:
        raise InputError(
            "none of the datasets is a usable image slice (pixel data, position, orientation "
            "and pixel spacing are needed)"
        )
    return max(volumes, key=lambda v: len(v.slices))


def _display_name(path: Path, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).name
