"""DICOM (through a dataset plugin) → de-identified rows, cached volumes and stored originals.

One ingest writes, all under ``RADSEG_HOME`` and all de-identified, the files of
:mod:`radseg.workflows.ingest_files` (originals, the HU cache, label volumes) and the rows Study
(with its ``ingest_report``, :mod:`radseg.workflows.ingest_report`), Series, Instance (one per
frame) and LabelSet.

Idempotent: a series whose (pseudonymised) SeriesInstanceUID is stored already is not written
again and an identical label volume adds no label version.

One series at a time, one short transaction each: its files are written (atomically) first, then
its rows, and the transaction commits before the next series is read. If a series fails, its rows
are rolled back and the files written for it removed, so a crash leaves neither half a volume nor
a stray one; the series committed before it stay, complete, and a re-run adds the rest. Only
what this ingest created is removed (:class:`~radseg.workflows.ingest_files.Created`), never what
another ingest wrote. When another ingest of the same series committed it meanwhile (the row
insert fails on the unique SeriesInstanceUID), the files that committed series points to are kept
and the series is reported "already present"
(:func:`~radseg.workflows.ingest_files.committed_files`).

The UIDs that name folders and files come from the dataset plugin, after de-identification: a
series whose Study or Series Instance UID is not a valid UID (PS3.5 §9.1) is refused with a
problem in the report, and every path is built through :meth:`Platform.path`, which refuses a
name that is not one plain path component (:func:`radseg.storage.inside`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radseg.contracts import (
    ClassInfo,
    DatasetSource,
    IngestProblem,
    ProgressFn,
    ReadRequest,
    SeriesVolume,
    count_problems,
    no_progress,
)
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetMember, Instance, LabelSet, Series, Study
from radseg.errors import IngestFailed, InputError
from radseg.imaging.deid import Deidentifier, is_valid_uid
from radseg.imaging.labels import read_class_map
from radseg.imaging.volumes import read_volume
from radseg.workflows.datasets import usable_dataset_name
from radseg.workflows.ingest_files import (
    Created,
    committed_files,
    store_label_file,
    store_series_files,
)
from radseg.workflows.ingest_report import IngestReport, ProblemNames, StudyReport

__all__ = ["deidentifier", "ingest"]

log = logging.getLogger(__name__)


def deidentifier(platform: Platform, *, allow_burned_in: bool | None = None) -> Deidentifier:
    return Deidentifier(
        key=platform.settings.secret("deid_key").encode(),
        shift_dates=platform.settings.shift_dates,
        allow_burned_in=(
            platform.settings.allow_burned_in_annotation
            if allow_burned_in is None
            else allow_burned_in
        ),
    )


def ingest(
    platform: Platform,
    path: Path,
    *,
    labels: Path | None = None,
    class_map: Path | None = None,
    dataset: str | None = None,
    source: str = "dicom-folder",
    author: str = "",
    allow_burned_in: bool | None = None,
    progress: ProgressFn = no_progress,
) -> IngestReport:
    """Read ``path`` with the dataset plugin ``source`` and store every series it yields.

    Each series is one short transaction of its own, committed before the next series is read:
    no lock is held while the plugin reads and de-identifies files (20,000 of them, or a PACS
    query), and an ingest that stops half-way keeps the series it completed; running it again
    adds the rest (ingest is idempotent). See the module docstring for what is written.

    :param labels: a label source (label volume, ``.seg.nrrd``, DICOM SEG, RTSTRUCT, folder of
        PNG masks or, for ``nifti-pairs``, a folder of label volumes); never a class map.
    :param class_map: a JSON class map for the labels
        (:func:`radseg.imaging.labels.read_class_map`).
    :param allow_burned_in: ingest instances with BurnedInAnnotation = YES (default: the
        ``allow_burned_in_annotation`` setting).
    :returns: the report; each study's part is also stored in ``Study.ingest_report``.
    """
    path = Path(path)
    reader = platform.plugins.dataset_source(source)
    classes = _check_inputs(reader, path, labels=labels, class_map=class_map, source=source)
    if dataset:
        with platform.sessions() as session:
            usable_dataset_name(session, dataset)
    report = IngestReport(names=ProblemNames(platform.settings.secret("deid_key").encode()))
    platform.ensure_home()
    try:
        request = ReadRequest(
            path,
            deidentify=deidentifier(platform, allow_burned_in=allow_burned_in),
            problems=report.problems,
            labels=labels,
            classes=classes,
        )
        volumes = reader.read(request, progress)
        for index, volume in enumerate(volumes, start=1):
            if _refused_uids(volume, index, source, report.problems):
                continue
            added, labelled = _store_series(platform, volume, dataset=dataset, author=author)
            report.add_series(volume, added=added, labelled=labelled)
        if report.stored_nothing:
            counted = f" ({count_problems(report.problems)} could not be used)"
            raise report.failure(
                "no readable series found in the input"  # not named: see the plugin
                + (counted if report.problems else "")
            )
    except InputError as exc:
        if report.problems and not isinstance(exc, IngestFailed):
            # the source gave up (no series, labels that fit none): its reason, and every
            # problem it had found on the way
            raise report.failure(str(exc)) from exc
        raise
    report.finish()
    with platform.sessions.begin() as session:
        _store_study_reports(session, report.studies)
    progress(1.0, report.summary())
    return report


def _check_inputs(
    reader: DatasetSource,
    path: Path,
    *,
    labels: Path | None,
    class_map: Path | None,
    source: str,
) -> list[ClassInfo] | None:
    """Check the inputs before anything is read; the class map's classes, if one was given.

    :raises InputError: a missing input or label file, a class map given as labels, or a class
        map for a source that takes none (``takes_class_map = False``).
    """
    # A source such as dicomweb takes a query, not a local path (reads_local_files = False).
    if getattr(reader, "reads_local_files", True) and not path.exists():
        raise InputError(f"{path} does not exist; give a DICOM folder or a .zip of one")
    if labels is not None and not Path(labels).exists():
        raise InputError(f"label file {labels} does not exist")
    if labels is not None and Path(labels).suffix.lower() == ".json":
        raise InputError(
            f"{Path(labels).name} is a class map, not labels: pass it as --class-map "
            f"{Path(labels).name} (--labels takes a label volume, .seg.nrrd, SEG, RTSTRUCT or a "
            "folder of them)"
        )
    if class_map is None:
        return None
    classes = read_class_map(Path(class_map))
    if not getattr(reader, "takes_class_map", True):
        raise InputError(
            f"the {source} source does not take a class map (its labels name their own "
            "classes); leave out --class-map"
        )
    return classes


def _refused_uids(
    volume: SeriesVolume, index: int, source: str, problems: list[IngestProblem]
) -> bool:
    """Whether series ``index`` is refused for a folder-naming UID that is not a valid UID (a
    problem is added, describing the UID without its value)."""
    for keyword, uid in (
        ("StudyInstanceUID", volume.study_instance_uid),
        ("SeriesInstanceUID", volume.series_instance_uid),
    ):
        if not is_valid_uid(uid):
            problems.append(
                IngestProblem(
                    path=f"series {index}",
                    reason=f"the dataset plugin {source!r} gave a {keyword} of "
                    f"{len(str(uid))} characters, which is not a valid UID (PS3.5 9.1: digits "
                    "and dots, at most 64 characters); the series was not stored (the plugin "
                    "must de-identify its UIDs)",
                    name=f"series {index}",
                )
            )
            return True
    return False


def _store_series(
    platform: Platform, volume: SeriesVolume, *, dataset: str | None, author: str
) -> tuple[bool, bool]:
    """Store one series in a transaction of its own; ``(added, labelled)``.

    On failure the rows are rolled back and this series' files removed, except those a series
    committed meanwhile by another ingest of the same input points to: that ingest stored it,
    and the series counts as already present (with a warning).
    """
    created = Created(platform)
    try:
        with platform.sessions.begin() as session:
            return _store_volume(
                platform, session, volume, dataset=dataset, author=author, created=created
            )
    except BaseException as exc:
        committed = committed_files(platform, volume.series_instance_uid)
        created.undo(keep=committed)
        if not committed or not isinstance(exc, IntegrityError):
            raise
    unstored = " (nor its labels: ingest again to add them)" if volume.labels is not None else ""
    volume.warnings.append(
        "another ingest stored this series at the same time; this input's copy was "
        f"not stored{unstored}"
    )
    return False, False


def _store_volume(
    platform: Platform,
    session: Session,
    volume: SeriesVolume,
    *,
    dataset: str | None,
    author: str,
    created: Created,
) -> tuple[bool, bool]:
    """Store one series: reads first, then its files, then its rows; ``(added, labelled)``.

    The order matters on SQLite: the write lock is taken at the first row written and held
    until the caller commits, so nothing slow (files) happens after it (:mod:`radseg.db.session`).
    """
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == volume.series_instance_uid)
    ).first()
    study = None
    if series is None:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == volume.study_instance_uid)
        ).first()
    else:
        _warn_if_slices_differ(session, series, volume)
    target = _find_dataset(session, dataset) if dataset else None
    member = (
        target is not None
        and series is not None
        and session.get(DatasetMember, (target.id, series.id)) is not None
    )
    label_version = (
        _next_label_version(platform, session, series, volume)
        if volume.labels is not None
        else None
    )
    # files (no lock held yet); the label volume is compressed on a thread meanwhile (SimpleITK
    # releases the GIL), and both are in ``created`` whatever happens
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="radseg-labels") as pool:
        labelling = (
            pool.submit(store_label_file, platform, volume, label_version, created)
            if label_version is not None
            else None
        )
        volume_file = store_series_files(platform, volume, created) if series is None else None
    label_file = labelling.result() if labelling is not None else None
    # rows (the write lock, until the caller commits)
    added = series is None
    if series is None:
        assert volume_file is not None
        series = _add_series(platform, session, study, volume, volume_file)
    if volume.study_date is not None and series.study.study_date is None:
        series.study.study_date = volume.study_date  # stored before migration 0012 kept dates
    if volume.slice_thickness is not None and series.slice_thickness is None:
        series.slice_thickness = volume.slice_thickness  # stored before migration 0015 kept it
    if label_file is not None:
        session.add(
            LabelSet(
                series_id=series.id,
                source="import",
                version=label_version,
                author=author,
                classes=_class_rows(volume),
                path=platform.relative(label_file),
            )
        )
    if dataset and not member:
        _add_member(session, target, dataset, series)
    return added, label_file is not None


def _warn_if_slices_differ(session: Session, series: Series, volume: SeriesVolume) -> None:
    """Say so when the stored series has another slice count than this input's: it is kept."""
    stored = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.series_id == series.id)
    )
    if stored != len(volume.slices):
        volume.warnings.append(
            f"the stored series has {stored} slices and this input "
            f"{len(volume.slices)}; the stored series was kept as it is (delete it "
            "and ingest again to replace it)"
        )


