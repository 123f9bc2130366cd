"""De-identification: nothing identifying survives, pseudonyms and UIDs are keyed and stable."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from radseg.imaging.deid import Deidentifier, is_valid_uid, pseudonymise, remap_uid
from radseg.imaging.synthetic import write_synthetic_ct

KEY = b"site-secret"
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_ct(
        tmp_path_factory.mktemp("deid"),
        seed=21,
        shape=(6, 32, 32),
        patient_name="Doe^Jane",
        patient_id="MRN-778899",
        patient_birth_date="19510923",
    )


def serialised(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_no_original_identifier_remains_anywhere(study) -> None:
    original = pydicom.dcmread(study.files[0])
    ds = Deidentifier(KEY)(pydicom.dcmread(study.files[0]))
    data = serialised(ds)
    for secret in (
        b"Doe",
        b"Jane",
        b"MRN-778899",
        b"19510923",
        b"Elm Street",
        b"Saint Elsewhere",
        b"Smith",
        b"Tech^Terry",
        b"CT-SYN-01",
        original.AccessionNumber.encode(),
        study.study_instance_uid.encode(),
        study.series_instance_uid.encode(),
        study.frame_of_reference_uid.encode(),
        study.sop_instance_uids[0].encode(),
    ):
        assert secret not in data, secret
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    assert ds.PatientBirthDate == ""
    assert "OtherPatientIDs" not in ds
    assert "InstitutionName" not in ds
    assert not any(elem.tag.is_private for elem in ds)
    assert ds.PatientSex == "F"  # patient characteristics are kept


def test_pixels_and_class_uids_survive(study) -> None:
    original = pydicom.dcmread(study.files[2])
    ds = Deidentifier(KEY)(pydicom.dcmread(study.files[2]))
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.ImagePositionPatient == original.ImagePositionPatient
    reread = pydicom.dcmread(io.BytesIO(serialised(ds)))
    np.testing.assert_array_equal(reread.pixel_array, original.pixel_array)


def test_pseudonym_is_stable_keyed_and_per_patient() -> None:
    first = pseudonymise(KEY, "MRN-778899")
    assert first == pseudonymise(KEY, "MRN-778899")
    assert first == pseudonymise(KEY, " MRN-778899 ")  # DICOM pads values with spaces
    assert first != pseudonymise(b"another-key", "MRN-778899")
    assert first != pseudonymise(KEY, "MRN-778898")
    assert "778899" not in first
    assert len(first) <= 64


def test_patient_id_becomes_the_pseudonym_in_every_upload(study) -> None:
    a = Deidentifier(KEY)(pydicom.dcmread(study.files[0]))
    b = Deidentifier(KEY)(pydicom.dcmread(study.files[3]))  # a second upload, a new instance
    assert a.PatientID == b.PatientID == pseudonymise(KEY, "MRN-778899")
    assert str(a.PatientName) == a.PatientID


def test_uids_are_remapped_consistently_and_validly(study) -> None:
    deid = Deidentifier(KEY)
    datasets = [deid(pydicom.dcmread(p)) for p in study.files]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    for ds, original in zip(datasets, study.sop_instance_uids, strict=True):
        assert ds.SOPInstanceUID == remap_uid(KEY, original) == deid.uid(original)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert uid.startswith("2.25.")
            assert len(uid) <= 64
            assert UID_PATTERN.match(uid), uid
    assert (
        datasets[0].StudyInstanceUID
        != Deidentifier(b"other")(pydicom.dcmread(study.files[0])).StudyInstanceUID
    )


@pytest.mark.parametrize(
    "uid",
    ["0", "1.2.840.10008.1.2.1", "2.25.340282366920938463463374607431768211455", "1." * 31 + "1"],
)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "1.2.840.10008.9/../../../victim",
        "1.2.840.10008.7/../../../outside",
        "1.2.840.10008.01",  # a leading zero
        "1..2",
        "1.2.",
        ".1.2",
        "1.2.840.10008.1.2 ",
        "1.2.a",
        "1.2.\u0661",  # a non-ASCII digit
        "1." * 32 + "1",  # 65 characters
    ],
)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)


def test_a_dicom_root_uid_is_kept_only_when_valid(caplog: pytest.LogCaptureFixture) -> None:
    deid = Deidentifier(KEY)
    assert deid.uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    for hostile in ("1.2.840.10008.9/../../../victim", "1.2.840.10008.7/../../../outside"):
        replaced = deid.uid(hostile)
        assert replaced == remap_uid(KEY, hostile) and is_valid_uid(replaced)
        assert replaced.startswith("2.25.")
    too_long = "1.2.840.10008." + "9" * 60
    assert deid.uid(too_long) == remap_uid(KEY, too_long)
    # one warning, and never the value (it may be anything, PHI included)
    warnings = [r for r in caplog.records if "invalid UID" in r.getMessage()]
    assert len(warnings) == 1
    assert "victim" not in caplog.text and "outside" not in caplog.text


def test_hostile_study_and_series_uids_in_a_file_come_out_valid(study) -> None:
    ds = pydicom.dcmread(study.files[0])
    ds.StudyInstanceUID = "1.2.840.10008.7/../../../outside"
    ds.SeriesInstanceUID = "1.2.840.10008.9/../../../victim"
    out = Deidentifier(KEY)(ds)
    assert is_valid_uid(out.StudyInstanceUID) and is_valid_uid(out.SeriesInstanceUID)
    assert b"victim" not in serialised(out) and b"outside" not in serialised(out)


def test_references_in_sequences_follow_the_remapping(study) -> None:
    ds: Dataset = pydicom.dcmread(study.files[0])
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = study.sop_instance_uids[1]
    physician = Dataset()
    physician.PerformingPhysicianName = "House^Gregory"
    physician.ReferringPhysicianName = "Wilson^James"
    ds.ReferencedImageSequence = Sequence([item])
    ds.ProcedureCodeSequence = Sequence([physician])
    ds = Deidentifier(KEY)(ds)
    ref = ds.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == remap_uid(KEY, study.sop_instance_uids[1])
    assert ref.ReferencedSOPClassUID == CTImageStorage
    data = serialised(ds)
    assert b"House" not in data and b"Wilson" not in data


def test_dates_are_shifted_per_patient_or_removed(study) -> None:
    deid = Deidentifier(KEY, shift_dates=True)
    shifted = deid(pydicom.dcmread(study.files[0]))
    days = deid.date_shift_days("MRN-778899")
    assert 1 <= days <= 3650
    assert shifted.StudyDate != "20240311"
    assert shifted.StudyDate == shifted.SeriesDate == shifted.AcquisitionDate
    assert shifted.StudyTime == "101500"
    assert shifted.LongitudinalTemporalInformationModified == "MODIFIED"
    again = Deidentifier(KEY, shift_dates=True)(pydicom.dcmread(study.files[4]))
    assert again.StudyDate == shifted.StudyDate  # same patient, same shift

    removed = Deidentifier(KEY, shift_dates=False)(pydicom.dcmread(study.files[0]))
    assert removed.StudyDate == ""
    assert removed.StudyTime == ""
    assert removed.PatientBirthDate == ""
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"


def test_very_old_ages_are_capped(study) -> None:
    ds = pydicom.dcmread(study.files[0])
    ds.PatientAge = "097Y"
    assert Deidentifier(KEY)(ds).PatientAge == "090Y"


def test_key_is_required_and_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Deidentifier(b"")
    assert "site-secret" not in repr(Deidentifier(KEY))


def _damage_vr(data: bytes, tag: bytes, vr: bytes, made_up: bytes) -> bytes:
    """``data`` with the explicit VR of the element ``tag`` (little endian) replaced."""
    at = data.index(tag + vr)
    return data[: at + 4] + made_up + data[at + 6 :]


def test_an_element_whose_vr_is_made_up_is_de_identified_by_its_dictionary_vr(study) -> None:
    original = pydicom.dcmread(study.files[1])
    data = study.files[1].read_bytes()
    data = _damage_vr(data, b"\x08\x00\x20\x00", b"DA", b"DP")  # StudyDate
    data = _damage_vr(data, b"\x08\x00\x90\x00", b"PN", b"QQ")  # ReferringPhysicianName
    ds = Deidentifier(KEY)(pydicom.dcmread(io.BytesIO(data)))
    out = serialised(ds)
    assert original.StudyDate.encode() not in out  # read as DA, then moved like every date
    assert pydicom.dcmread(io.BytesIO(out)).StudyDate == ds.StudyDate != original.StudyDate
    assert original.ReferringPhysicianName.encode() not in out
    assert ds.ReferringPhysicianName == ""
