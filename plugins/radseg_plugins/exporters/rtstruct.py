"""The ``rtstruct`` exporter: a predicted label volume as a DICOM RT Structure Set.

One file (``NAME.dcm``, SOP class 1.2.840.10008.5.1.4.1.1.481.3) in a new RTSTRUCT series of the
source study, which planning systems and viewers load over the CT it was predicted on:

- Patient and General Study attributes are copied from the stored de-identified source instances
  (``request.series.instances``), so the structure set files under the same pseudonymised
  patient and study. A series without DICOM originals (a NIfTI pair) cannot be referenced and is
  refused; export it as ``nifti`` instead.
- ``ReferencedFrameOfReferenceSequence`` names the source's FrameOfReferenceUID, study and series,
  and lists every source instance in its ``ContourImageSequence``; the Frame of Reference module
  (which ``dciodvfy -new`` requires of current editions of the IOD) repeats the source's frame.
- Every class of ``request.classes`` is one ROI (ROINumber = class id, ROIName = class name,
  ROIDisplayColor = class colour, ROIGenerationAlgorithm ``AUTOMATIC``, RT ROI interpreted type
  ``ORGAN``; a class with a SNOMED CT code carries it as RTROIIdentificationCode). A class with no
  voxels keeps its ROI, with no ContourSequence (a type 3 attribute): the receiver still sees
  that the model was asked for that structure and found none.

Contours (``CLOSED_PLANAR``, LPS mm) are drawn per class and slice so that the even-odd rule
reproduces the mask exactly — the rule DICOM RT readers use for several contours of one ROI on one
slice, and the one :func:`radseg.imaging.label_sources.rtstruct.fill_polygons` uses: a pixel is
inside when its centre lies inside an odd number of contours. Each boundary of the mask, outer or
hole, is traced with OpenCV on the slice upsampled 2× (:func:`mask_to_contours`); the traced
sub-pixel centres lie a quarter pixel inside the pixel edges, so no pixel centre is ever on a
contour and every pixel comes back as it was — a ring is an outer contour plus a hole contour, an
island in the hole a third contour. Points map to patient space through the request's geometry
(``origin + direction @ (spacing * ijk)``), so oblique series are exact too. Each contour
references the source instance (and frame, for multi-frame sources) of its slice.

:meth:`RtstructExporter.verify` rasterises the written file twice — with radseg's reader
(:func:`~radseg.imaging.label_sources.rtstruct.read_rtstruct`, slices found by position) and with
an independent even-odd fill (matplotlib point-in-polygon, slices found by the referenced SOP
instance) — and compares each with the request's labels by per-class Dice.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

import radseg
from radseg.contracts import ClassInfo, ExportCheck, ExportRequest
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.labels import index_to_patient, label_array
from radseg.imaging.source_headers import source_headers
from radseg.storage import atomic_path

__all__ = [
    "RTSTRUCT_SOP_CLASS_UID",
    "RtstructExporter",
    "dice",
    "index_to_patient",
    "mask_to_contours",
    "radseg_register_exporters",
]

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS_UID = UID("1.2.840.10008.5.1.4.1.1.481.3")
SUFFIX = ".dcm"
#: Dice every class with voxels must reach when the written contours are filled again.
MIN_DICE = 0.98
_UPSAMPLE = 2
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


def mask_to_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Every boundary of ``mask`` (bool ``(rows, cols)``) as a closed polygon of pixel indices.

    Returns arrays ``(n, 2)`` of continuous ``(x, y)`` indices (integers are pixel centres).
    Outer boundaries and hole boundaries alike are returned, unordered: filled with the even-odd
    rule they give ``mask`` back exactly, because the points lie a quarter pixel inside the
    pixel edges (the sub-pixel centres of the 2× upsampled mask) and so no pixel centre is ever
    on an edge.
    """
    import cv2  # imported here: only contour output needs OpenCV

    # One pixel of padding keeps OpenCV's tracing off the image border.
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    big = np.kron(padded, np.ones((_UPSAMPLE, _UPSAMPLE), dtype=np.uint8))
    # RETR_LIST: every border (outer and hole) with no hierarchy — even-odd needs no nesting.
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour[:, 0, :].astype(np.float64)
        # sub-pixel centre → pixel-edge coordinate ((c + 0.5) / 2) → unpadded pixel index.
        polygons.append((points + 0.5) / _UPSAMPLE - 1.0 - 0.5)
    return polygons


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


