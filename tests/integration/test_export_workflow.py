"""Exports end to end: a real ingest, every exporter plugin, the checks, the store and the PACS.

The "prediction" is the ingested series' own label volume registered as a model's output, so
what comes back from every export can be compared with voxels known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import highdicom as hd
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import select

from radseg.cli import main
from radseg.contracts import ExportCheck, ExportRequest
from radseg.core import Platform, create_platform
from radseg.db.models import (
    AuditEvent,
    Export,
    LabelSet,
    Prediction,
)
from radseg.hookspecs import hookimpl
from radseg.imaging.volumes import read_volume, write_volume
from radseg.pacs import PacsError
from radseg.settings import Settings
from radseg.workflows.export_request import build_request
from radseg.workflows.exporting import ExportCheckFailed, export
from tests.export_support import FlippingExporter
from tests.orthanc import OrthancServer
from tests.support import ingested_prediction, migrated_platform

FORMATS = ["nifti", "dicom-seg", "rtstruct", "coco", "png"]


_ingested_prediction = ingested_prediction


@pytest.fixture
def prediction_id(platform: Platform, tmp_path: Path) -> int:
    return _ingested_prediction(platform, tmp_path)


def _labels(platform: Platform, prediction_id: int) -> np.ndarray:
    with platform.sessions() as session:
        path = platform.resolve(session.get(Prediction, prediction_id).mask_path)  # type: ignore[union-attr]
    return read_volume(path)[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_written_checked_stored_and_audited(
    platform: Platform, prediction_id: int, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outcome = export(platform, prediction_id=prediction_id, fmt=fmt, out=out, actor="alice")
    assert outcome.status == "verified"
    assert outcome.checks and all(c.passed is not False for c in outcome.checks)
    assert outcome.out is not None and outcome.out.exists() and outcome.out.parent == out
    assert outcome.path is not None and outcome.path.exists()
    assert platform.path("exports") in outcome.path.parents
    if fmt in ("dicom-seg", "rtstruct"):
        dciodvfy = next(c for c in outcome.checks if c.name == "dciodvfy")
        assert dciodvfy.passed is True, dciodvfy.detail
        ds = pydicom.dcmread(outcome.out)
        assert ds.Modality == ("SEG" if fmt == "dicom-seg" else "RTSTRUCT")
    # nothing is left in staging
    assert not any(platform.path("exports", ".staging").iterdir())
    with platform.sessions() as session:
        row = session.get(Export, outcome.export_id)
        assert row is not None and row.status == "verified" and row.format == fmt
        assert row.created_by == "alice" and platform.resolve(row.path) == outcome.path
        assert [c["name"] for c in row.checks] == [c.name for c in outcome.checks]
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
        assert event.actor == "alice" and event.target == f"prediction:{prediction_id}"


class _CrashingExporter(FlippingExporter):
    """Writes correctly, but its verify raises: what a plugin bug looks like to the host."""

    name: ClassVar[str] = "crashing"

    def export(self, request: ExportRequest, out: Path) -> Path:
        np.save(out, request.labels)
        return out

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        raise KeyError("no such tag")


class _FlippingPlugin:
    @hookimpl
    def radseg_register_exporters(self) -> list[type[FlippingExporter]]:
        return [FlippingExporter, _CrashingExporter]


@pytest.fixture
def platform_with_flipper(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, plugins=[("flipped", _FlippingPlugin())])
    try:
        yield platform
    finally:
        platform.close()


def test_a_failed_check_blocks_the_export_and_says_why(
    platform_with_flipper: Platform, tmp_path: Path
) -> None:
    platform = platform_with_flipper
    prediction_id = _ingested_prediction(platform, tmp_path)
    out = tmp_path / "flipped.npy"
    with pytest.raises(ExportCheckFailed, match="voxels differ") as info:
        export(platform, prediction_id=prediction_id, fmt="flipped", out=out)
    assert not out.exists()  # nothing was offered...
    assert not any(platform.path("exports").rglob("*.npy"))  # ...or stored
    assert info.value.outcome.status == "failed"
    with platform.sessions() as session:
        row = session.get(Export, info.value.outcome.export_id)
        assert row is not None and row.status == "failed" and row.path == ""
        assert "voxels differ" in row.message  # the UI shows why


def test_a_verify_that_raises_is_a_failed_check_not_a_crash(
    platform_with_flipper: Platform, tmp_path: Path
) -> None:
    platform = platform_with_flipper
    prediction_id = _ingested_prediction(platform, tmp_path)
    out = tmp_path / "crashing.npy"
    with pytest.raises(ExportCheckFailed, match="could not check what it wrote") as info:
        export(platform, prediction_id=prediction_id, fmt="crashing", out=out)
    assert not out.exists()
    assert not any(platform.path("exports").rglob("*.npy"))
    with platform.sessions() as session:
        row = session.get(Export, info.value.outcome.export_id)
        assert row is not None and row.status == "failed" and "KeyError" in row.message


def test_unknown_pacs_and_non_dicom_formats_are_refused_clearly(
    platform: Platform, prediction_id: int
) -> None:
    with pytest.raises(Exception, match="not DICOM and cannot go to a PACS"):
        export(platform, prediction_id=prediction_id, fmt="nifti", to_pacs="x")
    with pytest.raises(Exception, match=r"no PACS called 'x' \(configured: none"):
        export(platform, prediction_id=prediction_id, fmt="dicom-seg", to_pacs="x")
    with pytest.raises(Exception, match="prediction 999 does not exist"):
        export(platform, prediction_id=999, fmt="nifti", out=Path("unused"))


def _with_pacs(platform: Platform, name: str, url: str) -> Platform:
    settings = Settings.model_validate(
        {**platform.settings.model_dump(), "pacs": {name: {"url": url, "retries": 0}}}
    )
    return create_platform(settings)


@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_round_trip_through_a_real_pacs(
    platform: Platform, prediction_id: int, orthanc: OrthancServer, fmt: str
) -> None:
    orthanc.clear()
    sending = _with_pacs(platform, "orthanc", orthanc.dicomweb_url)
    try:
        outcome = export(
            sending,
            prediction_id=prediction_id,
            fmt=fmt,
            to_pacs="orthanc",
            with_images=True,
            actor="bob",
        )
    finally:
        sending.close()
    assert outcome.status == "sent", outcome.message
    round_trip = outcome.checks[-1]
    assert round_trip.name == "PACS round trip (orthanc)" and round_trip.passed is True
    assert outcome.remote is not None and outcome.remote["images_sent"] == 8
    # the PACS holds the series and the object, which references it
    sent = outcome.remote["instances"][0]
    series = orthanc.get(f"/dicom-web/studies/{sent['study']}/series")
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == sorted(["CT", "SEG" if fmt == "dicom-seg" else "RTSTRUCT"])
    with platform.sessions() as session:
        row = session.get(Export, outcome.export_id)
        assert row is not None and row.status == "sent" and row.destination == "orthanc"


def test_an_unreachable_pacs_is_reported_and_recorded(
    platform: Platform, prediction_id: int
) -> None:
    sending = _with_pacs(platform, "down", "http://127.0.0.1:9")
    try:
        with pytest.raises(PacsError, match=r"PACS 'down' did not store the export"):
            export(sending, prediction_id=prediction_id, fmt="dicom-seg", to_pacs="down")
    finally:
        sending.close()
    with platform.sessions() as session:
        row = session.scalars(select(Export)).one()
        # verified and kept locally, but not sent: the UI says so
        assert row.status == "send-failed" and "did not store" in row.message


def test_cli_prints_every_check_and_writes_the_file(
    platform: Platform, prediction_id: int, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "seg.dcm"
    home = ["--home", str(platform.settings.home)]
    env = {"RADSEG_DATABASE_URL": platform.settings.database_url_resolved}
    result = runner.invoke(
        main,
        [
            *home,
            "export",
            "--prediction",
            str(prediction_id),
            "--format",
            "dicom-seg",
            "-o",
            "seg_type=labelmap",
            "--out",
            str(out),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "ok   dciodvfy" in result.output and f"wrote {out}" in result.output
    assert pydicom.dcmread(out).SegmentationType == "LABELMAP"
    bad = runner.invoke(
        main,
        [*home, "export", "--prediction", str(prediction_id), "-o", "seg_type", "--out", str(out)],
        env=env,
    )
    assert bad.exit_code == 1 and "is not KEY=VALUE" in bad.output


def test_a_reviewer_s_correction_is_exported_as_semi_automatic(
    platform: Platform, prediction_id: int, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="has no correction to export"):
        export(platform, prediction_id=prediction_id, fmt="dicom-seg", corrected=True)
    with platform.sessions.begin() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        labels, geometry = read_volume(platform.resolve(prediction.mask_path))
        corrected = labels.copy()
        corrected[labels == 1] = 0  # the reviewer erased the liver
        path = platform.path("labels", "corrected.nii.gz")
        write_volume(path, corrected, geometry)
        classes = prediction.model_version.config["classes"]
        session.add(
            LabelSet(
                series_id=prediction.series_id,
                source="review",
                version=9,
                author="carol",
                classes=classes,
                path=platform.relative(path),
                prediction_id=prediction_id,
            )
        )
    outcome = export(
        platform, prediction_id=prediction_id, fmt="dicom-seg", out=tmp_path, corrected=True
    )
    assert outcome.status == "verified" and outcome.out is not None
    seg = hd.seg.segread(outcome.out)
    liver = next(s for s in seg.SegmentSequence if s.SegmentLabel == "liver")
    assert liver.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert "label version 9 by carol" in seg.ContentDescription
    # the file holds the correction: no liver voxel, every other class as predicted
    sources = [s.sop_instance_uid for s in build_request(platform, prediction_id).series.slices]
    pixels = seg.get_pixels_by_source_instance(sources, combine_segments=False)
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    assert not pixels[..., numbers["liver"] - 1].any()
    assert np.array_equal(pixels[..., numbers["spine"] - 1].astype(bool), corrected == 4)
    with platform.sessions() as session:
        row = session.get(Export, outcome.export_id)
        assert row is not None and row.options["correction"] == "label version 9 by carol"


def test_cli_out_ending_in_a_slash_is_a_folder(
    platform: Platform, prediction_id: int, tmp_path: Path
) -> None:
    folder = tmp_path / "new" / "exports"
    result = CliRunner().invoke(
        main,
        [
            "--home",
            str(platform.settings.home),
            "export",
            "--prediction",
            str(prediction_id),
            "--format",
            "rtstruct",
            "--out",
            f"{folder}/",
        ],
        env={"RADSEG_DATABASE_URL": platform.settings.database_url_resolved},
    )
    assert result.exit_code == 0, result.output
    (written,) = folder.iterdir()
    assert written.suffix == ".dcm" and pydicom.dcmread(written).Modality == "RTSTRUCT"


def test_a_pacs_url_with_credentials_in_it_is_refused(platform: Platform) -> None:
    with pytest.raises(ValidationError, match="must not hold credentials"):
        Settings.model_validate(
            {
                **platform.settings.model_dump(),
                "pacs": {"x": {"url": "https://user:secret@pacs.example.org/dicom-web"}},
            }
        )


def test_exporting_twice_into_a_folder_uses_plain_names(
    platform: Platform, prediction_id: int, tmp_path: Path
) -> None:
    for fmt in ("dicom-seg", "dicom-seg", "coco", "coco"):
        export(platform, prediction_id=prediction_id, fmt=fmt, out=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("prediction-"))
    seg = f"prediction-{prediction_id}-dicom-seg.dcm"  # a file is replaced, as cp would
    coco = f"prediction-{prediction_id}-coco"  # a folder never is
    assert names == [coco, f"{coco}-2", seg]
