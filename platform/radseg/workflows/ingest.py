"""DICOM (through a dataset plugin) → de-identified rows, cached volumes and stored originals.

What one ingest writes, all under ``RADSEG_HOME`` and all de-identified:

* ``studies/<StudyInstanceUID>/<SeriesInstanceUID>/<n>.dcm`` — the de-identified originals
  (DESIGN §9), in slice order, when the source has DICOM originals;
* ``volumes/<SeriesInstanceUID>.nii`` — the HU cache every build, prediction and view reads;
* ``labels/<SeriesInstanceUID>/v<N>.nii.gz`` — label volumes;
* rows: Study (with its ``ingest_report``), Series, Instance (one per frame), LabelSet.

Idempotent: a series whose (pseudonymised) SeriesInstanceUID is stored already is not written
again and an identical label volume adds no label version.

One series at a time, one short transaction each: its files are written (atomically) first, then
its rows, and the transaction commits before the next series is read. If a series fails, its rows
are rolled back and the files written for it removed, so a crash leaves neither half a volume nor
a stray one; the series committed before it stay, complete, and a re-run adds the rest. Only
what this ingest created is removed (:class:`Created`), never what another ingest wrote. When
another ingest of the same series committed it meanwhile (the row insert fails on the unique
SeriesInstanceUID), the files that committed series points to are kept and the series is reported
"already present" (:func:`_committed_files`).

The UIDs that name folders and files come from the dataset plugin, after de-identification: a
series whose Study or Series Instance UID is not a valid UID (PS3.5 §9.1) is refused with a
problem in the report, and every path is built through :meth:`Platform.path`, which refuses a
name that is not one plain path component (:func:`radseg.storage.inside`).

Every problem is reported with its file and reason, in two forms (:class:`ProblemNames`): the
console of whoever ran the ingest shows the file as they named it (it is their own file on their
own terminal); what is stored (the study's report, the job's result or message) shows its
de-identified name and a keyed hash of the real one, which tells apart files whose names differ
only by the patient's name. The console shows the hash too, to match the two.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from radseg.contracts import (
    IngestProblem,
    ProgressFn,
    SeriesVolume,
    count_problems,
    no_progress,
)
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetMember, Instance, LabelSet, Series, Study
from radseg.errors import IngestFailed, InputError
from radseg.imaging.deid import Deidentifier, is_valid_uid
from radseg.imaging.labels import read_class_map
from radseg.imaging.volumes import read_volume, write_volume
from radseg.storage import atomic_directory
from radseg.workflows.datasets import usable_dataset_name

log = logging.getLogger(__name__)

#: Problems a failed ingest's message lists (the console lists them all).
_MAX_LISTED = 100


class ProblemNames:
    """How a problem's file is named: as stored, and on the console (see the module doc)."""

    def __init__(self, key: bytes = b"") -> None:
        self._key = key

    def tag(self, problem: IngestProblem) -> str:
        """``#`` and 10 hex digits of an HMAC of the real path: unique per file in practice,
        and, being keyed, no way to test a guessed name (a patient's) against it."""
        data = b"ingest-path:" + problem.path.encode("utf-8", "surrogateescape")
        return "#" + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:10]

    def stored(self, problem: IngestProblem) -> str:
        """The de-identified name (``file`` where it could not be checked), hash, frame."""
        return f"{_printable(problem.name or 'file')} {self.tag(problem)}{_frame(problem)}"

    def shown(self, problem: IngestProblem) -> str:
        """The real name, frame and hash, for the console only."""
        return f"{_printable(problem.path)}{_frame(problem)} [{self.tag(problem)}]"

    def stored_dict(self, problem: IngestProblem) -> dict[str, Any]:
        return {"path": self.stored(problem), "reason": problem.reason, "frame": problem.frame}


def _frame(problem: IngestProblem) -> str:
    return f" frame {problem.frame}" if problem.frame is not None else ""


def _printable(text: str) -> str:
    """``text`` as is when printable, else escaped: a file name may hold newlines or escape
    sequences that would forge report lines or move the terminal's cursor."""
    return text if text.isprintable() else ascii(text)[1:-1]


@dataclass
class SeriesReport:
    """One series of a study as the ingest saw it."""

    series_instance_uid: str
    modality: str
    slices: int
    status: str  # "added" or "already present"
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "modality": self.modality,
            "slices": self.slices,
            "status": self.status,
            "labels": self.labels,
            "warnings": self.warnings,
        }


