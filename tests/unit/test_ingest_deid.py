"""De-identification beyond the basics: profile attributes, nested and implicit VR, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radseg.imaging.deid import REMOVE, Deidentifier, RefusedInstance, pseudonymise
from radseg.imaging.synthetic import write_synthetic_ct

KEY = b"deid-extra"


def data_file(name: str) -> str:
    path = get_testdata_file(name)
    assert isinstance(path, str), f"{name} is missing from pydicom's test data"
    return path


def serialised(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_profile_attributes_are_removed_at_any_depth() -> None:
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.ReasonForStudy = "suspected tumour, Dr Quackenbush"
    ds.RequestedProcedureID = "RP-Quackenbush"
    ds.TextComments = "call Quackenbush"
    item = Dataset()
    item.PersonAddress = "1 Quackenbush Lane"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    item.ContentCreatorName = "Quackenbush^Q"
    ds.ReferencedImageSequence = Sequence([item])
    icon = Dataset()
    icon.Rows = 1
    ds.IconImageSequence = Sequence([icon])
    out = serialised(Deidentifier(KEY)(ds))
    assert b"Quackenbush" not in out
    assert "IconImageSequence" not in pydicom.dcmread(io.BytesIO(out))
    assert {"ReasonForStudy", "RequestedProcedureID", "TextComments", "PersonAddress"} <= REMOVE


def test_implicit_vr_files_are_cleaned_by_dictionary_vr() -> None:
    ds = pydicom.dcmread(data_file("MR_small_implicit.dcm"))
    original_uid = str(ds.SOPInstanceUID)
    original_name = str(ds.PatientName)
    cleaned = Deidentifier(KEY)(ds)
    out = serialised(cleaned)
    assert original_uid.encode() not in out
    assert original_name.encode() not in out
    assert cleaned.PatientID == pseudonymise(KEY, "4MR1")


def test_legacy_converted_enhanced_ct_loses_the_attributes_copied_into_its_sequences(
    tmp_path: Path,
) -> None:
    """highdicom copies unassigned attributes (address, other IDs, private tags) into
    functional-group sequences; they must go there too."""
    study = write_synthetic_ct(tmp_path, seed=5, shape=(4, 16, 16), patient_id="MRN-4455")
    enhanced = LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in study.files],
        series_instance_uid=highdicom.UID(),
        series_number=3,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    data = serialised(enhanced)
    assert b"Elm Street" in data and b"MRN-4455" in data  # the converter copied them
    cleaned = serialised(Deidentifier(KEY)(pydicom.dcmread(io.BytesIO(data))))
    for secret in (b"Elm Street", b"MRN-4455", b"Doe^Jane", study.sop_instance_uids[0].encode()):
        assert secret not in cleaned, secret


def test_burned_in_annotation_is_refused_before_anything_is_changed() -> None:
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    name = str(ds.PatientName)
    with pytest.raises(RefusedInstance, match="allow-burned-in"):
        Deidentifier(KEY)(ds)
    assert str(ds.PatientName) == name  # refused, not half de-identified
    assert Deidentifier(KEY, allow_burned_in=True)(ds).PatientIdentityRemoved == "YES"
