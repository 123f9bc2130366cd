"""DICOM SEG and RTSTRUCT exports of an adjudicated label version say so: SEMIAUTOMATIC, the
series and content descriptions name the label version, and no reader's or adjudicator's name
is in the file unless the setting ``export_reader_names`` allows it (real DICOM from an ingest,
the built-in exporter plugins and their checks)."""

from __future__ import annotations

import re
from pathlib import Path

import highdicom as hd
import pydicom

from radseg.core import Platform
from radseg.db.models import Role, User
from radseg.imaging.volumes import read_volume
from radseg.roles import Actor
from radseg.settings import Settings
from radseg.workflows import adjudication, readings
from radseg.workflows.exporting import export
from tests.support import SQLITE_ONLY, ingested_prediction, migrated_platform

NAMES = ("ann", "bob", "cat")


def _adjudicated(platform: Platform, tmp_path: Path) -> tuple[int, int]:
    """An ingested prediction read by ann and bob, adjudicated by cat from the prediction with
    liver (class 1) erased on one slice; returns the prediction and the label version."""
    prediction_id = ingested_prediction(platform, tmp_path)
    with platform.sessions.begin() as session:
        for name in NAMES:
            session.add(User(username=name, password_hash="x", role=Role.CLINICIAN))
    case = readings.assign(
        platform,
        Actor("admin", Role.ADMIN),
        prediction_id=prediction_id,
        readers=["ann", "bob"],
        adjudicator="cat",
    )
    for reading in case.readings:
        actor = Actor(reading.reader.username, Role.CLINICIAN)
        readings.submit_reading(platform, actor, reading.id, decision="accepted")
    cat = Actor("cat", Role.CLINICIAN)
    adjudication.start_adjudication(platform, cat, case.id, source="prediction")
    label_set = adjudication.sign_off(platform, cat, case.id)
    return prediction_id, label_set.version


def _strings(path: Path) -> str:
    """Every text value of the file, one per line."""
    ds = pydicom.dcmread(path)
    out: list[str] = []

    def walk(element: object) -> None:
        value = getattr(element, "value", None)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, pydicom.valuerep.PersonName):
            out.append(str(value))

    ds.walk(lambda _ds, element: walk(element))
    return "\n".join(out)


@SQLITE_ONLY
def test_an_adjudicated_label_version_exports_as_semi_automatic_without_reader_names(
    platform: Platform, tmp_path: Path
) -> None:
    prediction_id, version = _adjudicated(platform, tmp_path)
    seg_out = export(
        platform, prediction_id=prediction_id, fmt="dicom-seg", out=tmp_path / "s", corrected=True
    )
    assert seg_out.status == "verified" and seg_out.out is not None
    seg = hd.seg.segread(seg_out.out)
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert f"adjudicated label version {version}" in seg.SeriesDescription
    assert f"adjudicated label version {version}" in seg.ContentDescription
    rt_out = export(
        platform, prediction_id=prediction_id, fmt="rtstruct", out=tmp_path / "r", corrected=True
    )
    assert rt_out.status == "verified" and rt_out.out is not None
    rt = pydicom.dcmread(rt_out.out)
    assert f"adjudicated label version {version}" in rt.SeriesDescription
    assert {o.ROIGenerationAlgorithm for o in rt.StructureSetROISequence} == {"SEMIAUTOMATIC"}
    assert "of 2 readers" in rt.StructureSetDescription
    for path in (seg_out.out, rt_out.out):
        text = _strings(path)
        assert not [n for n in NAMES if re.search(rf"\b{n}\b", text)], text


@SQLITE_ONLY
def test_the_setting_lets_an_export_name_the_readers(settings: Settings, tmp_path: Path) -> None:
    named = migrated_platform(settings.model_copy(update={"export_reader_names": True}))
    try:
        prediction_id, version = _adjudicated(named, tmp_path)
        outcome = export(
            named, prediction_id=prediction_id, fmt="rtstruct", out=tmp_path / "r", corrected=True
        )
        assert outcome.status == "verified" and outcome.out is not None
        rt = pydicom.dcmread(outcome.out)
        assert rt.StructureSetDescription == (
            f"adjudicated label version {version} of readers ann, bob; adjudicator cat"
        )
        # the file holds the adjudicated mask: the prediction, as nobody changed it
        labels = read_volume(named.resolve(f"labels/{_uid(named)}/v{version}.nii.gz"))[0]
        assert labels.any()
    finally:
        named.close()


def _uid(platform: Platform) -> str:
    from sqlalchemy import select

    from radseg.db.models import Series

    with platform.sessions() as session:
        return str(session.scalars(select(Series.series_instance_uid)).one())


@SQLITE_ONLY
def test_a_brush_correction_exports_with_the_model_s_colours(
    platform: Platform, tmp_path: Path
) -> None:
    """A reviewer's label set stores colours as "#rrggbb"; the export reads them as colours
    (they were read character by character before, and the DICOM SEG writer failed)."""
    from radseg.workflows.corrections import save_correction
    from radseg.workflows.datasets import classes_from_rows

    prediction_id = ingested_prediction(platform, tmp_path)
    with platform.sessions.begin() as session:
        session.add(User(username="ann", password_hash="x", role=Role.CLINICIAN))
    stroke = {"z": 1, "class_id": 0, "radius": 2, "points": [[10.5, 10.5]]}
    label_set = save_correction(
        platform, Actor("ann", Role.CLINICIAN), prediction_id, strokes=[stroke]
    )
    expected = {c.id: c.color for c in classes_from_rows(label_set.classes)}
    assert all(len(color) == 3 and all(0 <= v <= 255 for v in color) for color in expected.values())
    outcome = export(
        platform, prediction_id=prediction_id, fmt="dicom-seg", out=tmp_path / "s", corrected=True
    )
    assert outcome.status == "verified", outcome.message
