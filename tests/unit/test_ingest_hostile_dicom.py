"""Damaged and hostile DICOM files: each is reported with its reason and the rest is kept;
declared sizes are checked against the bytes present before anything is allocated."""

from __future__ import annotations

import io
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from radseg.contracts import IngestProblem
from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_io import read_file, read_series
from radseg.imaging.synthetic import write_synthetic_ct
from tests.dicom_mutants import load_seed
from tests.support import require_module

KEY = b"test-key"
SMALL = (10, 24, 20)
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _set_vr(path: Path, tag: int, vr: bytes) -> None:
    """Overwrite the VR bytes of the top-level element ``tag`` of an explicit VR file."""
    seed = load_seed(path)
    (element,) = [e for e in seed.elements if e.tag == tag]
    assert element.vr_offset is not None
    data = bytearray(seed.data)
    data[element.vr_offset : element.vr_offset + 2] = vr
    path.write_bytes(bytes(data))


def _read(folder: Path) -> tuple[list, dict[str, str]]:
    problems: list[IngestProblem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volumes = read_series(
            folder, deidentify=Deidentifier(KEY), problems=problems, keep_originals=True
        )
    return volumes, {p.path: p.reason for p in problems}


def test_a_damaged_header_element_is_reported_for_its_file_and_the_rest_kept(
    tmp_path: Path,
) -> None:
    study = write_synthetic_ct(tmp_path, seed=21, shape=SMALL)
    # an unknown VR raises NotImplementedError at the first access: PatientName is read before
    # de-identification, to keep the patient's name out of reports, so its file is reported;
    # de-identification reads any other element with a made-up VR as its dictionary VR, so a
    # Modality marked QQ is read as the CS it is and its file kept
    _set_vr(study.files[2], 0x00100010, b"MB")
    _set_vr(study.files[6], 0x00080060, b"QQ")
    volumes, reasons = _read(study.dicom_dir)

    assert set(reasons) == {study.files[2].name}
    assert reasons[study.files[2].name].startswith("damaged header"), reasons
    assert "NotImplementedError" in reasons[study.files[2].name], reasons
    (volume,) = volumes
    assert volume.modality == "CT"
    np.testing.assert_array_equal(volume.hu, np.delete(study.hu, [2], axis=0))
    assert len(volume.originals) == SMALL[0] - 1
    for original in volume.originals:
        assert pydicom.dcmread(io.BytesIO(bytes(original)))[0x00080060].VR == "CS"


def test_a_file_that_cannot_be_re_encoded_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(TEST_FILES / "MR_small.dcm", folder / "good.dcm")
    broken = folder / "broken.dcm"
    shutil.copy(TEST_FILES / "MR_small_expb.dcm", broken)
    # the trailing padding element's VR garbled: pydicom reads the file, but its writer
    # refuses what it read (a group 0000 element); the original could not be stored
    _set_vr(broken, 0xFFFCFFFC, b"V\x13")
    volumes, reasons = _read(folder)

    assert list(reasons) == ["broken.dcm"]
    assert "could not be re-encoded" in reasons["broken.dcm"]
    (volume,) = volumes
    assert volume.hu.shape == (1, 64, 64) and len(volume.originals) == 1


def test_a_native_decoder_crash_is_reported_not_a_cut_image(tmp_path: Path) -> None:
    require_module("rle")  # pylibjpeg-rle, the Rust RLE decoder
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(TEST_FILES / "MR_small.dcm", folder / "good.dcm")
    ds = pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm")
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Rows = 16  # the RLE segments hold 64 rows: pylibjpeg-rle panics (a BaseException)
    ds.save_as(folder / "rle.dcm")
    volumes, reasons = _read(folder)

    assert list(reasons) == ["rle.dcm"]
    assert "could not be decoded" in reasons["rle.dcm"]
    assert "PanicException" in reasons["rle.dcm"]
    assert [v.hu.shape for v in volumes] == [(1, 64, 64)]  # no 16-row image cut from it


def _rewritten(tmp_path: Path, name: str, **values: object) -> Path:
    ds = pydicom.dcmread(TEST_FILES / name)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    path = tmp_path / f"declared-{name}"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        # an 8 KB file declaring a million frames cost 23 s and 700 MB before it was refused
        ("MR_small.dcm", {"NumberOfFrames": 1_000_000}, "over the 2 GiB limit per instance"),
        ("MR_small.dcm", {"NumberOfFrames": 100_000}, "pixel data holds 8192 bytes but"),
        ("MR_small_jp2klossless.dcm", {"NumberOfFrames": 100_000}, "holds 1 fragment(s)"),
        # a header that disagrees with the codestream: GDCM aborted the whole process on it
        ("MR_small_jpeg_ls_lossless.dcm", {"Rows": 65535}, "codestream holds 64x64x1"),
        ("JPEG2000.dcm", {"Columns": 2048}, "JPEG 2000 codestream holds"),
        ("MR_small_RLE.dcm", {"BitsAllocated": 8, "BitsStored": 8}, "RLE frame holds 2 segment"),
        ("MR_small.dcm", {"BitsStored": 64}, "BitsStored (64) is larger than BitsAllocated"),
    ],
)
def test_declared_sizes_the_bytes_do_not_back_are_refused_before_decoding(
    tmp_path: Path, name: str, values: dict[str, object], expected: str
) -> None:
    path = _rewritten(tmp_path, name, **values)
    problems: list[IngestProblem] = []
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = read_file(path, deidentify=Deidentifier(KEY), problems=problems)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == []
    (problem,) = problems
    assert problem.path == path.name
    assert problem.reason.startswith("pixel data refused before decoding: "), problem.reason
    assert expected in problem.reason
    assert peak < 16 * 1024**2  # nothing of the declared size was allocated


