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

Each file is read on its own: whatever one file raises, at any step (parse, header,
de-identification, decoding, re-encoding), is reported for that file as an
:class:`~radseg.contracts.IngestProblem` with the step and the reason, and the rest of the input is
still read. A file that is not DICOM is reported as "not DICOM", unless it is a DICOMDIR index or
a file an export usually holds beside its images (README, viewer programs: :func:`known_non_dicom`),
which are skipped quietly. A DICOM file that cannot be used (truncated, no pixels, a declared size
its bytes do not back, undecodable) is reported, and so is one that is not an image series (an RT
Dose, RT Plan, SR, presentation state...: decided by its SOP class, see
:mod:`radseg.imaging.sop_classes`) or a Siemens mosaic (:mod:`radseg.imaging.mosaic`): both are
checked on the header as read, before de-identification removes the private elements and maps
private class UIDs. Reasons never quote header values.

Problems name the file twice (:class:`~radseg.contracts.IngestProblem`): ``path``, relative to the
folder read, as the user named it (for the console), and ``name``, the same with every name and
ID of a patient found in any header of the input replaced by ``[patient]`` (exports often name
folders and files after the patient): what may be stored. When no header of the input could be
read, nothing is known to take out and ``name`` stays empty.
"""

from __future__ import annotations

import io
import itertools
import logging
import mmap
import multiprocessing
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

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

from radseg.contracts import IngestProblem, ProgressFn, SeriesVolume, no_progress
from radseg.errors import InputError
from radseg.imaging.deid import RefusedInstance
from radseg.imaging.dicom_frames import (
    _ASSEMBLY_KEYWORDS,
    Frame,
    NotAnImage,
    UndecodablePixelData,
    dataset_to_frames,
)
from radseg.imaging.file_failures import is_file_failure
from radseg.imaging.geometry_checks import assemble_series
from radseg.imaging.mosaic import mosaic_reason
from radseg.imaging.part10 import part10_bytes
from radseg.imaging.pixel_checks import DamagedPixelData, InflateRefused, check_deflated
from radseg.imaging.sop_classes import not_an_image_reason

__all__ = [
    "dicom_to_volume",
    "find_files",
    "known_non_dicom",
    "patient_tokens",
    "read_file",
    "read_series",
    "scrub_name",
]

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
    label_objects: list[tuple[Path, str, str]] | None = None,
) -> list[SeriesVolume]:
    """Read every image series in ``source`` (a folder, searched recursively, or a list of files).

    :param deidentify: applied to each pydicom ``Dataset`` right after it is read and before any
        identifier is looked at; patient key and UIDs of the result come from its output. It may
        raise :class:`RefusedInstance` (e.g. burned-in annotation) to have the file reported.
    :param problems: receives one :class:`IngestProblem` per unusable file or dropped slice
        (with its ``frame`` when the problem is one frame of a multi-frame file).
    :param progress: told the fraction of files read.
    :param keep_originals: keep each de-identified instance, pixel data included, as Part 10
        bytes in :attr:`SeriesVolume.originals` (for storing the de-identified originals).
    :param workers: processes that read, de-identify and decode files (default: one per CPU, at
        most 4). Parsing DICOM is pure Python and holds the GIL, so threads would not help. What
        comes back from a process is slim (:func:`_packed`): the Part 10 bytes of the original,
        the few header elements the assembly reads, and the frames' pixels as a place in those
        bytes when they are stored there as decoded (native pixel data). A pool is used only for
        inputs of at least 32 files per process and a ``deidentify`` that can be pickled.
    :returns: one :class:`SeriesVolume` per series (or per stack of a series that mixes
        orientations), in order of SeriesInstanceUID (after de-identification).
    :param label_objects: when given, DICOM SEG and RTSTRUCT files are appended to it as
        ``(path, name, stored name)`` (the ``path`` and ``name`` of
        :class:`~radseg.contracts.IngestProblem`) instead of being reported as not images (see
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
    workers = workers if workers is not None else min(4, _usable_cpus())
    read = partial(
        _read_job,
        deidentify=deidentify,
        keep_originals=keep_originals,
        collect_labels=label_objects is not None,
    )
    frames: list[Frame] = []
    total = len(jobs)
    first_problem = len(problems)
    labels: list[tuple[Path, str, str]] = []
    tokens: set[str] = set()
    headers_read = False
    with (
        _executor(workers, total, deidentify) as pool,
        _shared_slots(paths, pool if keep_originals else None) as slots,
    ):
        results = _pool_results(pool, read, jobs, slots) if pool else map(read, jobs)
        for i, (found_frames, found_problems, found_labels, found_tokens) in enumerate(results):
            frames.extend(found_frames)
            problems.extend(found_problems)
            labels.extend(found_labels)
            if found_tokens is not None:
                headers_read = True
                tokens.update(found_tokens)
            if i % 16 == 0 or i == total - 1:
                progress((i + 1) / total, f"read {i + 1}/{total} files")
    volumes = assemble_series(frames, problems, keep_originals=keep_originals)
    # Names are scrubbed again with every patient identifier the input revealed: a file whose
    # own header is unreadable or anonymous may still sit in a folder named after the patient.
    for problem in problems[first_problem:]:
        problem.name = _scrub(problem.path, tokens) if headers_read else ""
    if label_objects is not None:
        label_objects.extend((path, name, _scrub(name, tokens)) for path, name, _ in labels)
    return volumes


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's share), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: Below this many files a process pool costs more than it saves.
_MIN_FILES_PER_PROCESS = 32


@contextmanager
def _executor(workers: int, files: int, deidentify: Deidentify) -> Iterator[Executor | None]:
    """A process pool when it pays off and ``deidentify`` can travel to it, else ``None``."""
    workers = min(workers, files // _MIN_FILES_PER_PROCESS)
    if workers < 2 or multiprocessing.current_process().daemon:  # a daemon may not fork helpers
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
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_quiet_values
    ) as pool:
        yield pool


def _quiet_values() -> None:
    """In a reading process: no value validation by pydicom. In its default mode it checks
    every value it decodes or sets against its VR only to warn (nothing is refused or changed:
    at most a Python warning on stderr, which quotes the value), which took about 6% of the time
    spent on each file. Set once per reading process, never in this one, where other threads
    may be using pydicom."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


#: ``(dtype, shape, offset)`` of a frame's pixels inside its file's Part 10 bytes
_PixelPlace = tuple[str, tuple[int, ...], int]
_JobResult = tuple[list[Frame], list[IngestProblem], list[tuple[Path, str, str]], set[str] | None]
#: ``(token, offset, capacity)``: where in the shared memory :data:`_SHARED` ``[token]`` a reading
#: process puts one file's de-identified original
_Slot = tuple[int, int, int]

#: The shared memory of the reads under way in this process, by token. It is mapped before the
#: reading processes are forked, so they write into the same pages this process reads.
_SHARED: dict[int, mmap.mmap] = {}
_shared_tokens = itertools.count()
#: De-identification may make a file longer (UIDs of 44 digits, the method and its codes).
_SLOT_SLACK = 1 << 16
#: At most this much shared memory is mapped for one read; the originals of the files past it
#: travel through the pipe.
_SHARED_BYTES = 16 << 30


@contextmanager
def _shared_slots(paths: Sequence[Path], pool: Executor | None) -> Iterator[list[_Slot | None]]:
    """One slot of shared memory per file for the reading processes of ``pool`` (all ``None``
    without a pool): the file's size and :data:`_SLOT_SLACK`, page-aligned, up to
    :data:`_SHARED_BYTES` in all (a file past that, or whose size cannot be read, gets ``None``
    and its original travels through the pipe).

    The originals stay where the reading processes wrote them: :func:`_unpacked` hands out
    views of the shared memory, which lives as long as they do. Pickled through the pipe, each
    original was copied four times and this process paid a page fault for every 4 KiB of its
    copy (about 0.2 s of CPU for 300 slices of 512²); mapping pages another process wrote costs
    a fraction of that.
    """
    slots: list[_Slot | None] = [None] * len(paths)
    if pool is None:
        yield slots
        return
    token = next(_shared_tokens)
    offset = 0
    for k, path in enumerate(paths):
        try:
            capacity = os.stat(path).st_size + _SLOT_SLACK
        except OSError:
            continue
        capacity = -(-capacity // mmap.PAGESIZE) * mmap.PAGESIZE
        if offset + capacity > _SHARED_BYTES:
            break
        slots[k] = (token, offset, capacity)
        offset += capacity
    try:
        # anonymous and shared (MAP_SHARED | MAP_ANONYMOUS), so the forked readers write into
        # the pages this process reads; memory is only used where it is written
        _SHARED[token] = mmap.mmap(-1, max(offset, 1))
    except (OSError, ValueError, OverflowError):  # no address space for it: the pipe it is
        slots = [None] * len(paths)
    try:
        yield slots
    finally:
        _SHARED.pop(token, None)  # the views handed out keep the memory mapped


def _pool_results(
    pool: Executor,
    read: Callable[[tuple[Path, str]], _JobResult],
    jobs: Sequence[tuple[Path, str]],
    slots: Sequence[_Slot | None],
) -> Iterator[_JobResult]:
    """The results of ``read`` over ``jobs`` from the reading processes, in order."""
    packed = pool.map(partial(_packed, read), jobs, slots, chunksize=8)
    return map(_unpacked, packed, slots)


def _packed(
    read: Callable[[tuple[Path, str]], _JobResult], job: tuple[Path, str], slot: _Slot | None
) -> tuple[_JobResult, list[_PixelPlace | None], int | None]:
    """``read(job)`` slimmed to cross the pipe from a reading process: each file's header
    keeps only the elements the assembly reads (:data:`_ASSEMBLY_KEYWORDS`), the de-identified
    original goes into the file's ``slot`` of shared memory when it fits (its length is sent;
    pickling it through the pipe copied each file four times), and a frame whose pixels are
    stored as they are in its original's last bytes (native pixel data, the usual case) travels
    as their place there (:func:`_unpacked` rebuilds the array as a view)."""
    result = read(job)
    frames = result[0]
    places: list[_PixelPlace | None] = []
    slim: dict[int, Dataset] = {}
    for k, frame in enumerate(frames):
        if id(frame.ds) not in slim:
            head = Dataset()
            for keyword in _ASSEMBLY_KEYWORDS:
                if keyword in frame.ds:
                    head[keyword] = frame.ds[keyword]
            slim[id(frame.ds)] = head
        frame.ds = slim[id(frame.ds)]
        places.append(_pixel_place(frame, len(frames) - k))
        if places[-1] is not None:
            frame.pixels = _NO_PIXELS
    original = frames[0].original if frames else None
    if (
        slot is None
        or original is None
        or len(original) > slot[2]
        or any(frame.original is not original for frame in frames)
    ):
        return result, places, None
    token, offset, _ = slot
    _SHARED[token][offset : offset + len(original)] = original
    for frame in frames:
        frame.original = None
    return result, places, len(original)


def _unpacked(
    packed: tuple[_JobResult, list[_PixelPlace | None], int | None], slot: _Slot | None
) -> _JobResult:
    result, places, shared = packed
    if shared is not None and slot is not None:
        token, offset, _ = slot
        original = memoryview(_SHARED[token])[offset : offset + shared].toreadonly()
        for frame in result[0]:
            frame.original = original
    for frame, place in zip(result[0], places, strict=True):
        if place is not None:
            assert frame.original is not None
            dtype, shape, offset = place
            count = int(np.prod(shape))
            frame.pixels = np.frombuffer(frame.original, dtype, count, offset).reshape(shape)
    return result


_NO_PIXELS = np.empty(0, dtype=np.uint8)


def _pixel_place(frame: Frame, from_end: int) -> _PixelPlace | None:
    """Where ``frame``'s pixels lie in its original, if they are there byte for byte: the
    ``from_end``-th frame-sized block from the end (pixel data is the last element of nearly
    every file and holds the frames in order); ``None`` otherwise."""
    pixels, original = frame.pixels, frame.original
    if original is None or not pixels.flags.c_contiguous or pixels.dtype.hasobject:
        return None
    offset = len(original) - from_end * pixels.nbytes
    if offset < 0:
        return None
    there = np.frombuffer(original, pixels.dtype, pixels.size, offset).reshape(pixels.shape)
    if not np.array_equal(there, pixels):
        return None
    return (pixels.dtype.str, tuple(pixels.shape), offset)


def _read_job(
    job: tuple[Path, str], *, deidentify: Deidentify, keep_originals: bool, collect_labels: bool
) -> _JobResult:
    """One file's frames, problems and label objects, and the patient identifiers its header
    holds (``None`` when the header could not be read)."""
    path, name = job
    found: list[IngestProblem] = []
    labels: list[tuple[Path, str, str]] = []
    frames, tokens = _read_file(
        path,
        deidentify=deidentify,
        problems=found,
        name=name,
        keep_pixels=keep_originals,
        label_objects=labels if collect_labels else None,
    )
    if keep_originals and frames:
        try:
            data = _original_bytes(frames[0].ds)
        except BaseException as exc:
            if not is_file_failure(exc):
                raise
            found.append(
                IngestProblem(
                    frames[0].source,
                    f"the de-identified instance could not be re-encoded ({type(exc).__name__}); "
                    "skipped, as its original could not be stored",
                    name=_scrub(frames[0].source, tokens or set()),
                )
            )
            return [], found, labels, tokens
        for frame in frames:  # one bytes object shared by the frames of a multi-frame file
            frame.original = data
        del frames[0].ds.PixelData  # the pixels now live in the frames and in ``original``
    return frames, found, labels, tokens


def _original_bytes(ds: Dataset) -> bytes:
    """``ds`` (de-identified, pixels included) as Part 10 bytes."""
    if getattr(ds, "preamble", None) is not None:
        return part10_bytes(ds)  # as it was encoded, de-identified
    # files that lacked the preamble and file meta get them
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, AttributeError):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def read_file(
    path: Path,
    *,
    deidentify: Deidentify,
    problems: list[IngestProblem],
    name: str | None = None,
    keep_pixels: bool = False,
    label_objects: list[tuple[Path, str, str]] | None = None,
) -> list[Frame]:
    """Read, de-identify and decode one file into its frames; ``[]`` when it is not usable.

    Every step (parse, header, de-identification, decoding) is isolated: whatever it raises is
    appended to ``problems`` under ``name`` (default: the file name) with the step and the
    exception's type, and ``[]`` is returned. Files that are not DICOM are reported as such,
    except DICOMDIRs and files known not to be DICOM (:func:`known_non_dicom`: README, viewer
    programs, macOS metadata...), which are skipped quietly. Objects that are not images and
    Siemens mosaics are reported before de-identification (see the module doc). A problem's
    stored ``name`` is ``name`` scrubbed with this file's patient identifiers (``""`` when its
    header could not be read).
    """
    frames, _ = _read_file(
        path,
        deidentify=deidentify,
        problems=problems,
        name=name,
        keep_pixels=keep_pixels,
        label_objects=label_objects,
    )
    return frames


def _read_file(
    path: Path,
    *,
    deidentify: Deidentify,
    problems: list[IngestProblem],
    name: str | None,
    keep_pixels: bool,
    label_objects: list[tuple[Path, str, str]] | None,
) -> tuple[list[Frame], set[str] | None]:
    """:func:`read_file`, and the patient identifiers of the file's header (``None`` when it
    could not be read)."""
    name = name or Path(path).name
    tokens: set[str] | None = None
    step = "unreadable DICOM file"

    def report(reason: str) -> tuple[list[Frame], set[str] | None]:
        safe = _scrub(name, tokens) if tokens is not None else ""
        problems.append(IngestProblem(name, reason, name=safe))
        return [], tokens

    try:
        check_deflated(Path(path))
        ds = _dcmread(Path(path))
        if isinstance(ds, _NotDicom):
            if Path(path).name.upper() != "DICOMDIR" and not known_non_dicom(name):
                return report(ds.reason)
            log.debug("skipping a file that is not DICOM (%s)", ds.reason)
            return [], None
        step = "damaged header (an element could not be read)"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            log.debug("skipping a DICOMDIR")
            return [], None
        tokens = patient_tokens(ds)
        if label_objects is not None and ds.get("SOPClassUID") in _LABEL_OBJECT_CLASSES:
            label_objects.append((Path(path), name, _scrub(name, tokens)))
            return [], tokens
        refusal = not_an_image_reason(ds) or mosaic_reason(ds)
        if refusal:
            return report(refusal)
        step = "de-identification failed"
        ds = deidentify(ds)
        step = "damaged header or pixel data"
        frames = dataset_to_frames(name, ds)
    except (RefusedInstance, NotAnImage) as exc:
        return report(str(exc))
    except InflateRefused as exc:
        return report(f"refused before reading: {exc}")
    except DamagedPixelData as exc:
        return report(f"pixel data refused before decoding: {exc}; skipped")
    except UndecodablePixelData as exc:
        return report(f"pixel data could not be decoded: {exc}"[:400])
    except BaseException as exc:
        if not is_file_failure(exc):
            raise
        return report(_reason(step, exc))
    if not keep_pixels:
        del ds.PixelData  # only the header is kept; the pixels now live in the frames
    return frames, tokens


def _reason(step: str, exc: BaseException) -> str:
    """``step`` and the exception's type; not its message, which may quote a header value."""
    kind = type(exc)
    if kind.__name__ == "PanicException":
        return f"{step}: a native decoder crashed (PanicException)"
    module = kind.__module__.split(".")[0]
    return f"{step} ({kind.__name__ if module == 'builtins' else f'{module}.{kind.__name__}'})"


