"""De-identification of DICOM headers before anything is stored.

:class:`Deidentifier` implements a subset of the DICOM PS3.15 Annex E *Basic Application Level
Confidentiality Profile*, keyed so that the same source data always maps to the same output:

Done:

* **Patient identity.** PatientID becomes a keyed pseudonym (:func:`pseudonymise`,
  HMAC-SHA256 with the site's secret key), so one patient keeps one pseudonym across uploads and
  nobody without the key can link it back. PatientName is set to the same pseudonym; every other
  person name (PN) anywhere in the dataset, sequences included, is emptied.
* **Identifying attributes** listed in :data:`REMOVE` are deleted and those in :data:`EMPTY`
  (type 2 in the CT/MR IODs) are emptied: birth date and time, other IDs and names, addresses,
  telephone numbers, institution and department, station, device serial number, accession number,
  study ID, study/series/image comments and descriptions, request attributes, etc.
* **Private tags** are all removed, as are overlay and curve groups (60xx, 50xx), which can carry
  burned-in text.
* **UIDs.** Every UID that is not a DICOM-defined one (``1.2.840.10008.*``: SOP classes, transfer
  syntaxes, coding schemes) is replaced by ``2.25.<decimal HMAC>`` — Study, Series, SOP Instance,
  Frame of Reference, referenced SOP instances in sequences, the file meta's Media Storage SOP
  Instance UID. Keyed and deterministic, so re-ingesting the same files gives the same UIDs and
  references between instances stay consistent. A value is kept as DICOM-defined only if it is
  also a valid UID (:func:`is_valid_uid`, PS3.5 §9.1: components of digits without leading
  zeros, separated by dots, at most 64 characters); any invalid value is replaced like the
  others, with a warning in the log (once per process and de-identifier; never the value).
  UIDs name folders under ``RADSEG_HOME``: ``1.2.840.10008.9/../../x`` must never survive.
* **Dates.** With ``shift_dates=True`` every DA and DT value is moved back by a keyed
  per-patient number of days (1-3650), preserving intervals within a patient ("Retain
  Longitudinal Temporal Information with Modified Dates" option); times are kept. With
  ``shift_dates=False`` all DA, DT and TM values are emptied. PatientBirthDate is always emptied.
* **Patient characteristics** — sex, age (capped at ``090Y``), size, weight — are kept ("Retain
  Patient Characteristics" option), since they matter for research and are not identifying alone.
* PatientIdentityRemoved = ``YES``, DeidentificationMethod and its code sequence record what
  was done.
* **Damaged value representations** — an element whose VR is none of the standard's is read as
  the VR the data dictionary gives its tag, then follows the rules above; with no dictionary
  entry it is removed (:func:`_retype`).

* **Burned-in annotation.** An instance with BurnedInAnnotation = ``YES`` is refused
  (:class:`RefusedInstance`, reported per file by the reader) unless ``allow_burned_in=True``
  (setting ``allow_burned_in_annotation`` or ``radseg ingest --allow-burned-in``): its pixels may
  show the patient's name, and radseg does not clean pixels.

Not done (know this before sharing data outside the site):

* **Pixel data is not inspected.** Instances that do not declare burned-in annotation but carry
  it (some secondary captures, scanned documents) are not detected; CT/MR slices normally carry
  none. Faces can be reconstructed from head CT/MR; no defacing is applied.
* Free text in attributes not listed here (e.g. vendor-specific public attributes) is kept; the
  profile's "Clean Descriptors" option is not implemented — descriptions are removed instead.
* Re-applying the de-identifier to its own output pseudonymises the pseudonyms again; feed it
  original data.

The datasets passed in are modified in place and returned. The rules are applied by tag number
(sets of tags, not keywords), and only elements whose VR needs a change (PN, UI, DA, DT, TM, SQ)
are decoded, which keeps the cost per instance well under a millisecond.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

__all__ = [
    "EMPTY",
    "REMOVE",
    "Deidentifier",
    "RefusedInstance",
    "is_valid_uid",
    "pseudonymise",
    "remap_uid",
]

log = logging.getLogger(__name__)

#: Keywords deleted wherever they occur.
REMOVE: frozenset[str] = frozenset(
    {
        "AdditionalPatientHistory",
        "AdmittingDiagnosesDescription",
        "AdmissionID",
        "Allergies",
        "BranchOfService",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "DerivationDescription",
        "DeviceSerialNumber",
        "EthnicGroup",
        "ImageComments",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "InstitutionName",
        "InstitutionCodeSequence",
        "IssuerOfPatientID",
        "MedicalAlerts",
        "MedicalRecordLocator",
        "MilitaryRank",
        "NameOfPhysiciansReadingStudy",
        "Occupation",
        "OperatorsName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientBirthName",
        "PatientBirthTime",
        "PatientComments",
        "PatientInsurancePlanCodeSequence",
        "PatientMotherBirthName",
        "PatientReligiousPreference",
        "PatientState",
        "PatientTelephoneNumbers",
        "PerformedProcedureStepDescription",
        "PerformedProcedureStepID",
        "PerformingPhysicianName",
        "PhysiciansOfRecord",
        "PregnancyStatus",
        "ProtocolName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "RequestAttributesSequence",
        "RequestedProcedureDescription",
        "RequestingPhysician",
        "RequestingService",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "ScheduledProcedureStepDescription",
        "SeriesDescription",
        "SmokingStatus",
        "SpecialNeeds",
        "StationName",
        "StudyComments",
        "StudyDescription",
        "PerformedStationName",
        "PerformedLocation",
        "ReferencedPatientSequence",
        "ReferencedStudySequence",
        "AcquisitionComments",
        "ContrastBolusAgent",
        "PatientSexNeutered",
        # further attributes of PS3.15 Table E.1-1 (basic profile: X, X/Z, X/D)
        "AcquisitionDeviceProcessingDescription",
        "ActualHumanPerformersSequence",
        "Arbitrary",
        "AuthorObserverSequence",
        "ConsultingPhysicianName",
        "ContentCreatorName",
        "CurrentObserverTrial",
        "CustodialOrganizationSequence",
        "DataSetTrailingPadding",
        "DigitalSignaturesSequence",
        "DischargeDiagnosisDescription",
        "DistributionAddress",
        "DistributionName",
        "FrameComments",
        "HumanPerformerName",
        "HumanPerformerOrganization",
        "IconImageSequence",
        "IdentifyingComments",
        "InsurancePlanIdentification",
        "IntendedRecipientsOfResultsIdentificationSequence",
        "InterpretationApproverSequence",
        "InterpretationAuthor",
        "InterpretationRecorder",
        "InterpretationText",
        "InterpretationTranscriber",
        "IssuerOfAdmissionID",
        "IssuerOfServiceEpisodeID",
        "ModifiedAttributesSequence",
        "ModifyingDeviceID",
        "NamesOfIntendedRecipientsOfResults",
        "OrderCallbackPhoneNumber",
        "OrderEnteredBy",
        "OrderEntererLocation",
        "OriginalAttributesSequence",
        "ParticipantSequence",
        "PatientTransportArrangements",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "PhysiciansOfRecordIdentificationSequence",
        "PhysiciansReadingStudyIdentificationSequence",
        "PlacerOrderNumberImagingServiceRequest",
        "ReasonForStudy",
        "ReferringPhysicianIdentificationSequence",
        "RequestedProcedureComments",
        "RequestedProcedureID",
        "ResultsComments",
        "ScheduledHumanPerformersSequence",
        "ScheduledPatientInstitutionResidence",
        "ScheduledPerformingPhysicianName",
        "ScheduledStationName",
        "ServiceEpisodeDescription",
        "ServiceEpisodeID",
        "SourceImageSequence",
        "TextComments",
        "TextString",
        "TopicAuthor",
        "TopicKeywords",
        "TopicSubject",
        "TopicTitle",
        "VerifyingObserverName",
        "VerifyingObserverSequence",
        "VisitComments",
        "FillerOrderNumberImagingServiceRequest",
        "OperatorIdentificationSequence",
        "PerformingPhysicianIdentificationSequence",
        "PersonIdentificationCodeSequence",
        "RequestingPhysicianIdentificationSequence",
    }
)

#: Keywords kept but emptied (type 2 attributes that conformant files must carry).
EMPTY: frozenset[str] = frozenset(
    {
        "AccessionNumber",
        "PatientBirthDate",
        "ReferringPhysicianName",
        "StudyID",
    }
)

#: Kept under the "Retain Patient Characteristics" option.
_PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")


def _tags(keywords: frozenset[str]) -> frozenset[int]:
    found = (tag_for_keyword(k) for k in keywords)
    return frozenset(int(t) for t in found if t is not None)


_REMOVE_TAGS = _tags(REMOVE)
_EMPTY_TAGS = _tags(EMPTY)
_PATIENT_NAME = 0x00100010
_PATIENT_BIRTH_DATE = 0x00100030
#: VRs whose values the rules change; elements of other VRs are never decoded.
_RULE_VRS = frozenset({"SQ", "PN", "UI", "DA", "DT", "TM"})

_DICOM_ROOT = "1.2.840.10008."
#: PS3.5 §9.1: numeric components, no leading zero (except the component "0"), dot-separated
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def is_valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a UID as DICOM PS3.5 §9.1 defines it: components of ASCII digits
    (no leading zero unless the component is ``0``) separated by single dots, at most 64
    characters in all."""
    return isinstance(uid, str) and len(uid) <= MAX_UID_LENGTH and _UID.fullmatch(uid) is not None


