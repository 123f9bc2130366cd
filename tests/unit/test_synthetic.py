"""The synthetic CT generator writes real, realistic, deliberately awkward DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import CTImageStorage

from radseg.imaging.synthetic import SYNTHETIC_CLASSES, write_synthetic_ct


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_ct(tmp_path_factory.mktemp("syn"), seed=7)


def test_writes_ct_image_storage_files_with_the_attributes_readers_need(study) -> None:
    files = sorted(study.dicom_dir.iterdir())
    assert len(files) == 40
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "CT"
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "RescaleSlope",
        "RescaleIntercept",
        "WindowCenter",
        "WindowWidth",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "InstanceNumber",
    ):
        assert keyword in ds, keyword
    assert ds.pixel_array.shape == (128, 128)
    assert ds.pixel_array.dtype == np.uint16
    assert str(ds.PatientName) == "Doe^Jane"
    assert ds.StudyInstanceUID == study.study_instance_uid


def test_file_names_and_instance_numbers_do_not_follow_slice_order(study) -> None:
    by_name = sorted(study.files, key=lambda p: p.name)
    assert by_name != study.files
    numbers = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in study.files]
    assert numbers != sorted(numbers)  # InstanceNumber counts from the head down


def test_stored_pixels_give_back_the_ground_truth_hu(study) -> None:
    for k in (0, 17, 39):
        ds = pydicom.dcmread(study.files[k])
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu.astype(np.float32), study.hu[k])
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
            np.asarray(study.geometry.origin) + np.array([0, 0, 3.0 * k])
        )


def test_anatomy_has_plausible_hounsfield_units(study) -> None:
    hu, labels = study.hu, study.labels
    assert np.median(hu[:, 0, :]) == pytest.approx(-1000, abs=30)  # air above the body
    expected = {1: 60, 2: -850, 3: -850, 4: 700, 5: 30}
    for class_id, value in expected.items():
        assert np.median(hu[labels == class_id]) == pytest.approx(value, abs=15), class_id
    # Lungs sit on the right side of the image for the patient's left (LPS).
    left_x = np.nonzero(labels == 2)[2].mean()
    right_x = np.nonzero(labels == 3)[2].mean()
    assert left_x > right_x


def test_spine_label_has_holes_and_every_class_is_present(study) -> None:
    assert set(np.unique(study.labels)) == {0, *(c.id for c in SYNTHETIC_CLASSES)}
    spine = (study.labels == 4).astype(np.uint8)
    z = int(np.argmax(spine.sum(axis=(1, 2))))
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(spine[z])))
    assert filled.sum() > spine[z].sum()  # the spinal canal is a hole in the vertebra


def test_label_file_has_exactly_the_dicom_geometry(study) -> None:
    image = sitk.ReadImage(str(study.label_path))
    assert image.GetSize() == study.geometry.size
    np.testing.assert_allclose(image.GetSpacing(), study.geometry.spacing, atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), study.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), study.geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), study.labels)
    assert study.class_map_path.is_file()


def test_seeds_make_different_patients_and_the_same_seed_repeats(tmp_path: Path) -> None:
    a = write_synthetic_ct(tmp_path / "a", seed=1, shape=(12, 64, 64))
    b = write_synthetic_ct(tmp_path / "b", seed=2, shape=(12, 64, 64))
    a2 = write_synthetic_ct(tmp_path / "a2", seed=1, shape=(12, 64, 64))
    assert a.patient_id != b.patient_id
    assert a.study_instance_uid != b.study_instance_uid
    assert not np.array_equal(a.labels, b.labels)
    assert a.study_instance_uid == a2.study_instance_uid
    np.testing.assert_array_equal(a.hu, a2.hu)


def test_signed_storage_and_custom_shape(tmp_path: Path) -> None:
    s = write_synthetic_ct(tmp_path, shape=(6, 48, 64), spacing=(0.8, 0.7, 5.0), signed=True)
    ds = pydicom.dcmread(s.files[2])
    assert ds.pixel_array.dtype == np.int16
    assert ds.pixel_array.shape == (48, 64)
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8]  # row spacing (y), column spacing (x)
    np.testing.assert_array_equal(ds.pixel_array.astype(np.float32), s.hu[2])
    assert s.geometry.size == (64, 48, 6)
