"""The slice thickness the viewer shows: the nominal SliceThickness every slice states, kept
apart from the spacing between slice centres that places them."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Series
from radseg.imaging.dicom_frames import slice_thickness
from radseg.imaging.dicom_io import read_series
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.workflows.ingest import ingest
from tests.support import SQLITE_ONLY


def _restate(files: list[Path], thicknesses: list[str]) -> None:
    for path, thickness in zip(files, thicknesses, strict=True):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = thickness
        ds.save_as(path)


def _identity(ds: Dataset) -> Dataset:
    return ds


@SQLITE_ONLY
def test_ingest_stores_the_stated_thickness_not_the_spacing(
    platform: Platform, tmp_path: Path
) -> None:
    source = write_synthetic_ct(tmp_path / "ct", seed=5, shape=(3, 16, 16))
    _restate(source.files, ["5"] * 3)  # a 5 mm reconstruction, its slices closer than 5 mm
    ingest(platform, source.dicom_dir)
    with platform.sessions() as session:
        series = session.scalars(select(Series)).one()
        assert series.slice_thickness == 5.0
        assert series.geometry["spacing"][2] == pytest.approx(source.geometry.spacing[2])
        assert series.geometry["spacing"][2] != 5.0


def test_slices_that_state_different_thicknesses_give_none_and_say_so(tmp_path: Path) -> None:
    source = write_synthetic_ct(tmp_path / "ct", seed=6, shape=(3, 16, 16))
    _restate(source.files, ["1", "1", "2.5"])
    problems: list = []
    (volume,) = read_series(source.dicom_dir, deidentify=_identity, problems=problems)
    assert volume.slice_thickness is None
    assert any("different slice thicknesses (1 to 2.5 mm)" in w for w in volume.warnings)


def test_the_thickness_of_an_enhanced_ct_comes_from_its_functional_groups() -> None:
    path = get_testdata_file("eCT_Supplemental.dcm")
    assert path is not None, "pydicom's test data is missing"
    ds = pydicom.dcmread(path)
    groups = [ds.SharedFunctionalGroupsSequence[0], *ds.PerFrameFunctionalGroupsSequence]
    stated = {
        float(g.PixelMeasuresSequence[0].SliceThickness)
        for g in groups
        if "PixelMeasuresSequence" in g and "SliceThickness" in g.PixelMeasuresSequence[0]
    }
    assert len(stated) == 1  # the file states one thickness for its frames
    (volume,) = read_series([Path(path)], deidentify=_identity, problems=[])
    assert volume.slice_thickness == stated.pop()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.5", 2.5),
        (1, 1.0),
        ("", None),
        (None, None),
        ("abc", None),
        ("0", None),
        ("-1", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_a_missing_or_nonsensical_thickness_is_unknown(
    value: object, expected: float | None
) -> None:
    assert slice_thickness(value) == expected
