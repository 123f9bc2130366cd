"""Ingest safety: no PHI in anything written, idempotent re-ingest, nothing left by a crash."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from radseg.core import Platform
from radseg.db.models import Instance, LabelSet, Series, Study
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.workflows import ingest as ingest_module
from radseg.workflows import ingest_files
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest
from radseg.workflows.ingest_report import IngestReport
from tests.support import database_text

SHAPE = (8, 32, 28)

PATIENTS = [
    # name, id, birth date
    ("Doughnut^Janet", "MRN-778899", "19510923"),
    ("Rowntree^Richard", "MRN-112233", "19470102"),
]


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_nothing_written_holds_the_original_names_ids_or_uids(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    studies = [
        write_synthetic_ct(
            tmp_path / f"in{k}",
            seed=60 + k,
            shape=SHAPE,
            patient_name=name,
            patient_id=pid,
            patient_birth_date=birth,
        )
        for k, (name, pid, birth) in enumerate(PATIENTS)
    ]
    # the second study arrives as a zip, mixed with a file of the first
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in studies[1].files:
            zf.write(path, f"export/{path.name}")
    caplog.set_level(logging.DEBUG)
    ingest(platform, studies[0].dicom_dir, labels=studies[0].label_path, dataset="phi")
    ingest(platform, archive, dataset="phi")
    build_version(platform, "phi")

    secrets: list[str] = []
    for study, (name, pid, birth) in zip(studies, PATIENTS, strict=True):
        secrets += [
            *name.split("^"),
            pid,
            birth,
            study.study_instance_uid,
            study.series_instance_uid,
        ]
        secrets += study.sop_instance_uids[:3]
    secrets += ["Elm Street", "Elsewhere"]  # address and institution of the synthetic studies

    written = _files_under(platform.home)
    assert any(p.suffix == ".dcm" for p in written), "de-identified originals are stored"
    assert any(p.name.startswith("instances_") and p.suffix == ".json" for p in written)
    texts = {"database rows": database_text(platform), "log records": caplog.text}
    for path in written:
        texts[str(path.relative_to(platform.home))] = path.read_bytes().decode("latin-1")
    leaks = [
        (where, secret)
        for secret in secrets
        for where, text in texts.items()
        if secret.lower() in where.lower() or secret.lower() in text.lower()
    ]
    assert leaks == []

    # the stored originals are real, de-identified DICOM, one per slice
    with platform.sessions() as session:
        for series in session.scalars(sa.select(Series)):
            folder = platform.path(
                "studies", series.study.study_instance_uid, series.series_instance_uid
            )
            files = sorted(folder.glob("*.dcm"))
            assert len(files) == SHAPE[0]
            ds = pydicom.dcmread(files[0])
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.PatientID == series.study.patient_key
            assert ds.pixel_array.shape == SHAPE[1:]


def _counts(platform: Platform) -> tuple[int, ...]:
    with platform.sessions() as session:
        return tuple(
            session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
            for model in (Study, Series, Instance, LabelSet)
        )


def test_reingest_adds_nothing_and_a_crash_leaves_nothing(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_synthetic_ct(tmp_path / "a", seed=70, shape=SHAPE)
    report = ingest(platform, first.dicom_dir, labels=first.label_path)
    assert len(report.added) == 1
    (study_report,) = report.studies
    assert study_report.series[0].slices == SHAPE[0]
    assert study_report.series[0].labels  # class names
    before = _counts(platform)
    files_before = sorted(_files_under(platform.home))
    again = ingest(platform, first.dicom_dir, labels=first.label_path)
    assert again.added == [] and len(again.already_present) == 1
    assert again.labelled == 0
    assert _counts(platform) == before
    assert sorted(_files_under(platform.home)) == files_before

    # a crash while writing the labels of a new series: no rows, no files, nothing half-written
    second = write_synthetic_ct(tmp_path / "b", seed=71, shape=SHAPE, patient_id="MRN-71")
    real_write = ingest_files.write_volume
    failed: list[Path] = []

    def failing(path: Path, *args: object, **kwargs: object) -> Path:
        if Path(path).parent.parent.name == "labels":  # labels/<series>/v1.nii.gz
            failed.append(Path(path))
            raise OSError("disk full")
        return real_write(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_files, "write_volume", failing)
    with pytest.raises(OSError, match="disk full"):
        ingest(platform, second.dicom_dir, labels=second.label_path)
    assert [p.name for p in failed] == ["v1.nii.gz"]
    assert _counts(platform) == before
    assert sorted(_files_under(platform.home)) == files_before

    monkeypatch.setattr(ingest_files, "write_volume", real_write)
    report = ingest(platform, second.dicom_dir, labels=second.label_path)
    assert len(report.added) == 1
    with platform.sessions() as session:
        stored = session.scalars(sa.select(Study).order_by(Study.id)).all()
        assert [(s.ingest_report or {})["series"][0]["slices"] for s in stored] == [SHAPE[0]] * 2


def test_burned_in_annotation_is_refused_unless_allowed(platform: Platform, tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path / "c", seed=72, shape=SHAPE)
    for path in study.files[:2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    copy = tmp_path / "copy"
    shutil.copytree(study.dicom_dir, copy)
    report = ingest(platform, study.dicom_dir)
    refused = [p for p in report.problems if "BurnedInAnnotation" in p.reason]
    assert sorted(p.path for p in refused) == sorted(p.name for p in study.files[:2])
    assert "--allow-burned-in" in refused[0].reason
    assert report.slices == SHAPE[0] - 2
    # allowing it later does not silently change the stored series: it says so
    again = ingest(platform, study.dicom_dir, allow_burned_in=True)
    assert again.added == [] and len(again.already_present) == 1
    (series_report,) = again.studies[0].series
    assert series_report.slices == SHAPE[0]
    assert any(
        f"stored series has {SHAPE[0] - 2} slices and this input {SHAPE[0]}" in w
        for w in series_report.warnings
    )

    other = write_synthetic_ct(tmp_path / "d", seed=73, shape=SHAPE, patient_id="MRN-73")
    for path in other.files[:2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    allowed = ingest(platform, other.dicom_dir, allow_burned_in=True)
    assert allowed.slices == SHAPE[0]
    assert not [p for p in allowed.problems if "BurnedInAnnotation" in p.reason]


def _tree(root: Path) -> tuple[list[Path], list[Path]]:
    """Files and folders under ``root``, sorted (an empty folder left behind shows here)."""
    return sorted(_files_under(root)), sorted(p for p in root.rglob("*") if p.is_dir())


def test_an_ingest_that_loses_the_race_for_a_series_keeps_the_winners_files(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = write_synthetic_ct(tmp_path / "race", seed=74, shape=SHAPE)
    real_store = ingest_module.store_series_files
    other: dict[str, IngestReport] = {}

    def racing(*args: object, **kwargs: object) -> Path:
        written = real_store(*args, **kwargs)  # type: ignore[arg-type]
        if "first" not in other:
            # ingest A of the same series runs and commits between B's files and B's rows
            other["first"] = IngestReport()
            other["first"] = ingest(platform, study.dicom_dir)
        return written

    monkeypatch.setattr(ingest_module, "store_series_files", racing)
    late = ingest(platform, study.dicom_dir)

    first = other["first"]
    assert len(first.added) == 1
    assert late.added == [] and late.already_present == first.added
    assert any("another ingest stored this series" in w for w in late.warnings)
    assert _counts(platform)[:3] == (1, 1, SHAPE[0])
    with platform.sessions() as session:
        series = session.scalars(sa.select(Series)).one()
        volume = platform.resolve(series.volume_path)
        originals = platform.path(
            "studies", series.study.study_instance_uid, series.series_instance_uid
        )
    assert volume.is_file()
    assert len(list(originals.glob("*.dcm"))) == SHAPE[0]


def test_a_failed_second_series_removes_its_files_and_keeps_the_first_series(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = write_synthetic_ct(tmp_path / "one", seed=75, shape=SHAPE)
    two = write_synthetic_ct(tmp_path / "two", seed=76, shape=SHAPE)
    header = pydicom.dcmread(one.files[0], stop_before_pixels=True)
    for path in two.files:  # the second series of the same study
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = header.StudyInstanceUID
        ds.PatientID, ds.PatientName = header.PatientID, header.PatientName
        ds.save_as(path)
    both = tmp_path / "both"
    shutil.copytree(one.dicom_dir, both / "one")
    shutil.copytree(two.dicom_dir, both / "two")
    assert len(ingest(platform, one.dicom_dir).added) == 1
    before = _tree(platform.home)
    counts = _counts(platform)
    real_add = ingest_module._add_series

    def failing(*args: object, **kwargs: object) -> Series:
        raise RuntimeError("row insert failed")  # after the new series' files were written

    monkeypatch.setattr(ingest_module, "_add_series", failing)
    with pytest.raises(RuntimeError, match="row insert failed"):
        ingest(platform, both)
    assert _tree(platform.home) == before
    assert _counts(platform) == counts

    monkeypatch.setattr(ingest_module, "_add_series", real_add)
    report = ingest(platform, both)
    assert len(report.added) == 1 and len(report.already_present) == 1