class RtstructExporter:
    """Writes one RT Structure Set: one ROI per class, even-odd exact CLOSED_PLANAR contours."""

    name: ClassVar[str] = "rtstruct"
    suffix: ClassVar[str] = SUFFIX
    dicom: ClassVar[bool] = True

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write ``request`` as an RTSTRUCT to ``out`` (``.dcm`` added if missing); see the module.

        :raises InputError: the series has no DICOM originals, its instances disagree with the
            request, or the labels do not fit the geometry.
        """
        labels = _checked_labels(request)
        sources = _SourceHeaders.read(request)
        ds = _structure_set(request, labels, sources)
        path = Path(out)
        if path.suffix.lower() != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        log.info("wrote RTSTRUCT with %d ROI(s)", len(request.classes))
        return path

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Fill the written contours again (two readers) and check references; see the module."""
        try:
            ds = pydicom.dcmread(str(written))
        except Exception as exc:  # any unreadable file is a failed check, not a crash
            return [
                ExportCheck("contours re-rasterised", False, f"cannot read {written.name}: {exc}")
            ]
        return [_contour_check(request, written, ds), _reference_check(request, ds)]


# --------------------------------------------------------------------------- sources


class _SourceHeaders:
    """What the structure set copies from, and references in, the source instances."""

    def __init__(self, first: Dataset, sop_classes: dict[str, str]) -> None:
        self.first = first
        #: SOPInstanceUID → SOPClassUID of every source instance, in slice order
        self.sop_classes = sop_classes

    @classmethod
    def read(cls, request: ExportRequest) -> _SourceHeaders:
        """:raises InputError: see :func:`~radseg.imaging.source_headers.source_headers`; also
        when the instances do not share exactly one frame of reference."""
        headers = source_headers(request)
        series = request.series
        frames = {str(h.get("FrameOfReferenceUID", "")) for h in headers.values()}
        if len(frames) != 1 or "" in frames:
            raise InputError(
                f"series {series.series_instance_uid}: its instances have "
                f"{len(frames - {''})} FrameOfReferenceUID(s) (need exactly one); contours "
                "cannot be placed in patient space — export it as nifti instead"
            )
        sop_classes = {uid: str(h.SOPClassUID) for uid, h in headers.items()}
        return cls(next(iter(headers.values())), sop_classes)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.first.FrameOfReferenceUID)


def _checked_labels(request: ExportRequest) -> np.ndarray:
    labels = label_array(request.labels, request.geometry)
    if len(request.series.slices) != labels.shape[0]:
        raise InputError(
            f"the series lists {len(request.series.slices)} slices but the labels have "
            f"{labels.shape[0]}; export the prediction of this series"
        )
    ids = [c.id for c in request.classes]
    if any(not 1 <= i <= 255 for i in ids) or len(set(ids)) != len(ids):
        raise InputError(
            f"class ids must be distinct and 1-255 (ROI numbers), got {ids}; fix the class map"
        )
    unknown = sorted(set(np.unique(labels).tolist()) - {0} - set(ids))
    if unknown:
        log.warning("labels contain class ids %s with no class; they are not exported", unknown)
    return labels


# --------------------------------------------------------------------------- writing


def _structure_set(request: ExportRequest, labels: np.ndarray, sources: _SourceHeaders) -> Dataset:
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    sop_instance_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta

    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: class names may be in any language
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time

    # Patient, General Study: the source's (de-identified) values.
    for keyword in _COPIED:
        if keyword in sources.first:
            setattr(ds, keyword, sources.first[keyword].value)
        elif keyword in _TYPE_2:
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = str(sources.first.StudyInstanceUID)

    # RT Series, General Equipment
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = _series_number(sources.first)
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.SeriesDescription = _lo(f"radseg RTSTRUCT: {request.algorithm.name}")
    ds.OperatorsName = ""
    ds.Manufacturer = "radseg"
    ds.SoftwareVersions = radseg.__version__

    # Frame of Reference: the source's (recent editions of the IOD include the module).
    ds.FrameOfReferenceUID = sources.frame_of_reference_uid
    ds.PositionReferenceIndicator = sources.first.get("PositionReferenceIndicator", "")

    # Structure Set
    ds.StructureSetLabel = f"radseg {request.prediction_id}"[:16]
    ds.StructureSetName = _lo(request.algorithm.name)
    ds.StructureSetDate = date
    ds.StructureSetTime = time
    ds.InstanceNumber = 1
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_referenced_frame_of_reference(sources)])
    frame_uid = sources.frame_of_reference_uid
    description = _lo(
        f"{request.algorithm.name} {request.algorithm.version}"
        + (f", corrected: {request.correction}" if request.correction else "")
    )
    rois, contours, observations = [], [], []
    for info in request.classes:
        roi = Dataset()
        roi.ROINumber = info.id
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = _lo(info.name)
        roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC" if request.correction else "AUTOMATIC"
        roi.ROIGenerationDescription = description
        rois.append(roi)
        contours.append(_roi_contour(request, labels, sources, info))
        observations.append(_observation(info))
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return ds


