"""`radseg ingest` with non-DICOM inputs: the hint to nifti-pairs, --labels and --class-map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import LabelSet
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.imaging.volumes import write_volume
from tests.support import SQLITE_ONLY

#: the behaviour under test is the command line's; one database is enough


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_synthetic_ct(tmp_path_factory.mktemp("s"), seed=31, shape=(4, 24, 20))


def ingest(platform: Platform, *args: str) -> Result:
    return CliRunner().invoke(main, ["--home", str(platform.home), "ingest", *args])


def stored_classes(platform: Platform) -> list[dict]:
    with platform.sessions() as session:
        (labels,) = session.scalars(select(LabelSet)).all()
        return list(labels.classes)


@SQLITE_ONLY
def test_image_volumes_given_to_the_dicom_source_get_the_nifti_pairs_hint(
    platform: Platform, study: SyntheticStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    write_volume(tmp_path / "CT.nrrd", study.hu, study.geometry)
    for target in (tmp_path / "CT.nrrd", tmp_path):
        result = ingest(platform, str(target))
        assert result.exit_code == 1, result.output
        assert "no DICOM image series but 1 NIfTI/NRRD/MetaImage volume(s);" in result.output
        assert f"radseg ingest {target.name} --source nifti-pairs" in result.output
    ok = ingest(platform, str(tmp_path / "CT.nrrd"), "--source", "nifti-pairs")
    assert ok.exit_code == 0, ok.output
    assert "1 series added" in ok.output


@SQLITE_ONLY
def test_labels_is_a_label_source_and_the_class_map_has_its_own_option(
    platform: Platform, study: SyntheticStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    folder = tmp_path / "cases"
    folder.mkdir()
    write_volume(folder / "case1_image.nii.gz", study.hu, study.geometry)
    shutil.copy(study.label_path, folder / "case1_label.nii.gz")
    class_map = tmp_path / "classes.json"
    class_map.write_text(
        json.dumps({"classes": [{"id": c.id, "name": f"organ{c.id}"} for c in study.classes]})
    )
    refused = ingest(platform, str(folder), "--source", "nifti-pairs", "--labels", str(class_map))
    assert refused.exit_code == 1
    assert "classes.json is a class map, not labels: pass it as --class-map" in refused.output

    ok = ingest(platform, str(folder), "--source", "nifti-pairs", "--class-map", str(class_map))
    assert ok.exit_code == 0, ok.output
    assert "labels: organ1, organ2" in ok.output
    assert [c["name"] for c in stored_classes(platform)] == [f"organ{c.id}" for c in study.classes]


@SQLITE_ONLY
def test_the_class_map_names_and_colours_dicom_labels_too(
    platform: Platform, study: SyntheticStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"1": "hepar", "2": "pulmo_sin"}))
    result = ingest(
        platform,
        str(study.dicom_dir),
        "--labels",
        str(study.label_path),
        "--class-map",
        str(class_map),
    )
    assert result.exit_code == 0, result.output
    classes = stored_classes(platform)
    assert [c["name"] for c in classes[:2]] == ["hepar", "pulmo_sin"]
    assert len({tuple(c["color"]) for c in classes}) == len(classes)  # palette, all distinct
    refused = ingest(
        platform, "StudyInstanceUID=1.2.3", "--source", "dicomweb", "--class-map", str(class_map)
    )
    assert refused.exit_code == 1
    assert "the dicomweb source does not take a class map" in refused.output


@SQLITE_ONLY
def test_a_class_map_renumbers_the_seg_found_beside_the_images_or_is_refused(
    platform: Platform, study: SyntheticStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radseg.imaging.volumes import read_volume
    from tests.dicom_labels import write_seg

    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    class_map = tmp_path / "classes.json"
    renumbered = {c.id: 10 + c.id for c in study.classes}
    class_map.write_text(
        json.dumps({"classes": [{"id": renumbered[c.id], "name": c.name} for c in study.classes]})
    )
    # no labels anywhere: the class map would be ignored, so it is refused
    refused = ingest(platform, str(study.dicom_dir), "--class-map", str(class_map))
    assert refused.exit_code == 1
    assert "no labels to apply it to" in refused.output
    assert "leave out --class-map" in refused.output

    folder = tmp_path / "with-seg"
    shutil.copytree(study.dicom_dir, folder)
    write_seg(study.files, study.labels, study.classes, folder / "seg.dcm")
    ok = ingest(platform, str(folder), "--class-map", str(class_map))
    assert ok.exit_code == 0, ok.output
    assert [c["id"] for c in stored_classes(platform)] == sorted(renumbered.values())
    with platform.sessions() as session:
        (label_set,) = session.scalars(select(LabelSet)).all()
        labels, _ = read_volume(platform.resolve(label_set.path))
    expected = study.labels.copy()
    for old, new in renumbered.items():
        expected[study.labels == old] = new
    assert (labels == expected).all()
