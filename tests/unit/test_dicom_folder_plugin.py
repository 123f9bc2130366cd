"""The built-in ``dicom-folder`` dataset source: folders, zips, labels, and refusals."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pluggy
import pytest

from radseg import hookspecs
from radseg.contracts import DatasetSource, IngestProblem, ReadRequest, no_progress
from radseg.core import create_platform
from radseg.errors import GeometryError, InputError
from radseg.imaging.deid import Deidentifier, pseudonymise
from radseg.imaging.synthetic import SYNTHETIC_CLASSES, write_synthetic_ct
from radseg.settings import load_settings
from radseg_plugins.datasets import dicom_folder
from radseg_plugins.datasets.dicom_folder import DicomFolderSource

KEY = b"plugin-test"
SHAPE = (12, 40, 36)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_ct(
        tmp_path_factory.mktemp("plugin"), seed=41, shape=SHAPE, patient_id="MRN-41"
    )


def read(path: Path, labels: Path | None = None, problems: list[IngestProblem] | None = None):
    return list(
        DicomFolderSource().read(
            ReadRequest(
                path,
                deidentify=Deidentifier(KEY),
                problems=problems if problems is not None else [],
                labels=labels,
            ),
            no_progress,
        )
    )


def test_registers_through_the_hook_like_any_plugin() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(dicom_folder, name="dicom-folder")
    assert pm.hook.radseg_register_datasets() == [[DicomFolderSource]]
    assert DicomFolderSource.name == "dicom-folder"
    assert isinstance(DicomFolderSource(), DatasetSource)


def test_reads_a_folder_with_labels_and_their_class_map(study) -> None:
    fractions: list[float] = []
    (volume,) = DicomFolderSource().read(
        ReadRequest(
            study.dicom_dir, deidentify=Deidentifier(KEY), problems=[], labels=study.label_path
        ),
        lambda f, m: fractions.append(f),
    )
    np.testing.assert_array_equal(volume.hu, study.hu)
    np.testing.assert_array_equal(volume.labels, study.labels)
    assert volume.classes == list(SYNTHETIC_CLASSES)
    assert volume.patient_key == pseudonymise(KEY, "MRN-41")
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_labels_without_a_sidecar_get_default_names(study, tmp_path: Path) -> None:
    bare = tmp_path / "seg.nii.gz"
    shutil.copy(study.label_path, bare)
    (volume,) = read(study.dicom_dir, labels=bare)
    assert [c.name for c in volume.classes] == [f"class_{i}" for i in range(1, 6)]


def test_without_labels_yields_unlabelled_series(study) -> None:
    (volume,) = read(study.dicom_dir)
    assert volume.labels is None and volume.classes == []


def test_reads_a_zip_and_cleans_up(study, tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in study.files:
            zf.write(path, f"patient/series/{path.name}")
        zf.writestr("patient/notes.txt", "not DICOM")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    problems: list[IngestProblem] = []
    (volume,) = read(archive, labels=study.label_path, problems=problems)
    assert problems == []
    np.testing.assert_array_equal(volume.hu, study.hu)
    np.testing.assert_array_equal(volume.labels, study.labels)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("entry", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:/evil"])
def test_zip_slip_entries_are_refused(study, tmp_path: Path, entry: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(study.files[0], "ok/slice.dcm")
        zf.writestr(entry, b"payload")
    with pytest.raises(InputError, match="outside the folder it is unpacked into"):
        read(archive)
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="is a symbolic link"):
        read(archive)


def test_zips_are_held_to_the_platform_archive_limits(study, tmp_path: Path) -> None:
    settings = load_settings({"home": tmp_path / "home", "archive_max_members": 2}, environ={})
    platform = create_platform(settings, autoload=False, plugins=[("dicom-folder", dicom_folder)])
    try:
        source = platform.plugins.dataset_source("dicom-folder")
    finally:
        platform.close()
    archive = tmp_path / "three.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in study.files[:3]:
            zf.write(path, path.name)
    reading = source.read(ReadRequest(archive, Deidentifier(KEY), problems=[]), no_progress)
    with pytest.raises(InputError, match="3 entries; at most 2"):
        list(reading)


def test_a_truncated_file_is_a_problem_not_a_failure(study, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(study.dicom_dir, folder)
    victim = folder / study.files[4].name
    victim.write_bytes(victim.read_bytes()[:1000])
    problems: list[IngestProblem] = []
    (volume,) = read(folder, problems=problems)
    assert [p.path for p in problems] == [victim.name]
    assert volume.hu.shape[0] == SHAPE[0] - 1


def test_labels_go_to_the_series_on_their_grid(study, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    shutil.copytree(study.dicom_dir, folder / "ct")
    other = write_synthetic_ct(tmp_path / "other", seed=42, shape=(5, 24, 24))
    shutil.copytree(other.dicom_dir, folder / "other")
    volumes = read(folder, labels=study.label_path)
    assert len(volumes) == 2
    (labelled,) = [v for v in volumes if v.labels is not None]
    np.testing.assert_array_equal(labelled.labels, study.labels)


def test_refusals_say_what_to_do(study, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM image series"):
        read(tmp_path / "empty")
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"fake\.zip is not a readable zip file"):
        read(tmp_path / "fake.zip")

    folder = tmp_path / "two"
    shutil.copytree(study.dicom_dir, folder / "a")
    # Same seed, another patient: a second series on exactly the same grid.
    twin = write_synthetic_ct(tmp_path / "b", seed=41, shape=SHAPE, patient_id="MRN-OTHER")
    shutil.copytree(twin.dicom_dir, folder / "b")
    with pytest.raises(InputError, match="ingest one series at a time"):
        read(folder, labels=study.label_path)


def test_labels_elsewhere_in_space_are_refused(study, tmp_path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(study.label_path))
    image.SetOrigin([v + 9000.0 for v in image.GetOrigin()])
    moved = tmp_path / "moved.nii.gz"
    sitk.WriteImage(image, str(moved))
    with pytest.raises(GeometryError, match="does not overlap"):
        read(study.dicom_dir, labels=moved)


def test_plugin_module_is_light() -> None:
    """Importing the plugin must not pull in torch (heavy dependencies stay in model plugins)."""
    code = "import sys, radseg_plugins.datasets.dicom_folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_hint_to_nifti_pairs_counts_the_volumes_without_naming_them(
    study, tmp_path: Path
) -> None:
    # a web upload's folder (a random id) holding volumes named after the patient
    folder = tmp_path / "3f9c2a"
    folder.mkdir()
    for name in ("Smith_John_CT.nii.gz", "Smith_John_label.nii.gz"):
        shutil.copy(study.label_path, folder / name)
    with pytest.raises(InputError) as refused:
        read(folder)
    message = str(refused.value)
    assert "3f9c2a holds no DICOM image series but 2 NIfTI/NRRD/MetaImage volume(s);" in message
    assert "radseg ingest 3f9c2a --source nifti-pairs" in message
    assert "Smith" not in message
