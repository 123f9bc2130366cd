"""The ``dicom-folder`` dataset source: DICOM files in a folder or a .zip, plus optional labels.

Reads every image series under a folder (recursively, any file order and nesting, with or
without a DICOMDIR — the files are found by walking, so a DICOMDIR that is stale or missing
does not matter) or inside a single ``.zip`` archive
(unpacked to a private temporary directory by :func:`radseg.archives.extract_zip`, the guard every
zip from outside goes through, with the ``archive_*`` limits of the settings). With ``labels`` — a
NIfTI/NRRD/MetaImage label volume, with an optional sidecar class map ``<file>.json`` such as
``{"classes": [{"id": 1, "name": "liver", "color": [221, 130, 101]}]}`` — the label volume is
placed on the grid of the series it belongs to (see :mod:`radseg.imaging.labels`) and attached to
that :class:`~radseg.contracts.SeriesVolume`; ``labels`` may also be any other label source
(3D Slicer ``.seg.nrrd``, DICOM SEG, RTSTRUCT, a folder of PNG masks: see
:mod:`radseg.imaging.label_sources`). DICOM SEG and RTSTRUCT files found among the images are put
on the series they reference. The de-identified datasets travel in
:attr:`~radseg.contracts.SeriesVolume.originals` so the host stores them under ``studies/``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk

from radseg.archives import ArchiveLimits, extract_zip
from radseg.contracts import (
    ClassInfo,
    IngestProblem,
    ProgressFn,
    ReadRequest,
    SeriesVolume,
    count_problems,
)
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.dicom_io import read_series
from radseg.imaging.labels import (
    classes_for_labels,
    find_class_map,
    label_image_to_grid,
    load_label_volume,
    read_class_map,
    read_label_geometry,
    same_grid,
)
from radseg.imaging.pairing import volume_stem

__all__ = ["DicomFolderSource", "radseg_configure", "radseg_register_datasets"]


class DicomFolderSource:
    """DICOM series from a folder or a ``.zip``; labels from one label volume file."""

    name: ClassVar[str] = "dicom-folder"

    def __init__(self, limits: ArchiveLimits | None = None) -> None:
        #: what a ``.zip`` may hold (the platform's ``archive_*`` settings, by radseg_configure)
        self.limits = limits or ArchiveLimits()

    def read(self, request: ReadRequest, progress: ProgressFn) -> Iterator[SeriesVolume]:
        """Yield every readable series under ``request.path``, the labelled one with its labels.

        ``request.classes`` is the class map for the labels (else the label source's own, or a
        sidecar) and for the DICOM SEG/RTSTRUCT found beside the images (renumbered by name);
        refused when there are no labels to apply it to.

        :raises InputError: ``path`` does not exist, an archive the guard refuses
            (:class:`radseg.archives.UnsafeArchiveError`), no series, or labels that match no
            single series.
        :raises radseg.errors.GeometryError: the labels do not overlap the series.
        """
        path, classes, problems = Path(request.path), request.classes, request.problems
        if not path.exists():
            raise InputError(f"{path} does not exist; give a folder of DICOM files or a .zip")

        def reading(fraction: float, message: str) -> None:
            progress(0.9 * fraction, message)

        if path.is_file() and volume_stem(path.name)[1]:
            raise InputError(_use_nifti_pairs(path.name, [path]))
        # A label volume is read (and decompressed) on a thread while the DICOM files are:
        # SimpleITK releases the GIL, and this process mostly waits on its reading processes.
        label_image = _LabelImage(Path(request.labels) if request.labels is not None else None)
        try:
            if path.is_file() and path.suffix.lower() == ".zip":
                with tempfile.TemporaryDirectory(prefix="radseg-zip-") as tmp:
                    folder = Path(tmp) / "zip"
                    extract_zip(path, folder, self.limits)
                    volumes = _read(folder, request.deidentify, problems, reading, classes)
            else:
                volumes = _read(path, request.deidentify, problems, reading, classes)
            if not volumes:
                found = _image_volumes(path) if path.is_dir() else []
                if found:
                    raise InputError(_use_nifti_pairs(path.name, found))
                # The reasons are in ``problems``: the host lists them with the files' names. The
                # input is not named: a folder named after the patient would end up in a job's
                # stored message.
                what = (
                    "folder"
                    if path.is_dir()
                    else "zip"
                    if path.suffix.lower() == ".zip"
                    else "file"
                )
                raise InputError(
                    f"no DICOM image series found in the {what}"
                    + (f" ({count_problems(problems)} could not be used)" if problems else "")
                )
            if request.labels is not None:
                progress(0.9, "placing labels on the image grid")
                _attach_labels(volumes, Path(request.labels), classes, label_image)
            elif classes is not None and all(v.labels is None for v in volumes):
                # the class map would be silently ignored: no labels given and none found beside
                raise InputError(
                    "a class map was given (--class-map) but there are no labels to apply it to: "
                    "no --labels, and no DICOM SEG or RTSTRUCT beside the images could be used; "
                    "give the labels with --labels, or leave out --class-map"
                )
        finally:
            label_image.close()
        progress(1.0, f"read {len(volumes)} series")
        yield from volumes


def _read(
    folder: Path,
    deidentify: Callable[[Any], Any],
    problems: list[IngestProblem],
    progress: ProgressFn,
    classes: Sequence[ClassInfo] | None = None,
) -> list[SeriesVolume]:
    """Image series under ``folder``, with the DICOM SEG/RTSTRUCT found beside them attached
    (their classes renumbered by name to ``classes``, the user's class map, when given)."""
    from radseg.imaging.label_sources.attach import attach_label_objects  # highdicom: lazily

    label_objects: list[tuple[Path, str, str]] = []
    volumes = read_series(
        folder,
        deidentify=deidentify,
        problems=problems,
        progress=progress,
        keep_originals=True,
        label_objects=label_objects,
    )
    if volumes and label_objects:
        first = len(problems)
        attach_label_objects(
            volumes,
            [p for p, _, _ in label_objects],
            deidentify=deidentify,
            problems=problems,
            names=[n for _, n, _ in label_objects],
            stored_names=[safe for _, _, safe in label_objects],
            classes=classes,
        )
        stored = {name: safe for _, name, safe in label_objects}
        for problem in problems[first:]:
            problem.name = stored.get(problem.path, "")
    elif label_objects:
        problems.extend(
            IngestProblem(name, "label object without any image series to put it on", name=safe)
            for _, name, safe in label_objects
        )
    return volumes


@hookimpl
def radseg_configure(platform: Any) -> ArchiveLimits:
    """The platform's limits for zips; the source has no settings of its own."""
    return ArchiveLimits.from_settings(platform.settings)


@hookimpl
def radseg_register_datasets() -> list[type[DicomFolderSource]]:
    return [DicomFolderSource]


def _use_nifti_pairs(name: str, volumes: list[Path]) -> str:
    """The hint to the nifti-pairs source. It names the input (the user's own path on the CLI, a
    random folder id for a web upload, whose failed job stores this message) but none of the
    volumes in it: their names may be a patient's."""
    what = "is" if len(volumes) == 1 and volumes[0].name == name else "holds"
    return (
        f"{name} {what} no DICOM image series but {len(volumes)} NIfTI/NRRD/MetaImage "
        f"volume(s); read them with the nifti-pairs source: radseg ingest {name} --source "
        "nifti-pairs (labels are paired by name, or give --labels)"
    )


def _image_volumes(folder: Path) -> list[Path]:
    """The NIfTI/NRRD/MetaImage files under ``folder`` (for the hint when it holds no DICOM)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and volume_stem(p.name)[1])


class _LabelImage:
    """The label volume file ``path`` read by SimpleITK on a thread, started now (``None``: no
    labels, or labels that are not one volume file)."""

    def __init__(self, path: Path | None) -> None:
        from radseg.imaging.label_sources import label_source_kind  # highdicom: lazily

        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[Any] | None = None
        if path is not None and path.is_file() and label_source_kind(path) == "volume":
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radseg-labels")
            self._future = self._pool.submit(sitk.ReadImage, str(path))

    def get(self) -> Any:
        """The image, or ``None`` when it was not read here or could not be read (whoever
        reads it again reports why)."""
        if self._future is None:
            return None
        try:
            return self._future.result()
        except Exception:
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _attach_labels(
    volumes: list[SeriesVolume],
    label_path: Path,
    classes: Sequence[ClassInfo] | None,
    label_image: _LabelImage | None = None,
) -> None:
    """Attach ``--labels`` to its series.

    A label volume (NIfTI/NRRD/MetaImage) goes to the only series, or the only one on its grid;
    every other label source (``.seg.nrrd``, DICOM SEG, RTSTRUCT, PNG masks) goes through
    :func:`radseg.imaging.label_sources.attach.attach_label_source`.
    """
    from radseg.imaging.label_sources import label_source_kind  # highdicom: lazily
    from radseg.imaging.label_sources.attach import attach_label_source

    if label_source_kind(label_path) != "volume":
        attach_label_source(volumes, label_path, classes=classes)
        return
    if len(volumes) == 1:
        target = volumes[0]
    else:
        grid = read_label_geometry(label_path)
        matches = [v for v in volumes if same_grid(v.geometry, grid)]
        if len(matches) != 1:
            raise InputError(
                f"labels {label_path.name} were given but the input holds {len(volumes)} series "
                f"and {len(matches)} share the label grid; ingest one series at a time"
            )
        target = matches[0]
    image = label_image.get() if label_image is not None else None
    target.labels = (
        label_image_to_grid(image, target.geometry, name=label_path.name)
        if image is not None
        else load_label_volume(label_path, target.geometry)
    )
    sidecar = find_class_map(label_path) if classes is None else None
    explicit = read_class_map(sidecar) if sidecar else classes
    target.classes = classes_for_labels(_present_ids(target.labels), explicit)


def _present_ids(labels: np.ndarray) -> list[int]:
    """The label values present in a uint8 volume.

    ``np.bincount`` widens its input to int64 (a 630 MB temporary for 300×512²); instead each
    block of slices is tested value by value between its min and max (SIMD comparisons, about
    4× faster for the handful of classes label volumes have), falling back to a per-block
    ``bincount`` when a block spans many values.
    """
    found: set[int] = set()
    flat = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels.reshape(1, -1)
    step = max(1, (1 << 22) // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], step):
        block = flat[start : start + step]
        low, high = int(block.min()), int(block.max())
        if high - low > 16:
            found.update(int(v) for v in np.flatnonzero(np.bincount(block.ravel())))
            continue
        found.update(v for v in range(low, high + 1) if v in found or bool((block == v).any()))
    return sorted(found)