class RefusedInstance(Exception):
    """An instance that must not be stored; the message (no PHI) says why and what to do."""


_MAX_SHIFT_DAYS = 3650


def pseudonymise(key: bytes, patient_id: str) -> str:
    """Return the keyed pseudonym of ``patient_id``: ``P`` + 24 hex digits of HMAC-SHA256.

    Stable for a given key (same patient → same pseudonym across uploads), not reversible
    without it. An empty PatientID gets a pseudonym too (all anonymous patients share it).
    """
    digest = hmac.new(key, b"patient:" + patient_id.strip().encode("utf-8"), hashlib.sha256)
    return "P" + digest.hexdigest()[:24].upper()


def remap_uid(key: bytes, uid: str) -> str:
    """Map ``uid`` to ``2.25.<integer>`` from a keyed 128-bit hash (at most 44 characters)."""
    digest = hmac.new(key, b"uid:" + uid.strip().encode("ascii", "replace"), hashlib.sha256)
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


class Deidentifier:
    """A callable that de-identifies one pydicom ``Dataset`` in place (see the module doc).

    :param key: the site's secret; the same key gives the same pseudonyms, UIDs and date shifts.
        Keep it out of the data (settings or a secrets store) and never change it casually, or
        re-ingested studies stop matching the ones already stored.
    :param shift_dates: shift dates by a keyed per-patient offset instead of removing them.
    """

    #: DeidentificationMethod (LO, at most 64 characters)
    method = "radseg: PS3.15 basic profile subset, keyed pseudonyms and UIDs"

    def __init__(self, key: bytes, shift_dates: bool = True, allow_burned_in: bool = False) -> None:
        if not key:
            raise ValueError("the de-identification key must not be empty")
        self.key = bytes(key)
        self.shift_dates = shift_dates
        self.allow_burned_in = allow_burned_in
        self._encoded_codes: dict[bool, bytes] = {}  # DeidentificationMethodCodeSequence
        self._warned_invalid_uid = False

    def __repr__(self) -> str:  # never show the key
        return (
            f"Deidentifier(shift_dates={self.shift_dates}, allow_burned_in={self.allow_burned_in})"
        )

    def __call__(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place and return it.

        :raises RefusedInstance: BurnedInAnnotation is YES and ``allow_burned_in`` is false.
        """
        if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
            if not self.allow_burned_in:
                raise RefusedInstance(
                    "BurnedInAnnotation is YES: the pixels may show patient identity and radseg "
                    "does not clean pixels; refused (set allow_burned_in_annotation = true or "
                    "pass --allow-burned-in once the pixels are known to be clean)"
                )
            log.warning("instance declares burned-in annotation; allowed by setting, pixels kept")
        patient_id = str(ds.get("PatientID", "") or "")
        pseudonym = pseudonymise(self.key, patient_id)
        days = self.date_shift_days(patient_id)

        self._clean(ds, days)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(meta.MediaStorageSOPInstanceUID)

        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientBirthDate = ""
        age = str(ds.get("PatientAge", "") or "")
        if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) > 89:
            ds.PatientAge = "090Y"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.method
        self._set_method_codes(ds)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.shift_dates else "REMOVED"
        return ds

    def uid(self, uid: str) -> str:
        """The keyed replacement of ``uid``; valid DICOM-defined UIDs are returned unchanged.

        An invalid value (:func:`is_valid_uid`) is always replaced, whatever its prefix, with a
        warning the first time; the value itself is never logged.
        """
        uid = str(uid).strip()
        if not uid:
            return uid
        valid = is_valid_uid(uid)
        if valid and uid.startswith(_DICOM_ROOT):
            return uid
        if not valid and not self._warned_invalid_uid:
            self._warned_invalid_uid = True
            log.warning(
                "an invalid UID (not digits and dots as DICOM PS3.5 9.1 defines, or over 64 "
                "characters) was replaced by a pseudonymous UID; later ones are replaced silently"
            )
        return remap_uid(self.key, uid)

    def date_shift_days(self, patient_id: str) -> int:
        """Days this patient's dates move back (1-3650), the same for every upload."""
        digest = hmac.new(self.key, b"dates:" + patient_id.strip().encode("utf-8"), hashlib.sha256)
        return 1 + int.from_bytes(digest.digest()[:8], "big") % _MAX_SHIFT_DAYS

    def _clean(self, ds: Dataset, days: int) -> None:
        """Apply the attribute rules to ``ds`` and, recursively, to every sequence item."""
        for tag in list(ds.keys()):  # a list: elements are deleted while walking
            number = int(tag)
            group = number >> 16
            if (
                group & 1  # private
                or 0x5000 <= group <= 0x50FF  # curves
                or 0x6000 <= group <= 0x60FF  # overlays (may carry burned-in text)
                or number in _REMOVE_TAGS
            ):
                del ds[tag]
                continue
            vr = _vr(ds, tag)
            if vr not in _KNOWN_VRS:  # a damaged or made-up VR: read it as the dictionary's
                retyped = _retype(ds, tag)
                if retyped is None:
                    continue
                vr = retyped
            if number in _EMPTY_TAGS:
                ds[tag].value = ""
            elif vr not in _RULE_VRS:
                continue
            elif vr == "SQ":
                for item in ds[tag].value or ():
                    self._clean(item, days)
            elif vr == "PN":
                if number != _PATIENT_NAME:
                    ds[tag].value = ""
            elif vr == "UI":
                elem = ds[tag]
                elem.value = _map_values(elem.value, self.uid)
            elif vr in ("DA", "DT"):
                elem = ds[tag]
                if self.shift_dates and number != _PATIENT_BIRTH_DATE:
                    elem.value = _map_values(elem.value, partial(_shift, vr=vr, days=days))
                else:
                    elem.value = ""
            elif vr == "TM" and not self.shift_dates:
                ds[tag].value = ""

    def _set_method_codes(self, ds: Dataset) -> None:
        """Set DeidentificationMethodCodeSequence, as raw bytes encoded once per encoding.

        The sequence is the same for every instance; writing a fresh one through pydicom took
        about 1.5 ms per slice when the original is stored. The raw element reads back as the
        same sequence and is written byte for byte as pydicom writes the decoded one.
        """
        encoding = ds.original_encoding
        if encoding is None or encoding[0] is None or not encoding[1]:
            ds.DeidentificationMethodCodeSequence = Sequence(self._method_codes())
            return
        implicit = bool(encoding[0])
        value = self._encoded_codes.get(implicit)
        if value is None:
            buffer = DicomBytesIO()
            buffer.is_little_endian = True
            buffer.is_implicit_VR = implicit
            write_data_element(buffer, DataElement(_METHOD_CODES, "SQ", self._method_codes()))
            # after the tag, (VR, 2 reserved bytes,) and the 4-byte length
            value = buffer.getvalue()[8 if implicit else 12 :]
            self._encoded_codes[implicit] = value
        ds[_METHOD_CODES] = RawDataElement(
            BaseTag(_METHOD_CODES), "SQ", len(value), value, 0, implicit, True, True, False
        )

    def _method_codes(self) -> list[Dataset]:
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if self.shift_dates:
            codes.append(
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
            )
        codes.append(("113108", "Retain Patient Characteristics Option"))
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        return items


_METHOD_CODES = 0x00120064  # DeidentificationMethodCodeSequence


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of ``tag`` without decoding the element (the dictionary's for implicit/UN VRs)."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr in (None, "UN"):
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return "UN"
    return str(vr)


#: the value representations of the standard (PS3.5 6.2); anything else is damage
_KNOWN_VRS = frozenset(str(vr) for vr in VR)


def _retype(ds: Dataset, tag: BaseTag) -> str | None:
    """Give element ``tag``, whose VR is none of the standard's, the VR the data dictionary
    gives its tag, and return that VR; remove the element (``None``) when its tag has none.

    Otherwise its value would escape every rule: a StudyDate whose VR was damaged to ``DP``
    would keep the real date, unread, in the de-identified instance.
    """
    raw = ds.get_item(tag)
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        vr = ""
    if vr not in _KNOWN_VRS or not isinstance(raw, RawDataElement):
        del ds[tag]
        return None
    ds[tag] = convert_raw_data_element(raw._replace(VR=vr), ds=ds)
    return vr


def _map_values(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to a single value or to each value of a multi-valued element."""
    if value is None or value == "":
        return value
    if isinstance(value, str | bytes):
        return fn(value.decode("ascii", "replace") if isinstance(value, bytes) else value)
    return [fn(str(v)) for v in value]


def _shift(value: str, vr: str, days: int) -> str:
    """Move a DA (``YYYYMMDD``) or DT (``YYYYMMDD[HHMMSS...]``) value back by ``days``.

    Values that do not parse are emptied rather than kept: a malformed date may still identify.
    """
    value = value.strip()
    try:
        day = datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    shifted: date = day - timedelta(days=days)
    return shifted.strftime("%Y%m%d") + (value[8:] if vr == "DT" else "")
