"""The walking skeleton through the CLI: DICOM files → COCO → trained model → mask → NIfTI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Job, JobState, ModelVersion, Prediction, Series
from radseg.imaging.volumes import read_volume
from radseg.jobs.worker import Worker
from tests.support import require

pytestmark = pytest.mark.slow


def _run(runner: CliRunner, home: Path, *args: str) -> str:
    result = runner.invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_dicom_to_predicted_mask_end_to_end(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("detectron2" in platform.plugins.models, "the detectron2 plugin is not available")
    home = platform.home
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()
    data = tmp_path / "data"
    _run(runner, home, "demo-data", str(data), "--patients", "2", "--slices", "12", "--size", "64")
    for patient in sorted(data.glob("patient-*")):
        out = _run(
            runner,
            home,
            "ingest",
            str(patient / "dicom"),
            "--labels",
            str(patient / "labels.nii.gz"),
            "--dataset",
            "demo",
        )
        assert "1 series added" in out
    # ingest is idempotent: the same files add nothing
    again = _run(runner, home, "ingest", str(data / "patient-1" / "dicom"), "--dataset", "demo")
    assert "0 series added, 1 already present" in again
    _run(runner, home, "datasets", "build", "demo")
    out = _run(runner, home, "train", "--dataset", "demo", "--iterations", "30")
    train_job = int(re.search(r"queued training job (\d+)", out).group(1))
    Worker(platform, burst=True).run()
    with platform.sessions() as session:
        job = session.get(Job, train_job)
        assert job.state == JobState.SUCCEEDED, job.message
        model_version_id = job.result["model_version_id"]
        series_uid = session.query(Series).first().series_instance_uid
        # the training split's statistics for review priority are made at training time
        reference = session.get(ModelVersion, model_version_id).reference_stats
        assert reference["series"] >= 1 and reference["classes"]["liver"]["present"] >= 1
    _run(runner, home, "predict", "--model-version", str(model_version_id), "--series", series_uid)
    Worker(platform, burst=True).run()
    with platform.sessions() as session:
        prediction = session.query(Prediction).one()
        series = prediction.series
        hu, geometry = read_volume(platform.resolve(series.volume_path))
        mask, mask_geometry = read_volume(platform.resolve(prediction.mask_path))
        assert "mean_dice" in prediction.metrics
        # where the model doubts: a uint8 map on the same voxels, and a priority with its reason
        doubt, doubt_geometry = read_volume(platform.resolve(prediction.uncertainty_path))
        assert prediction.priority is not None and prediction.priority_reason
        assert prediction.quality["uncertainty"] == "softmax entropy"
    assert mask.shape == hu.shape and mask.dtype == np.uint8
    assert mask_geometry == geometry  # the mask lies exactly on the series' voxels
    assert doubt.dtype == np.uint8 and doubt_geometry == geometry and doubt.any()
    out_file = tmp_path / "mask.nii.gz"
    _run(
        runner,
        home,
        "export",
        "--prediction",
        str(prediction.id),
        "--format",
        "nifti",
        "--out",
        str(out_file),
    )
    exported = sitk.ReadImage(str(out_file))
    assert (sitk.GetArrayFromImage(exported) == mask).all()
    listing = json.loads(_run(runner, home, "plugins", "list", "--json"))
    assert {p["name"] for p in listing} >= {"dicom-folder", "detectron2", "nifti"}


def test_bad_input_exits_nonzero_with_one_line(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["--home", str(platform.home), "ingest", str(empty)])
    assert result.exit_code == 1
    assert "no DICOM image series found" in result.output
    result = runner.invoke(main, ["--home", str(platform.home), "train", "--dataset", "nope"])
    assert result.exit_code == 1 and "there is no dataset 'nope'" in result.output
    result = runner.invoke(
        main,
        [
            "--home",
            str(platform.home),
            "export",
            "--prediction",
            "1",
            "--format",
            "stl",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "Available exporters are" in result.output
