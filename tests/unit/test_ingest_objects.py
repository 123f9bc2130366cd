"""Only images become image series, each read the way it is laid out: objects that are not
images (RT Dose, RT Plan, SR, presentation states), Siemens mosaics, multi-frame instances without
per-frame positions and palette colour are refused with a reason, beside a series that is kept."""

from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radseg.contracts import IngestProblem
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_series
from radseg.imaging.mosaic import read_csa_value
from radseg.imaging.synthetic import write_synthetic_ct

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
SMALL = (6, 24, 20)


def _read(folder: Path) -> tuple[list, dict[str, str]]:
    problems: list[IngestProblem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volumes = read_series(
            folder, deidentify=Deidentifier(b"k"), problems=problems, keep_originals=True
        )
    return volumes, {p.path: p.reason for p in problems}


def _with_good_series(tmp_path: Path) -> tuple[Path, np.ndarray]:
    study = write_synthetic_ct(tmp_path / "in" / "ct", seed=7, shape=SMALL)
    return tmp_path / "in", study.hu


def _assert_only_the_good_series(volumes: list, hu: np.ndarray) -> None:
    (volume,) = volumes
    np.testing.assert_array_equal(volume.hu, hu)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtdose.dcm", "not an image series (RT Dose); kept out of volumes"),
        ("rtdose_1frame.dcm", "not an image series (RT Dose); kept out of volumes"),
        ("rtplan.dcm", "not an image series (RT Plan); kept out of volumes"),
        ("reportsi.dcm", "not an image series (Basic Text SR); kept out of volumes"),
    ],
)
def test_objects_that_are_not_images_are_reported_by_class_and_kept_out_of_volumes(
    tmp_path: Path, name: str, reason: str
) -> None:
    # rtdose.dcm used to become a one-slice "RTDOSE" volume (its 15 dose frames share one
    # position: 14 dropped as duplicates, DoseGridScaling ignored); rtdose_1frame.dcm silently
    folder, hu = _with_good_series(tmp_path)
    shutil.copy(TEST_FILES / name, folder / name)
    volumes, reasons = _read(folder)
    assert reasons == {name: reason}
    _assert_only_the_good_series(volumes, hu)


def test_a_presentation_state_and_a_private_class_are_named(tmp_path: Path) -> None:
    folder, hu = _with_good_series(tmp_path)
    template = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    for name, sop_class in [
        ("gsps.dcm", "1.2.840.10008.5.1.4.1.1.11.1"),  # keeps MR_small's pixel data
        ("csa.dcm", "1.3.12.2.1107.5.9.1"),  # Siemens CSA Non-Image
    ]:
        ds = template.copy()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SeriesInstanceUID = generate_uid()
        ds.save_as(folder / name)
    volumes, reasons = _read(folder)
    assert reasons == {
        "gsps.dcm": "not an image series (Grayscale Softcopy Presentation State); kept out "
        "of volumes",
        "csa.dcm": "not an image series (SOP class 1.3.12.2.1107.5.9.1, not one radseg knows); "
        "kept out of volumes",
    }
    _assert_only_the_good_series(volumes, hu)


def _csa2(tags: dict[str, list[str]]) -> bytes:
    """A Siemens CSA2 ("SV10") header holding ``tags``, laid out as syngo writes it."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, values in tags.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(values), b"IS", 6, 6, 205))
        for k in range(6):
            value = (values[k].encode() + b"\x00") if k < len(values) else b""
            out.append(struct.pack("<4i", len(value), len(value), 77, len(value)))
            out.append(value + b"\x00" * (-len(value) % 4))
    return b"".join(out)


def _mosaic(path: Path, marker: str) -> None:
    """MR_small's 64x64 slice tiled 2x2 into one 128x128 frame, marked as a mosaic by
    ImageType, by Siemens' private NumberOfImagesInMosaic, or by the CSA header only."""
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    tile = ds.pixel_array
    ds.PixelData = np.block([[tile, tile], [tile, tile]]).astype(tile.dtype).tobytes()
    ds.Rows = ds.Columns = 128
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"] + (["MOSAIC"] if marker == "type" else [])
    if marker == "private":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", 4)
    if marker == "csa":
        csa = _csa2({"EchoLinePosition": ["32"], "NumberOfImagesInMosaic": ["4"]})
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    ("marker", "count"),
    [("type", "an unknown number of images"), ("private", "4 images"), ("csa", "4 images")],
)
def test_a_siemens_mosaic_is_refused_with_a_reason_that_names_it(
    tmp_path: Path, marker: str, count: str
) -> None:
    # it used to become a one-slice 128x128 "volume" of four tiles, without a word
    folder, hu = _with_good_series(tmp_path)
    _mosaic(folder / "mosaic.dcm", marker)
    volumes, reasons = _read(folder)
    assert reasons == {
        "mosaic.dcm": f"Siemens mosaic ({count} in one frame): not supported; export the "
        "series as single-slice images"
    }
    _assert_only_the_good_series(volumes, hu)