def _referenced_frame_of_reference(sources: _SourceHeaders) -> Dataset:
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
    request: ExportRequest, labels: np.ndarray, sources: _SourceHeaders, info: ClassInfo
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
        code.CodeMeaning = _lo(info.name)
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


def _lo(text: str) -> str:
    """A value that fits a LO attribute (64 characters)."""
    return text[:64]


# --------------------------------------------------------------------------- verification


def _contour_check(request: ExportRequest, written: Path, ds: Dataset) -> ExportCheck:
    from radseg.imaging.label_sources.rtstruct import read_rtstruct

    try:
        ours = read_rtstruct(ds, request.geometry, name=written.name).labels
    except InputError as exc:
        return ExportCheck("contours re-rasterised", False, f"radseg's reader refused it: {exc}")
    try:
        independent = _fill_by_reference(ds, request)
    except (InputError, ValueError, AttributeError, IndexError) as exc:
        return ExportCheck("contours re-rasterised", False, f"the independent reader failed: {exc}")
    truth = np.asarray(request.labels)
    parts, failing = [], []
    for info in request.classes:
        expected = truth == info.id
        scores = [dice(filled == info.id, expected) for filled in (ours, independent)]
        voxels = int(np.count_nonzero(expected))
        if voxels or any(s < 1.0 for s in scores):
            parts.append(f"{info.name} {scores[0]:.4f}/{scores[1]:.4f} ({voxels} voxels)")
            if min(scores) < MIN_DICE:
                failing.append(info.name)
        else:
            parts.append(f"{info.name} empty")
    known = np.isin(truth, [c.id for c in request.classes])
    # Voxels of ids without a class are not exported, so they count as background here.
    truth = np.where(known, truth, 0)
    differ = [int(np.count_nonzero(filled != truth)) for filled in (ours, independent)]
    detail = (
        f"Dice radseg reader/even-odd matplotlib per class: {'; '.join(parts) or 'no classes'}; "
        f"{differ[0]}/{differ[1]} voxel(s) differ"
    )
    if failing:
        detail = f"Dice below {MIN_DICE} for {', '.join(failing)}. " + detail
    return ExportCheck("contours re-rasterised", not failing, detail)


