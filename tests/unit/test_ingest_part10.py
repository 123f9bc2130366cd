"""The fast Part 10 writer gives exactly pydicom's bytes, for real files and de-identified ones."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from radseg.imaging.deid import Deidentifier
from radseg.imaging.dicom_frames import dataset_to_frames
from radseg.imaging.part10 import part10_bytes
from radseg.imaging.synthetic import write_synthetic_ct

NAMES = [
    "CT_small.dcm",  # explicit VR little endian, group lengths
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # big endian: handed to dcmwrite
    "693_UNCR.dcm",  # retired group length elements
    "693_J2KR.dcm",  # encapsulated pixel data (undefined length)
    "explicit_VR-UN.dcm",  # UN elements
    "eCT_Supplemental.dcm",  # enhanced CT with functional group sequences
    "image_dfl.dcm",  # deflate: handed to dcmwrite
    "nested_priv_SQ.dcm",  # nested private sequences
    "color-pl.dcm",
    "rtplan.dcm",
    "reportsi.dcm",  # SR content tree
    "emri_small_jpeg_ls_lossless.dcm",
]


def dcmwrite_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_bytes_equal_dcmwrite_as_read_and_after_deidentification(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    for deidentify in (False, True):
        ds = pydicom.dcmread(path)
        if deidentify:
            Deidentifier(b"k", allow_burned_in=True)(ds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # decoding frames decodes more elements, as the reader does
                with contextlib.suppress(Exception):
                    dataset_to_frames(name, ds)
        assert part10_bytes(ds) == dcmwrite_bytes(ds), (name, deidentify)


def test_a_deidentified_series_round_trips(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=7, shape=(3, 16, 16))
    for path in study.files:
        ds = Deidentifier(b"k")(pydicom.dcmread(path))
        dataset_to_frames(path.name, ds)
        data = part10_bytes(ds)
        assert data == dcmwrite_bytes(ds)
        again = pydicom.dcmread(io.BytesIO(data))
        assert again.PatientIdentityRemoved == "YES"
        assert again.pixel_array.tolist() == ds.pixel_array.tolist()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm"])
def test_cached_method_code_sequence_writes_and_reads_as_a_fresh_one(name: str) -> None:
    from pydicom.sequence import Sequence

    deidentify = Deidentifier(b"k")
    path = get_testdata_file(name)
    assert isinstance(path, str)
    cached, fresh = deidentify(pydicom.dcmread(path)), deidentify(pydicom.dcmread(path))
    fresh.DeidentificationMethodCodeSequence = Sequence(deidentify._method_codes())
    assert part10_bytes(cached) == dcmwrite_bytes(fresh)
    again = pydicom.dcmread(io.BytesIO(part10_bytes(cached)))
    assert [i.CodeValue for i in again.DeidentificationMethodCodeSequence] == [
        "113100",
        "113107",
        "113108",
    ]