@dataclass
class StudyReport:
    """Per-study report: series found, files skipped and why, slices, labels."""

    study_instance_uid: str
    patient_key: str
    series: list[SeriesReport] = field(default_factory=list)
    skipped: list[IngestProblem] = field(default_factory=list)
    names: ProblemNames = field(default_factory=ProblemNames, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as stored with the study: files by their stored names."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "patient_key": self.patient_key,
            "series": [s.to_dict() for s in self.series],
            "skipped": [self.names.stored_dict(p) for p in self.skipped],
            "slices": sum(s.slices for s in self.series),
        }

    def lines(self) -> list[str]:
        """The report as text lines, for the console (files by their real names)."""
        out = [f"study {self.study_instance_uid} (patient {self.patient_key})"]
        for s in self.series:
            labels = f", labels: {', '.join(s.labels)}" if s.labels else ""
            out.append(
                f"  series {s.series_instance_uid} {s.modality}: {s.slices} slices, "
                f"{s.status}{labels}"
            )
            out.extend(f"    warning: {w}" for w in s.warnings)
        out.extend(f"  skipped {self.names.shown(p)}: {p.reason}" for p in self.skipped)
        return out


@dataclass
class IngestReport:
    """What one ingest did; contains pseudonymised identifiers only."""

    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    problems: list[IngestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    slices: int = 0
    labelled: int = 0
    studies: list[StudyReport] = field(default_factory=list)
    names: ProblemNames = field(default_factory=ProblemNames, repr=False)

    @property
    def unassigned(self) -> list[IngestProblem]:
        """Problems not listed under any study of the report: files that could not be tied to
        a series (unreadable, not images) and those of series that were excluded whole (e.g.
        made only of localizers)."""
        listed = {id(p) for study in self.studies for p in study.skipped}
        return [p for p in self.problems if id(p) not in listed]

    def to_dict(self) -> dict[str, Any]:
        """The report as stored (a job's result): files by their stored names."""
        return {
            "added": self.added,
            "already_present": self.already_present,
            "problems": [self.names.stored_dict(p) for p in self.problems],
            "warnings": self.warnings,
            "slices": self.slices,
            "labelled": self.labelled,
            "studies": [s.to_dict() for s in self.studies],
        }

    def summary(self) -> str:
        problems = (
            f"{len(self.problems)} problem(s) ({count_problems(self.problems)})"
            if self.problems
            else "0 problems"
        )
        return (
            f"{len(self.added)} series added, {len(self.already_present)} already present, "
            f"{self.slices} slices, {self.labelled} with labels, {problems}"
        )

    def failure(self, headline: str) -> IngestFailed:
        """The error for an ingest that stored nothing: every problem, stored and shown."""
        stored = [f"{self.names.stored(p)}: {p.reason}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            stored.append(f"and {len(self.problems) - _MAX_LISTED} more")
        shown = [f"skipped {self.names.shown(p)}: {p.reason}" for p in self.problems]
        return IngestFailed(headline, "; ".join(stored), shown)


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
    read_options: dict[str, Any] = {}
    if class_map is not None:
        read_options["classes"] = read_class_map(Path(class_map))
        if not _takes_classes(reader):
            raise InputError(
                f"the {source} source does not take a class map (its labels name their own "
                "classes); leave out --class-map"
            )
    if dataset:
        with platform.sessions() as session:
            usable_dataset_name(session, dataset)
    report = IngestReport(names=ProblemNames(platform.settings.secret("deid_key").encode()))
    platform.ensure_home()
    studies: dict[str, StudyReport] = {}
    try:
        for index, volume in enumerate(
            reader.read(
                path,
                labels=labels,
                deidentify=deidentifier(platform, allow_burned_in=allow_burned_in),
                progress=progress,
                problems=report.problems,
                **read_options,
            ),
            start=1,
        ):
            invalid = _invalid_uids(volume)
            if invalid:
                report.problems.append(
                    IngestProblem(
                        path=f"series {index}",
                        reason=f"the dataset plugin {source!r} gave {invalid}, which is not a "
                        "valid UID (PS3.5 9.1: digits and dots, at most 64 characters); the "
                        "series was not stored (the plugin must de-identify its UIDs)",
                        name=f"series {index}",
                    )
                )
                continue
            created = Created(platform)
            try:
                with platform.sessions.begin() as session:
                    added, labelled = _store_volume(
                        platform, session, volume, dataset=dataset, author=author, created=created
                    )
            except BaseException as exc:
                # The rows were rolled back; the files of this series go too, except those that
                # a series committed meanwhile by another ingest of the same input points to.
                committed = _committed_files(platform, volume.series_instance_uid)
                created.undo(keep=committed)
                if not committed or not isinstance(exc, IntegrityError):
                    raise
                added, labelled = False, False  # the other ingest stored it: already present
                unstored = ""
                if volume.labels is not None:
                    unstored = " (nor its labels: ingest again to add them)"
                volume.warnings.append(
                    "another ingest stored this series at the same time; this input's copy was "
                    f"not stored{unstored}"
                )
            if added:
                report.added.append(volume.series_instance_uid)
                report.slices += len(volume.slices)
            else:
                report.already_present.append(volume.series_instance_uid)
            report.labelled += labelled
            report.warnings.extend(volume.warnings)
            study = studies.setdefault(
                volume.study_instance_uid,
                StudyReport(volume.study_instance_uid, volume.patient_key, names=report.names),
            )
            study.series.append(
                SeriesReport(
                    series_instance_uid=volume.series_instance_uid,
                    modality=volume.modality,
                    slices=len(volume.slices),
                    status="added" if added else "already present",
                    labels=[c.name for c in volume.classes] if volume.labels is not None else [],
                    warnings=list(volume.warnings),
                )
            )
        if not report.added and not report.already_present:
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
    report.studies = _attach_problems(studies, report.problems)
    with platform.sessions.begin() as session:
        _store_study_reports(session, report.studies)
    progress(1.0, report.summary())
    return report


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
        stored = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_id == series.id)
        )
        if stored != len(volume.slices):
            volume.warnings.append(
                f"the stored series has {stored} slices and this input "
                f"{len(volume.slices)}; the stored series was kept as it is (delete it "
                "and ingest again to replace it)"
            )
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
    # files (no lock held yet)
    volume_file = None
    if series is None:
        volume_file = _store_files(platform, volume, created)
    label_file = None
    if label_version is not None:
        assert volume.labels is not None
        label_file = platform.path("labels", volume.series_instance_uid, f"v{label_version}.nii.gz")
        created.parents(label_file, "labels")
        existed = label_file.exists()
        write_volume(label_file, volume.labels, volume.geometry)
        if not existed:
            created.add(label_file, "labels")
    # rows (the write lock, until the caller commits)
    added = series is None
    if series is None:
        assert volume_file is not None
        series = _add_series(platform, session, study, volume, volume_file)
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
        if target is None:
            target = Dataset(name=dataset)
            session.add(target)
            session.flush()
        session.add(DatasetMember(dataset_id=target.id, series_id=series.id))
    return added, label_file is not None


