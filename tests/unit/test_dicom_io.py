"""Reading DICOM series: order, HU, geometry, and what is reported about broken input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from radseg.contracts import IngestProblem
from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier, pseudonymise
from radseg.imaging.dicom_io import dicom_to_volume, read_series
from radseg.imaging.synthetic import write_synthetic_ct

KEY = b"test-key"
SMALL = (16, 48, 40)


def identity(ds: Dataset) -> Dataset:
    return ds


def read_one(folder: Path, problems: list[IngestProblem] | None = None):
    problems = problems if problems is not None else []
    volumes = read_series(folder, deidentify=identity, problems=problems)
    assert len(volumes) == 1, volumes
    return volumes[0]


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    (series_id,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_id))
    return reader.Execute()


@pytest.mark.parametrize(
    "orientation",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        (1.0, 0.0, 0.0, 0.0, math.cos(0.3), math.sin(0.3)),  # oblique
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # sagittal
    ],
    ids=["axial", "oblique", "sagittal"],
)
def test_matches_simpleitk_gdcm_voxels_and_geometry(tmp_path: Path, orientation) -> None:
    study = write_synthetic_ct(tmp_path, seed=3, image_orientation_patient=orientation)
    volume = read_one(study.dicom_dir)
    reference = sitk_read(study.dicom_dir)

    np.testing.assert_array_equal(volume.hu, sitk.GetArrayFromImage(reference).astype(np.float32))
    assert volume.hu.dtype == np.int16  # slope 1, intercept -1024: int16 holds every HU exactly
    assert volume.geometry.size == reference.GetSize()
    np.testing.assert_allclose(volume.geometry.spacing, reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(volume.geometry.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.geometry.direction, reference.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert [s.sop_instance_uid for s in volume.slices] == study.sop_instance_uids
    assert [s.slice_index for s in volume.slices] == list(range(40))
    assert volume.slices[5].image_position_patient == pytest.approx(
        [float(v) for v in pydicom.dcmread(study.files[5]).ImagePositionPatient]
    )
    assert volume.warnings == []


def test_order_does_not_depend_on_file_names(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=4, shape=SMALL)
    # Name the files so that alphabetical order is the reverse of the slice order.
    for k, path in enumerate(study.files):
        path.rename(path.with_name(f"{len(study.files) - k:03d}.dcm"))
    volume = read_one(study.dicom_dir)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert volume.geometry.origin == pytest.approx(study.geometry.origin)


def test_hu_applies_each_slices_rescale(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=5, shape=SMALL)
    ds = pydicom.dcmread(study.files[3])
    ds.RescaleSlope = "2"
    ds.RescaleIntercept = "-2048"
    ds.save_as(study.files[3])
    volume = read_one(study.dicom_dir)
    np.testing.assert_array_equal(volume.hu[3], ds.pixel_array.astype(np.float32) * 2 - 2048)
    np.testing.assert_array_equal(volume.hu[4], study.hu[4])
    assert volume.hu.dtype == np.float32  # one slice's slope is not 1


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype"),
    [
        ("1", "-1024", np.int16),
        ("1", "-40000", np.int16),  # stored values and intercept beyond int16, HU within
        ("1", "32000", np.float32),  # HU beyond int16
        ("1", "-1024.5", np.float32),  # fractional HU
        ("0.5", "-1024", np.float32),
    ],
)
def test_hu_is_int16_exactly_when_int16_holds_every_value(
    tmp_path: Path, slope: str, intercept: str, dtype: type
) -> None:
    study = write_synthetic_ct(tmp_path, seed=6, shape=SMALL)
    for path in study.files:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int64)
        if intercept == "-40000":  # store HU + 40000 in 32 bits so the HU stay the same
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
            ds.PixelData = (stored + 40000 - 1024).astype(np.uint32).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(path)
    volume = read_one(study.dicom_dir)
    assert volume.hu.dtype == dtype
    if intercept == "32000":
        assert volume.hu.max() > 32767
    expected = np.stack(
        [
            pydicom.dcmread(p).pixel_array.astype(np.float64) * float(slope) + float(intercept)
            for p in study.files
        ]
    )
    order = np.argsort([float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in study.files])
    np.testing.assert_array_equal(volume.hu, expected[order].astype(np.float32))


def test_truncated_file_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=6, shape=SMALL)
    broken = study.files[7]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    problems: list[IngestProblem] = []
    volume = read_one(study.dicom_dir, problems)

    assert [p.path for p in problems] == [broken.name]
    assert volume.hu.shape == (15, 48, 40)
    np.testing.assert_array_equal(volume.hu, np.delete(study.hu, 7, axis=0))
    assert any("uneven slice spacing" in w for w in volume.warnings)


def test_damaged_files_are_reported_as_not_dicom_and_known_extras_skipped_quietly(
    tmp_path: Path,
) -> None:
    study = write_synthetic_ct(tmp_path, seed=8, shape=SMALL)
    nested = study.dicom_dir / "a" / "b"
    nested.mkdir(parents=True)
    for path in study.files[:5]:
        path.rename(nested / path.name)
    (study.dicom_dir / "README.txt").write_text("not DICOM")
    (study.dicom_dir / "LICENSE").write_text("not DICOM")
    (nested / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (study.dicom_dir / "viewer").mkdir()
    (study.dicom_dir / "viewer" / "viewer.exe").write_bytes(b"MZ" + bytes(64))
    (nested / "empty").write_bytes(b"")
    (study.dicom_dir / "noise.bin").write_bytes(bytes(range(256)) * 3)
    # a slice whose 'DICM' marker was damaged: not recognisable as DICOM, and said so
    damaged = study.files[9]
    data = bytearray(damaged.read_bytes())
    data[128:132] = b"DIxM"
    damaged.write_bytes(bytes(data))
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "TEST"
    dicomdir.save_as(study.dicom_dir / "DICOMDIR", enforce_file_format=True)

    problems: list[IngestProblem] = []
    volume = read_one(study.dicom_dir, problems)
    reasons = {p.path: p.reason for p in problems}
    assert set(reasons) == {"a/b/empty", "noise.bin", damaged.name}
    assert reasons["a/b/empty"] == "not DICOM: an empty file"
    assert reasons["noise.bin"].startswith("not DICOM: no 'DICM' marker at byte 128")
    assert reasons[damaged.name] == reasons["noise.bin"]
    np.testing.assert_array_equal(volume.hu, np.delete(study.hu, 9, axis=0))


def test_duplicate_positions_are_reported(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=9, shape=SMALL)
    shutil.copy(study.files[2], study.dicom_dir / "copy_of_slice_2")
    other = pydicom.dcmread(study.files[9])
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.InstanceNumber = 999
    other.save_as(study.dicom_dir / "second_acquisition")

    problems: list[IngestProblem] = []
    volume = read_one(study.dicom_dir, problems)
    assert volume.hu.shape[0] == 16
    np.testing.assert_array_equal(volume.hu, study.hu)
    reasons = {p.path: p.reason for p in problems}
    assert set(reasons) == {"copy_of_slice_2", "second_acquisition"}
    assert "same instance stored twice" in reasons["copy_of_slice_2"]
    assert "same position" in reasons["second_acquisition"]
    assert any("duplicate positions" in w for w in volume.warnings)


def test_a_slice_with_another_orientation_is_left_out(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=10, shape=SMALL)
    scout = pydicom.dcmread(study.files[0])
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    scout.save_as(study.dicom_dir / "localizer")

    problems: list[IngestProblem] = []
    volume = read_one(study.dicom_dir, problems)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert [p.path for p in problems] == ["localizer"]
    assert "orientation" in problems[0].reason
    assert any("different orientation" in w for w in volume.warnings)


def test_series_are_grouped_and_deidentified_before_use(tmp_path: Path) -> None:
    a = write_synthetic_ct(tmp_path / "a", seed=11, shape=SMALL, patient_id="PAT-A")
    b = write_synthetic_ct(tmp_path / "b", seed=12, shape=(8, 48, 40), patient_id="PAT-B")
    seen: list[str] = []
    deid = Deidentifier(KEY)

    def recording(ds: Dataset) -> Dataset:
        seen.append(str(ds.PatientID))
        return deid(ds)

    problems: list[IngestProblem] = []
    volumes = read_series(tmp_path, deidentify=recording, problems=problems)
    assert problems == []
    assert len(seen) == 24
    assert sorted(v.hu.shape[0] for v in volumes) == [8, 16]
    by_key = {v.patient_key: v for v in volumes}
    assert set(by_key) == {pseudonymise(KEY, "PAT-A"), pseudonymise(KEY, "PAT-B")}
    va = by_key[pseudonymise(KEY, "PAT-A")]
    assert va.series_instance_uid == deid.uid(a.series_instance_uid)
    assert va.study_instance_uid == deid.uid(a.study_instance_uid)
    assert [s.sop_instance_uid for s in va.slices] == [deid.uid(u) for u in a.sop_instance_uids]
    assert va.series_instance_uid != b.series_instance_uid
    assert va.modality == "CT"


def test_reading_twice_gives_the_same_identifiers(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=13, shape=SMALL)
    first = read_series(study.dicom_dir, deidentify=Deidentifier(KEY), problems=[])[0]
    again = read_series(study.dicom_dir, deidentify=Deidentifier(KEY), problems=[])[0]
    assert first.series_instance_uid == again.series_instance_uid
    assert [s.sop_instance_uid for s in first.slices] == [s.sop_instance_uid for s in again.slices]


def test_dicom_to_volume_takes_datasets_in_any_order(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=14, shape=SMALL)
    datasets = [pydicom.dcmread(p) for p in reversed(study.files)]
    volume = dicom_to_volume(datasets)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert all("PixelData" in ds for ds in datasets)  # the caller's datasets are left alone
    with pytest.raises(InputError, match="none of the datasets is a usable image slice"):
        dicom_to_volume([Dataset()], problems=[])


def test_files_without_preamble_are_read(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=15, shape=SMALL)
    ds = pydicom.dcmread(study.files[6])
    del ds.file_meta
    ds.preamble = None
    ds.save_as(study.files[6], implicit_vr=True, little_endian=True)
    assert study.files[6].read_bytes()[128:132] != b"DICM"
    problems: list[IngestProblem] = []
    np.testing.assert_array_equal(read_one(study.dicom_dir, problems).hu, study.hu)
    assert problems == []


def test_reading_a_study_parses_each_file_once(tmp_path: Path, monkeypatch) -> None:
    # How fast a read is, is measured by `make bench` (docs/benchmarks.md), not asserted here;
    # this guards the usual way it gets slow: parsing a file again (for its pixels, for a sort).
    study = write_synthetic_ct(tmp_path, shape=SMALL)
    parsed: list[Path] = []
    real = pydicom.dcmread

    def counting(path: Path, *args: object, **kwargs: object) -> pydicom.Dataset:
        parsed.append(Path(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pydicom, "dcmread", counting)
    (volume,) = read_series(study.dicom_dir, deidentify=Deidentifier(KEY), problems=[])
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert sorted(parsed) == sorted(study.files)
