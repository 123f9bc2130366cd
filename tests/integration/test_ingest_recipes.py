"""Channel recipes per dataset build, from the HU cache alone; the CLI's ingest report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from radseg.cli import main
from radseg.core import Platform
from radseg.imaging.channels import RECIPES, Channel, ChannelRecipe, hu_to_channels
from radseg.imaging.synthetic import write_synthetic_ct

SHAPE = (6, 32, 28)


def test_percentile_channel_maps_the_volume_percentiles_to_0_and_255() -> None:
    rng = np.random.default_rng(0)
    hu = rng.normal(300.0, 80.0, size=(4, 40, 40)).astype(np.float32)
    out = hu_to_channels(hu, ChannelRecipe((Channel.percentile(1, 99),)))[..., 0]
    lo, hi = np.percentile(hu, [1, 99])
    expected = np.floor(np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255) + 0.5)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    # MR has no absolute scale: the same anatomy at another gain gives the same channel
    np.testing.assert_array_equal(
        hu_to_channels(hu * 3 + 50, ChannelRecipe((Channel.percentile(1, 99),))), out[..., None]
    )
    for name, recipe in RECIPES.items():
        assert ChannelRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe, name


def test_a_dataset_is_rebuilt_with_other_recipes_after_the_dicom_files_are_gone(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, ["--home", str(platform.home), *args])
        assert result.exit_code == 0, result.output
        return result.output

    study = write_synthetic_ct(tmp_path / "in", seed=80, shape=SHAPE)
    out = run("ingest", str(study.dicom_dir), "--labels", str(study.label_path), "--dataset", "r")
    # the per-study report: the study, its series with slices and labels
    assert "1 series added" in out
    assert f"{SHAPE[0]} slices, added, labels:" in out
    shutil.rmtree(study.dicom_dir)  # only the HU cache is left

    images = {}
    for recipe in ("ct", "mr", "ct-2.5d"):
        out = run("datasets", "build", "r", "--recipe", recipe)
        written = Path(re.findall(r"dataset r v\d+: (/\S+)", out)[-1])
        version_dir = written.parent if written.suffix == ".json" else written
        manifest = json.loads((version_dir / "manifest.json").read_text())
        assert manifest["recipe"] == RECIPES[recipe].to_dict()
        pngs = sorted((version_dir / "images").rglob("*.png"))
        assert len(pngs) >= 1
        images[recipe] = np.asarray(Image.open(pngs[len(pngs) // 2]))
    assert not np.array_equal(images["ct"], images["mr"])
    # 2.5D: the middle channel is the slice itself in the soft-tissue window, like CT's first
    np.testing.assert_array_equal(images["ct-2.5d"][..., 1], images["ct"][..., 0])


def test_a_build_dataset_job_uses_the_recipe_of_its_payload(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web form queues builds as jobs; the job must build what the form asked for."""
    from radseg.contracts import no_progress
    from radseg.db.models import DatasetVersion
    from radseg.jobs.handlers import handler_for

    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    study = write_synthetic_ct(tmp_path / "in", seed=81, shape=SHAPE)
    result = CliRunner().invoke(
        main,
        ["--home", str(platform.home), "ingest", str(study.dicom_dir), "--labels",
         str(study.label_path), "--dataset", "j"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recipe = RECIPES["mr"].to_dict()
    payload = {"dataset": "j", "recipe": recipe, "seed": 7}
    out = handler_for("build-dataset")(platform, payload, progress=no_progress, job_id=1)
    with platform.sessions() as session:
        version = session.get(DatasetVersion, out["dataset_version_id"])
        assert version.recipe == recipe
        path = version.path
    manifest = json.loads((platform.resolve(path) / "manifest.json").read_text())
    assert manifest["recipe"] == recipe