def _attach_problems(
    studies: dict[str, StudyReport], problems: list[IngestProblem]
) -> list[StudyReport]:
    by_series = {s.series_instance_uid: study for study in studies.values() for s in study.series}
    for problem in problems:
        study = by_series.get(problem.series_instance_uid)
        if study is not None:
            study.skipped.append(problem)
    return [studies[k] for k in sorted(studies)]


def _store_study_reports(session: Session, reports: list[StudyReport]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for report in reports:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == report.study_instance_uid)
        ).first()
        if study is not None:
            study.ingest_report = {**report.to_dict(), "ingested_at": now}


def _takes_classes(reader: object) -> bool:
    """Whether a dataset source's ``read`` accepts ``classes`` (older plugins may not)."""
    parameters = inspect.signature(reader.read).parameters  # type: ignore[attr-defined]
    return "classes" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _invalid_uids(volume: SeriesVolume) -> str:
    """Which of the volume's folder-naming UIDs is invalid, described without its value."""
    for keyword, uid in (
        ("StudyInstanceUID", volume.study_instance_uid),
        ("SeriesInstanceUID", volume.series_instance_uid),
    ):
        if not is_valid_uid(uid):
            return f"a {keyword} of {len(str(uid))} characters"
    return ""


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


def _committed_files(platform: Platform, series_uid: str) -> set[Path] | None:
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


def _find_dataset(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).first()


def _store_files(platform: Platform, volume: SeriesVolume, created: Created) -> Path:
    """Write the originals and the HU cache of a new series; returns the cache file."""
    if volume.originals:
        _store_originals(platform, volume, created)
    # The HU cache is read whole by every dataset build, prediction and viewer session: it is
    # kept uncompressed (.nii): writing a 300×512² volume took 0.14 s against 5.1 s for .nii.gz
    # (docs/benchmarks.md), for about twice the disk. Labels and predictions, which compress far
    # better, stay .nii.gz.
    volume_file = platform.path("volumes", f"{volume.series_instance_uid}.nii")
    existed = volume_file.exists()
    write_volume(volume_file, _compact_hu(volume.hu), volume.geometry)
    if not existed:
        created.add(volume_file, "volumes")
    return volume_file


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
        )
        session.add(study)
        session.flush()
    series = Series(
        study_id=study.id,
        series_instance_uid=volume.series_instance_uid,
        modality=volume.modality,
        description=volume.description,
        geometry=volume.geometry.to_dict(),
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