#: Files a DICOM export often holds beside the images (viewer programs, indexes, notes, macOS
#: metadata): when they are not DICOM they are skipped without a report. Compared lowercased.
_KNOWN_NON_DICOM_NAMES = frozenset(
    {"readme", "license", "licence", "copying", "lockfile", "version", "autorun.inf"}
    | {".ds_store", "thumbs.db", "desktop.ini", "index.htm", "index.html"}
)
_KNOWN_NON_DICOM_SUFFIXES = frozenset(
    {".txt", ".md", ".rtf", ".pdf", ".htm", ".html", ".css", ".js", ".xml", ".xsl", ".json"}
    | {".ini", ".inf", ".cfg", ".log", ".csv", ".exe", ".dll", ".jar", ".so", ".dylib"}
    | {".ico", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".nii", ".gz", ".nrrd", ".mha", ".mhd"}
)


def known_non_dicom(name: str) -> bool:
    """Whether a file that turned out not to be DICOM is one an export usually holds besides
    its images (``name`` relative to the folder read), so that it is skipped quietly."""
    parts = Path(name).parts
    base = parts[-1].lower() if parts else ""
    return (
        base in _KNOWN_NON_DICOM_NAMES
        or base.startswith(("readme", "license", "._"))  # ._x: macOS resource forks
        or Path(base).suffix in _KNOWN_NON_DICOM_SUFFIXES
        or "__MACOSX" in parts
    )


