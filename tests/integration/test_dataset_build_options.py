"""Dataset build options and checks: polygons through the CLI, frame numbers in the COCO image
records, class maps that disagree between label sets, and the ingest job's burned-in flag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import highdicom
import pydicom
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from highdicom.legacy import LegacyConvertedEnhancedCTImage

from radseg.cli import main
from radseg.core import Platform
from radseg.errors import InputError
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.jobs.handlers import HANDLERS
from radseg.workflows.datasets import build_version
from radseg.workflows.ingest import ingest

SHAPE = (5, 24, 20)


def _coco(version_dir: Path) -> list[dict]:
    return [
        json.loads((version_dir / "annotations" / f"instances_{s}.json").read_text())
        for s in ("train", "val", "test")
    ]


def test_cli_builds_polygons_and_image_records_carry_frame_numbers(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    study = write_synthetic_ct(tmp_path / "legacy", seed=91, shape=SHAPE)
    enhanced = LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in study.files],
        series_instance_uid=highdicom.UID(),
        series_number=9,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    runner = CliRunner()

    def run(*args: str) -> Path:
        result = runner.invoke(main, ["--home", str(platform.home), *args])
        assert result.exit_code == 0, result.output
        return (
            Path(re.findall(r": (/\S+) \(content hash", result.output)[-1])
            if "build" in args
            else Path()
        )

    run("ingest", str(tmp_path / "enhanced"), "--labels", str(study.label_path), "--dataset", "e")
    rle_dir = run("datasets", "build", "e")
    poly_dir = run("datasets", "build", "e", "--polygons")

    images = [img for coco in _coco(rle_dir) for img in coco["images"]]
    assert sorted(img["frame_number"] for img in images) == list(range(1, SHAPE[0] + 1))
    manifest = json.loads((poly_dir / "manifest.json").read_text())
    assert manifest["annotation_format"] == "polygon"
    annotations = [a for coco in _coco(poly_dir) for a in coco["annotations"]]
    assert annotations and all(isinstance(a["segmentation"], list) for a in annotations)
    assert all(
        isinstance(a["segmentation"], dict) for c in _coco(rle_dir) for a in c["annotations"]
    )


def test_single_frame_images_have_no_frame_number(platform: Platform, tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path / "s", seed=92, shape=SHAPE)
    ingest(platform, study.dicom_dir, labels=study.label_path, dataset="s")
    version = build_version(platform, "s")
    images = [img for coco in _coco(platform.resolve(version.path)) for img in coco["images"]]
    assert len(images) == SHAPE[0] and all(img["frame_number"] is None for img in images)


def test_a_class_name_with_two_ids_across_label_sets_is_refused(
    platform: Platform, tmp_path: Path
) -> None:
    first = write_synthetic_ct(tmp_path / "a", seed=93, shape=SHAPE)
    second = write_synthetic_ct(tmp_path / "b", seed=94, shape=SHAPE, patient_id="MRN-94")
    # In the second label set, liver is id 7 instead of 1: no id collides, one name does.
    image = sitk.ReadImage(str(second.label_path))
    array = sitk.GetArrayFromImage(image)
    array[array == 1] = 7
    relabelled = sitk.GetImageFromArray(array)
    relabelled.CopyInformation(image)
    sitk.WriteImage(relabelled, str(second.label_path))
    sidecar = second.label_path.parent / "labels.json"
    classes = json.loads(sidecar.read_text())
    for c in classes["classes"]:
        if c["id"] == 1:
            c["id"] = 7
    sidecar.write_text(json.dumps(classes))

    ingest(platform, first.dicom_dir, labels=first.label_path, dataset="mixed")
    ingest(platform, second.dicom_dir, labels=second.label_path, dataset="mixed")
    with pytest.raises(InputError) as raised:
        build_version(platform, "mixed")
    message = str(raised.value)
    assert '"liver" has id 1 in one source and 7 in the other' in message
    assert "same class map" in message
    assert not platform.path("datasets", "mixed").exists() or not any(
        platform.path("datasets", "mixed").iterdir()
    )


def test_ingest_job_honours_allow_burned_in(platform: Platform, tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path / "c", seed=95, shape=SHAPE)
    for path in study.files[:2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    handler = HANDLERS["ingest"]
    refused = handler(platform, {"path": str(study.dicom_dir)}, progress=lambda *_: None, job_id=1)
    assert refused["slices"] == SHAPE[0] - 2
    other = write_synthetic_ct(tmp_path / "d", seed=96, shape=SHAPE, patient_id="MRN-96")
    for path in other.files[:2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    allowed = handler(
        platform,
        {"path": str(other.dicom_dir), "allow_burned_in": True},
        progress=lambda *_: None,
        job_id=2,
    )
    assert allowed["slices"] == SHAPE[0]
    assert not [p for p in allowed["problems"] if "BurnedInAnnotation" in p["reason"]]
