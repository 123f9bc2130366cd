"""The files one ingest writes under ``RADSEG_HOME``, and how a failed series takes them back.

* ``studies/<StudyInstanceUID>/<SeriesInstanceUID>/<n>.dcm`` — the de-identified originals
  (DESIGN §9), in slice order, when the source has DICOM originals;
* ``volumes/<SeriesInstanceUID>.nii`` — the HU cache every build, prediction and view reads;
* ``labels/<SeriesInstanceUID>/v<N>.nii.gz`` — label volumes.

Each is written atomically and noted in the series' :class:`Created` log. When the series' rows
fail to commit, :meth:`Created.undo` removes what this ingest wrote, and only that, except the
files a series committed meanwhile by another ingest of the same input points to
(:func:`committed_files`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sqlalchemy import select

from radseg.contracts import Geometry, SeriesVolume
from radseg.core import Platform
from radseg.db.models import LabelSet, Series
from radseg.errors import InputError
from radseg.imaging.volumes import nifti_header, write_volume
from radseg.storage import atomic_directory, atomic_path

__all__ = ["Created", "committed_files", "store_label_file", "store_series_files"]

log = logging.getLogger(__name__)


class Created:
    """What one ingest wrote, to undo on failure: its files, the folder trees it made whole, and
    the parent folders it made (removed only while empty: another ingest may have filled them).
    Deletes go through :meth:`Platform.remove`, checked to stay inside their area."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.items: list[tuple[Path, str, bool]] = []  # path, area under RADSEG_HOME, empty_only

    def add(self, path: Path, area: str) -> None:
        """Note a file or folder tree this ingest wrote under ``RADSEG_HOME/area``."""
        self.items.append((path, area, False))

    def parents(self, path: Path, area: str) -> list[Path]:
        """Note the missing folders between ``RADSEG_HOME/area`` and ``path`` (call before
        writing ``path``); they are removed on undo while still empty."""
        root = self.platform.path(area)
        missing = []
        for parent in Path(path).parents:
            if parent == root or root not in parent.parents or parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):  # outermost first: undone last
            self.items.append((parent, area, True))
        return missing

    def undo(self, keep: set[Path] | None = None) -> None:
        """Remove what was created, newest first, except what lies in ``keep`` (resolved); a
        failure to remove one is logged, not raised (the ingest's own error is the one to
        report)."""
        for path, area, empty_only in reversed(self.items):
            if keep and _within(Path(path).resolve(), keep):
                continue
            try:
                self.platform.remove(path, within=area, empty_only=empty_only)
            except (OSError, InputError) as exc:
                log.error("could not remove %s after a failed ingest: %s", path, exc)
        self.items.clear()