def scrub_name(name: str, ds: Dataset) -> str:
    """``name`` with the patient's ID and name parts (from the not yet de-identified ``ds``)
    replaced by ``[patient]``: exports often name folders after the patient, and file names
    end up in problems, reports and logs."""
    return _scrub(name, patient_tokens(ds))


def patient_tokens(ds: Dataset) -> set[str]:
    """The patient's ID and the parts of their name (3 characters or more) in ``ds``, as read."""
    tokens = {str(ds.get("PatientID", "") or "").strip()}
    tokens.update(re.split(r"[\^\s,=]+", str(ds.get("PatientName", "") or "")))
    return {t for t in tokens if len(t) >= 3}


def _scrub(name: str, tokens: Iterable[str]) -> str:
    """``name`` with each token replaced by ``[patient]``, in one pass (longest first), so that
    no token is matched inside a replacement or a shorter token inside a longer one."""
    ordered = sorted(tokens, key=len, reverse=True)
    if not ordered:
        return name
    pattern = "|".join(re.escape(token) for token in ordered)
    return re.sub(pattern, "[patient]", name, flags=re.IGNORECASE)


class _NotDicom:
    """Why a file is not DICOM (returned, not raised: it is the usual case for README files)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


#: A file without the Part 10 preamble may start straight with a file meta (group 0002) or
#: a group 0008 element, in little endian.
_BARE_STARTS = (b"\x02\x00", b"\x08\x00")


def _dcmread(path: Path) -> Dataset | _NotDicom:
    """``dcmread``, also accepting files without the Part 10 preamble.

    Old exports sometimes omit the 128-byte preamble and ``DICM``; such a file starts straight
    with a group 0002 or 0008 element, so it is read with ``force=True`` and its transfer
    syntax taken from how it decoded.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        with open(path, "rb") as fh:
            start = fh.read(2)
        if not start:
            return _NotDicom("not DICOM: an empty file")
        if start not in _BARE_STARTS:
            return _NotDicom(
                "not DICOM: no 'DICM' marker at byte 128 and no DICOM element at the start (a "
                "damaged file, or another kind of file)"
            )
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