def _find_dataset(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).first()


def _add_member(session: Session, target: Dataset | None, name: str, series: Series) -> None:
    """Put ``series`` in dataset ``name`` (``target``, or a new dataset of that name)."""
    if target is None:
        target = Dataset(name=name)
        session.add(target)
        session.flush()
    session.add(DatasetMember(dataset_id=target.id, series_id=series.id))


def _add_series(
    platform: Platform,
    session: Session,
    study: Study | None,
    volume: SeriesVolume,
    volume_file: Path,
) -> Series:
    """The rows of a new series (and of its study, when new), its files already written."""
    if study is None:
        study = Study(
            study_instance_uid=volume.study_instance_uid,
            patient_key=volume.patient_key,
            description=volume.description,
            study_date=volume.study_date,
        )
        session.add(study)
        session.flush()
    series = Series(
        study_id=study.id,
        series_instance_uid=volume.series_instance_uid,
        modality=volume.modality,
        description=volume.description,
        geometry=volume.geometry.to_dict(),
        slice_thickness=volume.slice_thickness,
        volume_path=platform.relative(volume_file),
    )
    session.add(series)
    session.flush()
    # One bulk INSERT (executemany) instead of a unit-of-work object per slice.
    session.execute(
        insert(Instance),
        [
            {
                "series_id": series.id,
                "sop_instance_uid": s.sop_instance_uid,
                "frame_number": s.frame_number or 0,
                "slice_index": s.slice_index,
            }
            for s in volume.slices
        ],
    )
    return series


def _class_rows(volume: SeriesVolume) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "name": c.name, "color": list(c.color), "snomed_code": c.snomed_code}
        for c in volume.classes
    ]


def _next_label_version(
    platform: Platform, session: Session, series: Series | None, volume: SeriesVolume
) -> int | None:
    """The version the volume's labels get, or ``None`` when identical to the latest stored."""
    assert volume.labels is not None
    if series is None:
        return 1
    latest = session.scalars(
        select(LabelSet).where(LabelSet.series_id == series.id).order_by(LabelSet.version.desc())
    ).first()
    if latest is None:
        return 1
    if latest.classes == _class_rows(volume):
        existing, _ = read_volume(platform.resolve(latest.path))
        if existing.shape == volume.labels.shape and (existing == volume.labels).all():
            return None
    return latest.version + 1


def _store_study_reports(session: Session, reports: list[StudyReport]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for report in reports:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == report.study_instance_uid)
        ).first()
        if study is not None:
            study.ingest_report = {**report.to_dict(), "ingested_at": now}