def _deflated(path: Path, ds: pydicom.Dataset) -> Path:
    """``ds`` written as Deflated Explicit VR Little Endian (how a PACS may send it)."""
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_deflate_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    # 256 MiB of zeros in a text element deflates to about 256 KB: pydicom inflates a deflated
    # dataset whole before anything can look at it
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.add_new(0x00091010, "OB", b"\0" * (256 << 20))
    bomb = _deflated(tmp_path / "bomb.dcm", ds)
    del ds
    assert bomb.stat().st_size < 2 << 20
    problems: list[IngestProblem] = []
    tracemalloc.start()
    try:
        frames = read_file(bomb, deidentify=Deidentifier(KEY), problems=problems)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == []
    (problem,) = problems
    assert problem.reason.startswith("refused before reading: the deflated dataset inflates")
    assert peak < 16 * 1024**2  # counted in bounded chunks, never held

    # an honest deflated slice is read as before
    honest = _deflated(tmp_path / "honest.dcm", pydicom.dcmread(TEST_FILES / "CT_small.dcm"))
    problems = []
    (frame,) = read_file(honest, deidentify=Deidentifier(KEY), problems=problems)
    assert problems == []
    expected = pydicom.dcmread(TEST_FILES / "CT_small.dcm").pixel_array
    assert np.array_equal(frame.pixels, expected)


def test_a_deflate_bomb_with_a_file_meta_past_the_first_4_kib_is_refused(tmp_path: Path) -> None:
    """The reader clears a file as not deflated from its first 4 KiB only when its whole file
    meta lies there; a longer one is parsed as before, and the bomb is still refused."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.add_new(0x00091010, "OB", b"\0" * (64 << 20))
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = b"\0" * 6000
    bomb = _deflated(tmp_path / "bomb.dcm", ds)
    del ds
    problems: list[IngestProblem] = []
    assert read_file(bomb, deidentify=Deidentifier(KEY), problems=problems) == []
    (problem,) = problems
    assert problem.reason.startswith("refused before reading: the deflated dataset inflates")


def test_the_file_meta_glance_clears_only_files_pydicom_reads_as_not_deflated() -> None:
    """On every file pydicom ships for its tests (all transfer syntaxes, files without a
    preamble or file meta, damaged ones): a file the 4 KiB glance clears is one whose file meta
    pydicom reads as another transfer syntax, or cannot read."""
    from pydicom.filereader import read_file_meta_info

    from radseg.imaging.pixel_checks import _meta_says_not_deflated

    cleared, deflated = 0, []
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        try:
            syntax = read_file_meta_info(path).get("TransferSyntaxUID")
        except Exception:
            syntax = None
        if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            deflated.append(path.name)
            assert not _meta_says_not_deflated(path), path.name
        cleared += _meta_says_not_deflated(path)
    assert deflated and cleared > 50  # the corpus holds both kinds


@pytest.mark.parametrize("modality", ["SEG", "RTSTRUCT"])
def test_a_deflate_bomb_given_as_labels_is_refused_in_one_line(
    tmp_path: Path, modality: str
) -> None:
    from radseg.errors import InputError
    from radseg.imaging.label_sources import label_source_kind, read_label_object

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.Modality = modality
    ds.add_new(0x00091010, "OB", b"\0" * (64 << 20))
    bomb = _deflated(tmp_path / "labels.dcm", ds)
    del ds
    with pytest.raises(InputError, match="the deflated dataset inflates to more than"):
        label_source_kind(bomb)
    with pytest.raises(InputError, match="the deflated dataset inflates to more than"):
        read_label_object(bomb, modality)
