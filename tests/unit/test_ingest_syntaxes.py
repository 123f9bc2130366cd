"""Pixel data in every common transfer syntax, from the real files in pydicom and pydicom-data.

References are independent of the decoder radseg goes through (pydicom's default plugin chain):
the uncompressed twin that pydicom-data ships, SimpleITK (GDCM) reading the same file, or
another decoder (OpenCV's libjpeg-turbo for JPEG baseline).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import highdicom
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGBaseline8Bit

from radseg.contracts import IngestProblem
from radseg.imaging.dicom_frames import dataset_to_frames, stored_values
from radseg.imaging.dicom_io import read_series
from radseg.imaging.synthetic import write_synthetic_ct


def identity(ds: Dataset) -> Dataset:
    return ds


def data_file(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"{name} is missing from pydicom/pydicom-data; reinstall pydicom-data")
    return Path(path)


def read_one(path: Path, problems: list[IngestProblem] | None = None):
    problems = problems if problems is not None else []
    volumes = read_series(path if path.is_dir() else [path], deidentify=identity, problems=problems)
    assert len(volumes) == 1, problems
    return volumes[0]


def sitk_hu(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image), image


# (compressed or other syntax, uncompressed twin) — all with a position in patient space
PAIRS = [
    ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE lossless
    ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit VR big endian
    ("MR_small_expb.dcm", "MR_small.dcm"),  # explicit VR big endian
    ("MR_small_implicit.dcm", "MR_small.dcm"),  # implicit VR little endian
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
    ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless, signed CT
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, 1024² MR
]


@pytest.mark.parametrize(("name", "reference"), PAIRS, ids=[p[0] for p in PAIRS])
def test_decoded_hu_equals_the_uncompressed_twin_and_geometry_matches_simpleitk(
    name: str, reference: str
) -> None:
    volume = read_one(data_file(name))
    twin = pydicom.dcmread(data_file(reference))
    # HU computed in double precision, then rounded once to float32 (what SimpleITK does too)
    expected = twin.pixel_array * float(twin.get("RescaleSlope", 1)) + float(
        twin.get("RescaleIntercept", 0)
    )
    np.testing.assert_array_equal(volume.hu[0], expected.astype(np.float32))
    hu, image = sitk_hu(data_file(name))
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.geometry.size == image.GetSize()
    np.testing.assert_allclose(volume.geometry.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.geometry.spacing[:2], image.GetSpacing()[:2], atol=1e-6)
    np.testing.assert_allclose(volume.geometry.direction, image.GetDirection(), atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "693_J2KI.dcm",  # JPEG 2000 (lossy)
        "bad_sequence.dcm",  # JPEG lossless, process 14 SV1, CT
        "explicit_VR-UN.dcm",  # JPEG 2000 lossless with UN-encoded header elements
        "CT_small.dcm",  # explicit VR little endian, signed CT
    ],
)
def test_lossy_and_other_syntaxes_match_simpleitk(name: str) -> None:
    volume = read_one(data_file(name))
    hu, image = sitk_hu(data_file(name))
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.geometry.origin, image.GetOrigin(), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("JPEG-LL.dcm", 0),  # JPEG lossless process 14
        # JPEG extended (12-bit, lossy): IDCT implementations may differ by one
        ("JPGExtended.dcm", 1),
        ("JPEG2000.dcm", 0),  # JPEG 2000
        ("image_dfl.dcm", 0),  # deflated explicit VR little endian
        ("JPEGLSNearLossless_16.dcm", 0),  # JPEG-LS near-lossless
        ("emri_small_big_endian.dcm", 0),  # multi-frame big endian
        ("emri_small_RLE.dcm", 0),  # multi-frame RLE
        ("emri_small_jpeg_ls_lossless.dcm", 0),  # multi-frame JPEG-LS
    ],
)
def test_stored_values_equal_simpleitk_for_files_without_geometry(
    name: str, tolerance: int
) -> None:
    """These files have no position in space; their pixels still decode like GDCM's."""
    ds = pydicom.dcmread(data_file(name))
    values = stored_values(ds)
    assert values.dtype.isnative
    image = sitk.ReadImage(str(data_file(name)))
    expected = sitk.GetArrayFromImage(image)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    np.testing.assert_allclose(
        values.astype(np.float64) * slope + intercept,
        expected.reshape(values.shape).astype(np.float64),
        rtol=0,
        atol=tolerance,
    )


def test_jpeg_baseline_matches_an_independent_decoder(tmp_path: Path) -> None:
    """No greyscale JPEG baseline CT ships with pydicom: encode one with OpenCV's libjpeg-turbo."""
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 60, (64, 64)) + np.arange(64)[:, None] * 3).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "baseline.dcm"
    ds.save_as(path)
    volume = read_one(path)
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    assert decoded is not None
    reference = decoded.astype(np.float32)
    np.testing.assert_array_equal(
        volume.hu[0], reference * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    )


