"""DICOM (through a dataset plugin) → de-identified rows and cached volumes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg.contracts import IngestProblem, ProgressFn, SeriesVolume, no_progress
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetMember, Instance, LabelSet, Series, Study
from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier
from radseg.imaging.volumes import read_volume, write_volume

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did; contains pseudonymised identifiers only."""

    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    problems: list[IngestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    slices: int = 0
    labelled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "already_present": self.already_present,
            "problems": [{"path": p.path, "reason": p.reason} for p in self.problems],
            "warnings": self.warnings,
            "slices": self.slices,
            "labelled": self.labelled,
        }

    def summary(self) -> str:
        return (
            f"{len(self.added)} series added, {len(self.already_present)} already present, "
            f"{self.slices} slices, {self.labelled} with labels, {len(self.problems)} problems"
        )


def deidentifier(platform: Platform) -> Deidentifier:
    return Deidentifier(
        key=platform.settings.secret("deid_key").encode(),
        shift_dates=platform.settings.shift_dates,
    )


def ingest(
    platform: Platform,
    session: Session,
    path: Path,
    *,
    labels: Path | None = None,
    dataset: str | None = None,
    source: str = "dicom-folder",
    author: str = "",
    progress: ProgressFn = no_progress,
) -> IngestReport:
    """Read ``path`` with the dataset plugin ``source`` and store every series it yields.

    Idempotent: a series whose (pseudonymised) SeriesInstanceUID is already stored is not
    written again. Volumes are written atomically before their rows are added, so a crash
    leaves at most an unreferenced file, never a row pointing at half a file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give a DICOM folder or a .zip of one")
    if labels is not None and not Path(labels).exists():
        raise InputError(f"label file {labels} does not exist")
    reader = platform.plugins.dataset_source(source)
    report = IngestReport()
    target = _dataset(session, dataset) if dataset else None
    platform.ensure_home()
    for volume in reader.read(
        path,
        labels=labels,
        deidentify=deidentifier(platform),
        progress=progress,
        problems=report.problems,
    ):
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == volume.series_instance_uid)
        ).first()
        if series is None:
            series = _store_series(platform, session, volume)
            report.added.append(volume.series_instance_uid)
            report.slices += len(volume.slices)
        else:
            report.already_present.append(volume.series_instance_uid)
        report.warnings.extend(volume.warnings)
        if volume.labels is not None and _store_labels(platform, session, series, volume, author):
            report.labelled += 1
        if target is not None and session.get(DatasetMember, (target.id, series.id)) is None:
            session.add(DatasetMember(dataset_id=target.id, series_id=series.id))
    if not report.added and not report.already_present:
        detail = "; ".join(f"{p.path}: {p.reason}" for p in report.problems[:5])
        raise InputError(
            f"no readable DICOM series found under {path}" + (f" ({detail})" if detail else "")
        )
    progress(1.0, report.summary())
    return report


def _dataset(session: Session, name: str) -> Dataset:
    found = session.scalars(select(Dataset).where(Dataset.name == name)).first()
    if found is None:
        found = Dataset(name=name)
        session.add(found)
        session.flush()
    return found


def _store_series(platform: Platform, session: Session, volume: SeriesVolume) -> Series:
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == volume.study_instance_uid)
    ).first()
    if study is None:
        study = Study(
            study_instance_uid=volume.study_instance_uid,
            patient_key=volume.patient_key,
            description=volume.description,
        )
        session.add(study)
        session.flush()
    # The HU cache is read whole by every dataset build, prediction and viewer session: it is
    # kept uncompressed (.nii): writing a 300×512² volume took 0.14 s against 5.1 s for .nii.gz
    # (docs/benchmarks.md), for about twice the disk. Labels and predictions, which compress far
    # better, stay .nii.gz.
    volume_file = platform.path("volumes", f"{volume.series_instance_uid}.nii")
    write_volume(volume_file, volume.hu, volume.geometry)
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
    session.add_all(
        Instance(
            series_id=series.id, sop_instance_uid=s.sop_instance_uid, slice_index=s.slice_index
        )
        for s in volume.slices
    )
    return series


def _store_labels(
    platform: Platform, session: Session, series: Series, volume: SeriesVolume, author: str
) -> bool:
    """Add the volume's labels as a new LabelSet version unless identical to the latest."""
    assert volume.labels is not None
    classes = [
        {"id": c.id, "name": c.name, "color": list(c.color), "snomed_code": c.snomed_code}
        for c in volume.classes
    ]
    latest = session.scalars(
        select(LabelSet).where(LabelSet.series_id == series.id).order_by(LabelSet.version.desc())
    ).first()
    if latest is not None and latest.classes == classes:
        existing, _ = read_volume(platform.resolve(latest.path))
        if existing.shape == volume.labels.shape and (existing == volume.labels).all():
            return False
    version = (
        session.scalar(select(func.max(LabelSet.version)).where(LabelSet.series_id == series.id))
        or 0
    ) + 1
    label_file = platform.path("labels", series.series_instance_uid, f"v{version}.nii.gz")
    write_volume(label_file, volume.labels, volume.geometry)
    session.add(
        LabelSet(
            series_id=series.id,
            source="import",
            version=version,
            author=author,
            classes=classes,
            path=platform.relative(label_file),
        )
    )
    return True