def test_a_damaged_csa_header_is_no_mosaic_count_and_no_crash() -> None:
    csa = _csa2({"NumberOfImagesInMosaic": ["12"]})
    assert read_csa_value(csa, "NumberOfImagesInMosaic") == "12"
    assert read_csa_value(csa, "SliceNormalVector") is None
    for cut in range(len(csa)):  # every truncation, and a count of tags far too large
        assert read_csa_value(csa[:cut], "NumberOfImagesInMosaic") in (None, "12")
    assert read_csa_value(csa[:8] + struct.pack("<2I", 10**6, 77), "X") is None


def _multi_frame_without_positions(path: Path, frames: int) -> None:
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    ds.PixelData = ds.PixelData * frames
    ds.NumberOfFrames = frames
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(path)


def test_frames_that_share_one_position_are_refused_not_dropped_as_duplicates(
    tmp_path: Path,
) -> None:
    # a cine loop: every frame got the dataset's one ImagePositionPatient, so all but one were
    # dropped as duplicates and a one-slice volume was stored
    folder, hu = _with_good_series(tmp_path)
    _multi_frame_without_positions(folder / "cine.dcm", 3)
    volumes, reasons = _read(folder)
    assert list(reasons) == ["cine.dcm"]
    assert reasons["cine.dcm"].startswith(
        "3 frames in one instance without Per-frame Functional Groups (a cine loop or time series"
    )
    _assert_only_the_good_series(volumes, hu)


def test_palette_colour_is_refused_even_with_one_sample_per_pixel(tmp_path: Path) -> None:
    # the indexes into the colour table were read as greyscale values when the image could be
    # placed in space
    folder, hu = _with_good_series(tmp_path)
    ds: Dataset = pydicom.dcmread(TEST_FILES / "examples_palette.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.save_as(folder / "palette.dcm")
    volumes, reasons = _read(folder)
    assert reasons == {
        "palette.dcm": "colour image (PALETTE COLOR); only greyscale CT/MR series are "
        "ingested; skipped"
    }
    _assert_only_the_good_series(volumes, hu)


def test_the_private_element_glance_finds_what_pydicom_finds(tmp_path: Path) -> None:
    """The mosaic check skips pydicom's private-block lookup for a file without any element in
    the group; on every file pydicom ships for its tests and on mosaics marked either way, it
    finds the same values as the lookup."""
    from radseg.imaging.mosaic import _private

    def lookup(ds: pydicom.Dataset, group: int, creator: str, offset: int) -> object:
        try:
            return ds.private_block(group, creator)[offset].value
        except (KeyError, ValueError):
            return None

    for marker in ("private", "csa"):
        _mosaic(tmp_path / f"{marker}.dcm", marker)
    paths = [*sorted(p for p in TEST_FILES.rglob("*") if p.is_file()), *tmp_path.iterdir()]
    datasets = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's test corpus holds damaged files
        for path in paths:
            try:
                datasets.append(pydicom.dcmread(path))
            except Exception:
                continue
    found = 0
    for ds in datasets:
        for group, creator, offset in (
            (0x0019, "SIEMENS MR HEADER", 0x0A),
            (0x0029, "SIEMENS CSA HEADER", 0x10),
        ):
            expected = lookup(ds, group, creator, offset)
            assert _private(ds, group, creator, offset) == expected
            found += expected is not None
    assert len(datasets) > 50 and found >= 2