def _within(path: Path, roots: set[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def committed_files(platform: Platform, series_uid: str) -> set[Path] | None:
    """The files and folders a committed series ``series_uid`` points to (resolved), read in a
    fresh session after this ingest's transaction failed; ``None`` when no such series is stored.

    Another ingest of the same series may have committed between this one's check and its row
    insert: the volume, originals and label files this ingest wrote are then that series' files.
    When the check itself fails, everything this series' files might be is kept: a stray file
    is harmless, a deleted committed volume is not.
    """
    try:
        with platform.sessions() as session:
            series = session.scalars(
                select(Series).where(Series.series_instance_uid == series_uid)
            ).first()
            if series is None:
                return None
            kept = {
                platform.resolve(series.volume_path),
                platform.path("studies", series.study.study_instance_uid, series_uid),
            }
            kept.update(
                platform.resolve(path)
                for path in session.scalars(
                    select(LabelSet.path).where(LabelSet.series_id == series.id)
                )
            )
    except Exception:
        log.exception("could not check whether series %s was stored meanwhile", series_uid)
        return {
            platform.path("volumes", f"{series_uid}.nii").resolve(),
            platform.path("labels", series_uid).resolve(),
        } | {p.resolve() for p in platform.path("studies").glob(f"*/{series_uid}")}
    return {p.resolve() for p in kept}


def store_series_files(platform: Platform, volume: SeriesVolume, created: Created) -> Path:
    """Write the originals and the HU cache of a new series; returns the cache file.

    The originals are written on a thread while this one writes the HU cache: both are mostly
    copies into the page cache, which release the GIL. Both are in ``created`` (to undo) by the
    time this returns or raises.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="radseg-originals") as pool:
        originals = (
            pool.submit(_store_originals, platform, volume, created) if volume.originals else None
        )
        volume_file = _store_hu_cache(platform, volume, created)
    if originals is not None:
        originals.result()
    return volume_file


def _store_hu_cache(platform: Platform, volume: SeriesVolume, created: Created) -> Path:
    # The HU cache is read whole by every dataset build, prediction and viewer session: it is
    # kept uncompressed (.nii): writing a 300×512² volume took 0.14 s against 5.1 s for .nii.gz
    # (docs/benchmarks.md), for about twice the disk. Labels and predictions, which compress far
    # better, stay .nii.gz.
    volume_file = platform.path("volumes", f"{volume.series_instance_uid}.nii")
    existed = volume_file.exists()
    if not _write_int16_nifti(volume_file, volume.hu, volume.geometry):
        write_volume(volume_file, _compact_hu(volume.hu), volume.geometry)
    if not existed:
        created.add(volume_file, "volumes")
    return volume_file


def store_label_file(
    platform: Platform, volume: SeriesVolume, version: int, created: Created
) -> Path:
    """Write the volume's labels as label version ``version`` of its series; returns the file."""
    assert volume.labels is not None
    label_file = platform.path("labels", volume.series_instance_uid, f"v{version}.nii.gz")
    created.parents(label_file, "labels")
    existed = label_file.exists()
    write_volume(label_file, volume.labels, volume.geometry)
    if not existed:
        created.add(label_file, "labels")
    return label_file


def _compact_hu(hu: np.ndarray) -> np.ndarray:
    """``hu`` as int16 when every value is an integer in range (exact, half the disk), else as is.

    The same rule as :func:`radseg.imaging.volumes.write_volume`, checked a few slices at a time
    so the temporaries stay small (the whole-volume check cost about 0.4 s for 300×512²).
    """
    if hu.dtype.kind != "f" or hu.ndim != 3:
        return hu
    out = np.empty(hu.shape, dtype=np.int16)
    step = max(1, (1 << 20) // max(1, hu.shape[1] * hu.shape[2]))
    for z in range(0, hu.shape[0], step):
        block = hu[z : z + step]
        converted = out[z : z + step]
        # unsafe cast: out-of-range or fractional values come back different and are caught
        np.copyto(converted, block, casting="unsafe")
        if not np.array_equal(converted, block):
            return hu
    return out


def _write_int16_nifti(path: Path, hu: np.ndarray, geometry: Geometry) -> bool:
    """Write the HU cache as :func:`write_volume` would write ``_compact_hu(hu)``, byte for
    byte, when it is int16; ``False`` (nothing written) when it is not (fractional or
    out-of-range values) or the volume does not fit NIfTI-1's 16-bit dimensions.

    SimpleITK copies the whole array into an image before writing it, and the int16 volume is
    itself a copy of the float32 one: here each block of slices is converted into one small
    buffer and written straight away, after SimpleITK's own header
    (:func:`radseg.imaging.volumes.nifti_header`; a test compares the result with SimpleITK's
    file for several geometries).
    """
    if hu.ndim != 3 or hu.dtype.kind not in "fi" or max(hu.shape) > np.iinfo(np.int16).max:
        return False
    if hu.dtype.kind == "i" and hu.dtype != np.int16:
        return False
    try:
        _stream_int16_nifti(path, hu, nifti_header(hu.shape, np.dtype(np.int16), geometry))
    except _NotInt16:
        return False
    return True


def _stream_int16_nifti(path: Path, hu: np.ndarray, header: bytes) -> None:
    with atomic_path(path) as tmp:
        step = max(1, (1 << 20) // max(1, hu.shape[1] * hu.shape[2]))
        buffer = np.empty((step, *hu.shape[1:]), dtype="<i2")
        with open(tmp, "wb") as fh:
            fh.write(header)
            if hu.dtype == np.dtype("<i2") and hu.flags.c_contiguous:
                fh.write(hu.data)  # the reader's int16 volume, as it is in memory
                return
            for z in range(0, hu.shape[0], step):
                block = hu[z : z + step]
                converted = buffer[: len(block)]
                # unsafe cast: out-of-range, fractional or NaN values come back different
                with np.errstate(invalid="ignore"):
                    np.copyto(converted, block, casting="unsafe")
                if hu.dtype.kind == "f" and not np.array_equal(converted, block):
                    raise _NotInt16
                fh.write(converted.data)


class _NotInt16(Exception):
    pass


def _store_originals(platform: Platform, volume: SeriesVolume, created: Created) -> None:
    """Write the de-identified instances under ``studies/<study>/<series>/`` as one unit.

    A folder already there has no row (the caller found none): it was left by an ingest that
    crashed, or another ingest of the same series is writing it now. It is replaced as a whole
    (never deleted first), and not counted as this ingest's: a failure here leaves it be.
    """
    folder = platform.path("studies", volume.study_instance_uid, volume.series_instance_uid)
    existed = folder.exists()
    created.parents(folder, "studies")
    with atomic_directory(folder, replace=existed) as tmp:
        for k, data in enumerate(volume.originals):
            # named by position: the SOPInstanceUID is inside, and a name never carries PHI
            (tmp / f"{k:05d}.dcm").write_bytes(data)
    if not existed:
        created.add(folder, "studies")
