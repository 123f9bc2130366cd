"""The study date a list shows: StudyDate as de-identification left it (moved by the keyed
per-patient shift, as in the stored DICOM), or none when dates are removed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Study
from radseg.imaging.geometry_checks import dicom_date
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.settings import Settings
from radseg.workflows.ingest import ingest
from tests.support import SQLITE_ONLY, migrated_platform

#: the synthetic CT's StudyDate before de-identification
ORIGINAL = date(2024, 3, 11)


def stored_study(platform: Platform) -> Study:
    with platform.sessions() as session:
        return session.scalars(select(Study)).one()


@SQLITE_ONLY
def test_ingest_stores_the_shifted_study_date_of_the_stored_dicom(
    platform: Platform, tmp_path: Path
) -> None:
    source = write_synthetic_ct(tmp_path / "ct", seed=5, shape=(3, 16, 16))
    ingest(platform, source.dicom_dir)
    shifted = stored_study(platform).study_date
    assert shifted is not None and shifted != ORIGINAL
    stored = next(platform.path("studies").rglob("*.dcm"))
    assert shifted == dicom_date(pydicom.dcmread(stored, stop_before_pixels=True).StudyDate)

    # a study stored before dates were kept gets its date when it is ingested again
    with platform.sessions.begin() as session:
        session.scalars(select(Study)).one().study_date = None
    ingest(platform, source.dicom_dir)
    assert stored_study(platform).study_date == shifted


@SQLITE_ONLY
def test_without_date_shifting_no_study_date_is_kept(settings: Settings, tmp_path: Path) -> None:
    platform = migrated_platform(settings.model_copy(update={"shift_dates": False}))
    try:
        source = write_synthetic_ct(tmp_path / "ct", seed=5, shape=(3, 16, 16))
        ingest(platform, source.dicom_dir)
        assert stored_study(platform).study_date is None
    finally:
        platform.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240311", date(2024, 3, 11)),
        ("", None),
        (None, None),
        ("20240230", None),  # no 30 February
        ("2024-03-11", None),  # not a DA value
        ("２０２４０３１１", None),  # digits, but not ASCII ones
    ],
)
def test_dicom_dates_are_read_strictly(value: str | None, expected: date | None) -> None:
    assert dicom_date(value) == expected
