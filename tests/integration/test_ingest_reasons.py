"""Every problem an ingest counts is printed with its file and reason: the console names files
as the user named them, what is stored names them without PHI and still tells them apart, and
the frames of one file are counted as frames, not files."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import highdicom
import pydicom
import pydicom.data
import pytest
from click.testing import CliRunner
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from sqlalchemy import select

from radseg.cli import main
from radseg.contracts import IngestProblem
from radseg.core import Platform
from radseg.db.models import Study
from radseg.errors import IngestFailed
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.workflows.ingest import ingest
from radseg.workflows.ingest_report import ProblemNames

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
PATIENT = ("Doughnut^Janet", "MRN-5544")


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore")


def _scout(path: Path, work: Path) -> None:
    """One enhanced CT instance of 3 frames, all of them localizers: a series that is excluded
    whole, its 3 frames reported under one file."""
    study = write_synthetic_ct(
        work, seed=41, shape=(3, 16, 12), patient_name=PATIENT[0], patient_id=PATIENT[1]
    )
    enhanced = LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in study.files],
        series_instance_uid=highdicom.UID(),
        series_number=2,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    enhanced.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
    enhanced.save_as(path)


def _unusable_folder(tmp_path: Path) -> Path:
    """Files named after the patient that cannot be used, and nothing else."""
    folder = tmp_path / "Doughnut_Janet"
    folder.mkdir()
    _scout(folder / "Doughnut_scout.dcm", tmp_path / "work")
    # two files whose de-identified names are the same: "[patient]_dose.dcm"
    shutil.copy(TEST_FILES / "rtdose.dcm", folder / "Doughnut_dose.dcm")
    shutil.copy(TEST_FILES / "rtdose.dcm", folder / "Janet_dose.dcm")
    (folder / "notes.bin").write_bytes(b"\x00not dicom" * 10)
    return folder


def _tags(text: str) -> list[str]:
    return re.findall(r"#[0-9a-f]{10}", text)


def test_a_folder_with_nothing_usable_fails_naming_every_file_and_frame(
    platform: Platform, tmp_path: Path
) -> None:
    folder = _unusable_folder(tmp_path)
    with pytest.raises(IngestFailed) as raised:
        ingest(platform, folder)
    stored, shown = str(raised.value), "\n".join(raised.value.details)

    # counted as 3 files and 3 frames of 1 file (it used to say "6 file(s) could not be used")
    assert "3 file(s) and 3 frame(s) of 1 multi-frame file(s) could not be used" in stored
    # the message is what a failed job keeps: no patient name, and still one entry per file
    assert "doughnut" not in stored.lower() and "janet" not in stored.lower()
    assert stored.count("[patient]_dose.dcm #") == 2
    assert stored.count("not an image series (RT Dose); kept out of volumes") == 2
    assert stored.count("[patient]_scout.dcm #") == 3
    assert all(f" frame {k}: " in stored for k in (1, 2, 3))
    assert "localizer/scout image" in stored and "notes.bin #" in stored
    assert len(set(_tags(stored))) == 4  # one hash per file
    # the console names the files as the user did, with the same hashes
    for name in ("Doughnut_dose.dcm", "Janet_dose.dcm", "Doughnut_scout.dcm", "notes.bin"):
        assert name in shown
    assert set(_tags(shown)) == set(_tags(stored))
    assert len(raised.value.details) == 6


def test_the_cli_prints_every_problem_with_the_real_file_names(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    folder = _unusable_folder(tmp_path)
    good = write_synthetic_ct(
        tmp_path / "good", seed=42, shape=(4, 16, 12), patient_name=PATIENT[0]
    )
    runner = CliRunner()

    failed = runner.invoke(main, ["--home", str(platform.home), "ingest", str(folder)])
    assert failed.exit_code == 1
    lines = failed.output.splitlines()
    assert sum("skipped Doughnut_dose.dcm [#" in line for line in lines) == 1
    assert sum("skipped Janet_dose.dcm [#" in line for line in lines) == 1
    assert sum("skipped Doughnut_scout.dcm frame" in line for line in lines) == 3
    assert any(line.startswith("Error: no DICOM image series found") for line in lines)

    # with a good series beside them: the excluded series' frames are printed too (they were
    # counted in the summary but never shown)
    for f in good.files:
        shutil.copy(f, folder / f.name)
    result = runner.invoke(main, ["--home", str(platform.home), "ingest", str(folder)])
    assert result.exit_code == 0, result.output
    assert "6 problem(s) (3 file(s) and 3 frame(s) of 1 multi-frame file(s))" in result.output
    skipped = [line for line in result.output.splitlines() if " [#" in line]
    assert len(skipped) == 6
    assert sum("Doughnut_scout.dcm frame" in line for line in skipped) == 3


def test_the_stored_study_report_tells_files_apart_without_phi(
    platform: Platform, tmp_path: Path
) -> None:
    folder = tmp_path / "Doughnut_Janet"
    good = write_synthetic_ct(
        folder, seed=43, shape=(4, 16, 12), patient_name=PATIENT[0], patient_id=PATIENT[1]
    )
    # two slices repeated (as later instances) under names that differ only by the patient's
    for k, name in ((1, "Doughnut_copy.dcm"), (2, "Janet_copy.dcm")):
        ds = pydicom.dcmread(good.files[k])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = highdicom.UID()
        ds.InstanceNumber = 900 + k
        ds.save_as(good.dicom_dir / name)
    report = ingest(platform, folder)
    assert len(report.problems) == 2
    with platform.sessions() as session:
        (study,) = session.scalars(select(Study))
        stored = study.ingest_report
    text = repr(stored)
    assert "doughnut" not in text.lower() and "janet" not in text.lower()
    paths = [entry["path"] for entry in stored["skipped"]]
    assert len(paths) == 2 and len(set(paths)) == 2
    assert all(p.startswith("dicom/[patient]_copy.dcm #") for p in paths)
    assert all("which was kept; left out" in entry["reason"] for entry in stored["skipped"])
    assert report.to_dict()["problems"] == [
        {"path": p, "reason": e["reason"], "frame": None}
        for p, e in zip(paths, stored["skipped"], strict=True)
    ]


def test_names_that_could_forge_report_lines_are_escaped_and_unchecked_ones_withheld() -> None:
    names = ProblemNames(b"key")
    forged = IngestProblem("a\nskipped b.dcm: fine\x1b[2J.dcm", "not DICOM", name="")
    assert "\n" not in names.shown(forged) and "\x1b" not in names.shown(forged)
    assert names.shown(forged).startswith("a\\nskipped b.dcm: fine\\x1b[2J.dcm [#")
    # no header of the input was read: nothing is known to scrub with, so only the tag is kept
    assert re.fullmatch(r"file #[0-9a-f]{10}", names.stored(forged))
    # the tag depends on the key: a guessed name cannot be tested without it
    assert ProblemNames(b"other").tag(forged) != names.tag(forged)


def test_a_broken_seg_named_after_the_patient_is_reported_without_the_name(
    platform: Platform, tmp_path: Path
) -> None:
    from tests.dicom_labels import write_seg

    study = write_synthetic_ct(
        tmp_path / "in", seed=44, shape=(4, 16, 12), patient_name=PATIENT[0], patient_id=PATIENT[1]
    )
    seg = write_seg(study.files, study.labels, study.classes, study.dicom_dir / "Doughnut_seg.dcm")
    ds = pydicom.dcmread(seg)
    del ds.SegmentationType  # a SEG the reader refuses, with a reason
    ds.save_as(seg)
    report = ingest(platform, study.dicom_dir)
    (problem,) = report.problems
    assert problem.path == "Doughnut_seg.dcm"  # the console names the user's own file
    assert "SegmentationType" in problem.reason
    with platform.sessions() as session:
        (stored,) = session.scalars(select(Study))
        text = repr(stored.ingest_report) + repr(report.to_dict())
    assert "doughnut" not in text.lower() and "janet" not in text.lower()
    assert "SegmentationType" in repr(report.to_dict())