def _fill_by_reference(ds: Dataset, request: ExportRequest) -> np.ndarray:
    """Fill every CLOSED_PLANAR contour onto the slice its ContourImageSequence names.

    Independent of radseg's reader: slices are found by the referenced SOP instance (and frame),
    points are projected on that slice's plane (its ImagePositionPatient and the row/column
    axes), and pixels are tested with matplotlib's point-in-polygon, combined even-odd.
    """
    from matplotlib.path import Path as MplPath

    geometry = request.geometry
    nx, ny, nz = geometry.size
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(geometry.spacing, dtype=float)
    slice_of = {(s.sop_instance_uid, s.frame_number): s for s in request.series.slices}
    ids = {c.id for c in request.classes}
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in ids:
            raise InputError(f"ROI number {number} is not a class id")
        inside: dict[int, np.ndarray] = {}
        for contour in roi.get("ContourSequence", []):
            if contour.ContourGeometricType != "CLOSED_PLANAR":
                continue
            image = contour.ContourImageSequence[0]
            frame = image.get("ReferencedFrameNumber")
            ref = slice_of.get((str(image.ReferencedSOPInstanceUID), int(frame) if frame else None))
            if ref is None:
                raise InputError(f"a contour of ROI {number} references no slice of the series")
            k = ref.slice_index
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            offset = points - np.asarray(ref.image_position_patient)
            # Row/column axes are orthonormal, so a dot product gives the in-plane mm.
            x = offset @ direction[:, 0] / spacing[0]
            y = offset @ direction[:, 1] / spacing[1]
            off_plane = np.abs(offset @ direction[:, 2]).max()
            if off_plane > 0.05 * spacing[2]:
                raise InputError(
                    f"a contour of ROI {number} lies {off_plane:.3f} mm off the plane of the "
                    "slice it references"
                )
            # Only pixel centres in the contour's bounding box can be inside it.
            x0, x1 = max(int(np.ceil(x.min())), 0), min(int(np.floor(x.max())), nx - 1)
            y0, y1 = max(int(np.ceil(y.min())), 0), min(int(np.floor(y.max())), ny - 1)
            if x0 > x1 or y0 > y1:
                continue
            yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
            centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
            hit = MplPath(np.column_stack([x, y])).contains_points(centres).reshape(xx.shape)
            mask = inside.setdefault(k, np.zeros((ny, nx), dtype=bool))
            mask[y0 : y1 + 1, x0 : x1 + 1] ^= hit
        for k, mask in inside.items():
            labels[k][mask] = number
    return labels


def _reference_check(request: ExportRequest, ds: Dataset) -> ExportCheck:
    problems: list[str] = []
    try:
        sources = _SourceHeaders.read(request)
    except InputError as exc:
        return ExportCheck("references", False, f"the source series cannot be read: {exc}")
    frame_uid = sources.frame_of_reference_uid
    source_uids = set(sources.sop_classes)
    frames = list(ds.get("ReferencedFrameOfReferenceSequence", []))
    if [str(f.FrameOfReferenceUID) for f in frames] != [frame_uid]:
        problems.append("ReferencedFrameOfReferenceSequence does not name the source's frame")
    rois = list(ds.get("StructureSetROISequence", []))
    if any(str(r.ReferencedFrameOfReferenceUID) != frame_uid for r in rois):
        problems.append("an ROI names another FrameOfReferenceUID than the source's")
    series_uids, listed = set(), set()
    for frame in frames:
        for study in frame.get("RTReferencedStudySequence", []):
            if str(study.ReferencedSOPInstanceUID) != str(sources.first.StudyInstanceUID):
                problems.append("the referenced study is not the source's")
            for series in study.get("RTReferencedSeriesSequence", []):
                series_uids.add(str(series.SeriesInstanceUID))
                listed |= {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence}
    if series_uids != {str(sources.first.SeriesInstanceUID)}:
        problems.append(f"{len(series_uids)} referenced series, not the source series alone")
    if listed != source_uids:
        problems.append(
            f"ContourImageSequence lists {len(listed)} instance(s), the source has "
            f"{len(source_uids)} ({len(listed - source_uids)} foreign)"
        )
    per_contour = [
        str(image.ReferencedSOPInstanceUID)
        for roi in ds.get("ROIContourSequence", [])
        for contour in roi.get("ContourSequence", [])
        for image in contour.get("ContourImageSequence", [])
    ]
    foreign = sum(uid not in source_uids for uid in per_contour)
    if foreign:
        problems.append(f"{foreign} contour(s) reference an instance outside the source series")
    if str(ds.get("StudyInstanceUID", "")) != str(sources.first.StudyInstanceUID):
        problems.append("StudyInstanceUID is not the source's")
    names = [str(r.ROIName) for r in sorted(rois, key=lambda r: int(r.ROINumber))]
    expected = [_lo(c.name) for c in sorted(request.classes, key=lambda c: c.id)]
    if names != expected:
        problems.append(f"ROI names {names} differ from the class names {expected}")
    detail = (
        f"frame of reference, study and series are the source's; {len(listed)} listed and "
        f"{len(per_contour)} per-contour instance reference(s) all in the source's "
        f"{len(source_uids)}; {len(rois)} ROI name(s) equal the class names"
    )
    return ExportCheck("references", not problems, "; ".join(problems) if problems else detail)


@hookimpl
def radseg_register_exporters() -> list[type[RtstructExporter]]:
    return [RtstructExporter]