def test_native_fast_path_equals_pydicom_for_every_native_greyscale_test_file() -> None:
    checked = 0
    for name in (
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_padded.dcm",
        "CT_small.dcm",
        "693_UNCR.dcm",
        "693_UNCI.dcm",
        "MR2_UNCR.dcm",
        "emri_small.dcm",
        "eCT_Supplemental.dcm",
        "image_dfl.dcm",
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "examples_overlay.dcm",
        "rtdose.dcm",
        "gdcm-US-ALOKA-16.dcm",
        "gdcm-US-ALOKA-16_big.dcm",
        "vlut_04.dcm",
        "mlut_18.dcm",
    ):
        ds = pydicom.dcmread(data_file(name))
        expected = ds.pixel_array.reshape(stored_values(ds).shape)
        np.testing.assert_array_equal(stored_values(ds), expected, err_msg=name)
        checked += 1
    assert checked == 18


def test_bad_files_are_reported_by_name_and_the_rest_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(data_file("MR_small.dcm"), folder / "good.dcm")
    # a 12-bit JPEG extended file that no installed decoder accepts, given a place in space
    undecodable = pydicom.dcmread(data_file("JPEG-lossy.dcm"))
    undecodable.ImagePositionPatient = [0, 0, 0]
    undecodable.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    undecodable.PixelSpacing = [1, 1]
    undecodable.save_as(folder / "JPEG-lossy.dcm")
    for name in (
        "MR_truncated.dcm",  # pixel data shorter than the matrix
        "emri_small_jpeg_2k_lossless_too_short.dcm",  # cut before its pixel data
        "rtplan.dcm",  # not an image
        "rtplan_truncated.dcm",
        "SC_rgb.dcm",  # colour
        "JPEG2000.dcm",  # an image without a position in space
    ):
        shutil.copy(data_file(name), folder / name)
    (folder / "notes.txt").write_text("not DICOM")
    problems: list[IngestProblem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volumes = read_series(folder, deidentify=identity, problems=problems)
    assert len(volumes) == 1
    np.testing.assert_array_equal(
        volumes[0].hu[0], pydicom.dcmread(folder / "good.dcm").pixel_array.astype(np.float32)
    )
    reasons = {p.path: p.reason for p in problems}
    assert set(reasons) == {
        "MR_truncated.dcm",
        "JPEG-lossy.dcm",
        "emri_small_jpeg_2k_lossless_too_short.dcm",
        "rtplan.dcm",
        "rtplan_truncated.dcm",
        "SC_rgb.dcm",
        "JPEG2000.dcm",
    }
    assert "truncated" in reasons["MR_truncated.dcm"]
    assert "could not be decoded" in reasons["JPEG-lossy.dcm"]
    assert reasons["rtplan.dcm"] == "not an image series (RT Plan); kept out of volumes"
    assert "colour" in reasons["SC_rgb.dcm"]
    assert "missing ImagePositionPatient" in reasons["JPEG2000.dcm"]


def test_enhanced_multiframe_ct_reads_like_its_legacy_series(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path / "legacy", seed=3, shape=(8, 32, 28))
    datasets = [pydicom.dcmread(f) for f in study.files]
    enhanced = LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=highdicom.UID(),
        series_number=9,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    assert "PerFrameFunctionalGroupsSequence" in enhanced
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)

    legacy = read_one(study.dicom_dir)
    volume = read_one(path)
    np.testing.assert_array_equal(volume.hu, legacy.hu)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert volume.geometry == legacy.geometry
    assert sorted(s.frame_number or 0 for s in volume.slices) == list(range(1, 9))
    assert {s.sop_instance_uid for s in volume.slices} == {str(enhanced.SOPInstanceUID)}
    # GDCM reads the frames in file order; the volume is sorted along the slice normal.
    hu, image = sitk_hu(path)
    if image.GetDirection()[8] < 0:
        hu = hu[::-1]
    np.testing.assert_array_equal(volume.hu, hu)


def test_enhanced_ct_from_pydicom_uses_per_frame_positions_and_shared_rescale() -> None:
    path = data_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    volume = read_one(path)
    assert volume.geometry.size == (512, 512, 2)
    assert volume.geometry.spacing[2] == pytest.approx(10.0)
    # ImageOrientationPatient is (-1, 0, 0, 0, 1, 0): the normal points to -z (feet), so the
    # frame at z = -149 mm comes first along it.
    assert volume.geometry.origin == pytest.approx((99.5, -301.5, -149.0))
    np.testing.assert_array_equal(volume.hu, ds.pixel_array[::-1].astype(np.float32) - 1024)
    assert [s.frame_number for s in volume.slices] == [2, 1]


def test_frames_of_an_enhanced_instance_keep_their_own_rescale(tmp_path: Path) -> None:
    ds = pydicom.dcmread(data_file("eCT_Supplemental.dcm"))
    item = Dataset()
    item.RescaleSlope = "2"
    item.RescaleIntercept = "-10"
    item.RescaleType = "HU"
    ds.PerFrameFunctionalGroupsSequence[1].PixelValueTransformationSequence = [item]
    frames = dataset_to_frames("x", ds)
    assert (frames[0].slope, frames[0].intercept) == (1.0, -1024.0)
    assert (frames[1].slope, frames[1].intercept) == (2.0, -10.0)
    assert UID(ds.file_meta.TransferSyntaxUID).is_little_endian
