"""The RT Structure Set dataset: its modules, one ROI per class, contours per slice.

Patient and General Study attributes are the source's (de-identified) values; the Frame of
Reference is the source's; every class is one ROI whose contours (:mod:`.contours`) are placed
in patient space through the request's geometry and reference the source instance (and frame)
of their slice.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

import radseg
from radseg.contracts import ClassInfo, ExportRequest
from radseg.imaging.labels import index_to_patient

from .contours import mask_to_contours
from .sources import SourceHeaders

__all__ = ["RTSTRUCT_SOP_CLASS_UID", "lo", "structure_set"]

RTSTRUCT_SOP_CLASS_UID = UID("1.2.840.10008.5.1.4.1.1.481.3")
#: Patient and General Study attributes copied from the (de-identified) source instances.
_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
#: Type 2 attributes of those modules: present (maybe empty) even when the source lacks them.
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def structure_set(request: ExportRequest, labels: np.ndarray, sources: SourceHeaders) -> Dataset:
    """The RT Structure Set of ``labels`` on the source series, one ROI per class."""
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    sop_instance_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_instance_uid)

    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: class names may be in any language
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time

    _copy_patient_and_study(ds, sources.first)

    # RT Series, General Equipment
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = _series_number(sources.first)
    ds.SeriesDate = date
    ds.SeriesTime = time
    # a reviewed label version names itself (an adjudicated one: "adjudicated label version 4")
    ds.SeriesDescription = lo(f"radseg RTSTRUCT: {request.label_version or request.algorithm.name}")
    ds.OperatorsName = ""
    ds.Manufacturer = "radseg"
    ds.SoftwareVersions = radseg.__version__

    # Frame of Reference: the source's (recent editions of the IOD include the module).
    ds.FrameOfReferenceUID = sources.frame_of_reference_uid
    ds.PositionReferenceIndicator = sources.first.get("PositionReferenceIndicator", "")

    # Structure Set
    ds.StructureSetLabel = f"radseg {request.prediction_id}"[:16]
    ds.StructureSetName = lo(request.label_version or request.algorithm.name)
    if request.correction:
        ds.StructureSetDescription = request.correction[:1024]  # ST
    ds.StructureSetDate = date
    ds.StructureSetTime = time
    ds.InstanceNumber = 1
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_referenced_frame_of_reference(sources)])
    _add_rois(ds, request, labels, sources)
    return ds


def _file_meta(sop_instance_uid: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _copy_patient_and_study(ds: Dataset, source: Dataset) -> None:
    """Patient, General Study: the source's (de-identified) values."""
    for keyword in _COPIED:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
        elif keyword in _TYPE_2:
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = str(source.StudyInstanceUID)


def _add_rois(
    ds: Dataset, request: ExportRequest, labels: np.ndarray, sources: SourceHeaders
) -> None:
    """One ROI per class: Structure Set ROI, ROI Contour and RT ROI Observations items."""
    frame_uid = sources.frame_of_reference_uid
    description = lo(
        f"{request.algorithm.name} {request.algorithm.version}"
        + (f", corrected: {request.correction}" if request.correction else "")
    )
    rois, contours, observations = [], [], []
    for info in request.classes:
        roi = Dataset()
        roi.ROINumber = info.id
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = lo(info.name)
        roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC" if request.correction else "AUTOMATIC"
        roi.ROIGenerationDescription = description
        rois.append(roi)
        contours.append(_roi_contour(request, labels, sources, info))
        observations.append(_observation(info))
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)


def _referenced_frame_of_reference(sources: SourceHeaders) -> Dataset:
    images = []
    for sop_instance_uid, sop_class_uid in sources.sop_classes.items():
        image = Dataset()
        image.ReferencedSOPClassUID = sop_class_uid
        image.ReferencedSOPInstanceUID = sop_instance_uid
        images.append(image)
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = str(sources.first.SeriesInstanceUID)
    referenced_series.ContourImageSequence = DicomSequence(images)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    study.ReferencedSOPInstanceUID = str(sources.first.StudyInstanceUID)
    study.RTReferencedSeriesSequence = DicomSequence([referenced_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = sources.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def _roi_contour(
    request: ExportRequest, labels: np.ndarray, sources: SourceHeaders, info: ClassInfo
) -> Dataset:
    item = Dataset()
    item.ReferencedROINumber = info.id
    item.ROIDisplayColor = [int(v) for v in info.color]
    items: list[Dataset] = []
    for k in np.flatnonzero((labels == info.id).any(axis=(1, 2))):
        ref = request.series.slices[int(k)]
        image = Dataset()
        image.ReferencedSOPClassUID = sources.sop_classes[ref.sop_instance_uid]
        image.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if ref.frame_number is not None:
            image.ReferencedFrameNumber = ref.frame_number
        for polygon in mask_to_contours(labels[k] == info.id):
            ijk = np.column_stack([polygon, np.full(len(polygon), float(k))])
            contour = Dataset()
            contour.ContourImageSequence = DicomSequence([image])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(polygon)
            contour.ContourNumber = len(items) + 1
            contour.ContourData = _decimal_strings(index_to_patient(ijk, request.geometry))
            items.append(contour)
    if items:  # type 3: an ROI without voxels has no ContourSequence at all
        item.ContourSequence = DicomSequence(items)
    return item


def _observation(info: ClassInfo) -> Dataset:
    item = Dataset()
    item.ObservationNumber = info.id
    item.ReferencedROINumber = info.id
    if info.snomed_code:
        code = Dataset()
        code.CodeValue = info.snomed_code
        code.CodingSchemeDesignator = "SCT"
        code.CodeMeaning = lo(info.name)
        item.RTROIIdentificationCodeSequence = DicomSequence([code])
    item.RTROIInterpretedType = "ORGAN"
    item.ROIInterpreter = ""
    return item


def _decimal_strings(points: np.ndarray) -> list[str]:
    """DS values (at most 16 characters) to a micrometre: far below the quarter-pixel margin."""
    return [f"{v:.6f}".rstrip("0").rstrip(".") for v in points.ravel()]


def _series_number(source: Dataset) -> int:
    """The source's series number + 1000, so the structure set sorts next to its images."""
    try:
        return int(source.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        return 1000


def lo(text: str) -> str:
    """A value that fits a LO attribute (64 characters)."""
    return text[:64]
