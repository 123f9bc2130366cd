"""Write real DICOM label objects for a synthetic series: SEG (highdicom) and RTSTRUCT (pydicom).

Used by the label-source and DICOMweb tests. Both take the series' files in z order (as
:class:`radseg.imaging.synthetic.SyntheticStudy` lists them) and a uint8 ``(z, y, x)`` label volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from radseg.contracts import ClassInfo

__all__ = ["mask_contours", "write_rtstruct", "write_seg"]

#: SNOMED CT codes of the synthetic phantom's organs (SegmentedPropertyType).
_ORGAN_CODES = {
    "liver": ("10200004", "Liver"),
    "lung_left": ("44029006", "Left lung"),
    "lung_right": ("3341006", "Right lung"),
    "spine": ("421060004", "Spine"),
    "kidneys": ("64033007", "Kidney"),
}


def write_seg(
    files: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[ClassInfo],
    out: Path,
    *,
    segmentation_type: str = "BINARY",
    slices: slice | None = None,
    series_number: int = 300,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
) -> Path:
    """Write a SEG of ``labels`` over the source images ``files`` (z order); returns ``out``.

    :param slices: make the SEG from these source slices only (a partial SEG).
    :param segmentation_type: BINARY, FRACTIONAL or LABELMAP.
    """
    chosen = slice(None) if slices is None else slices
    sources = [pydicom.dcmread(str(f)) for f in list(files)[chosen]]
    pixels = labels[chosen]
    present = sorted({int(v) for v in np.unique(pixels)} - {0})
    descriptions = []
    for c in classes:
        if c.id not in present:
            continue
        code, meaning = _ORGAN_CODES.get(c.name, ("85756007", "Tissue"))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=c.id,
                segment_label=c.name,
                segmented_property_category=codes.SCT.Organ,
                segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                display_color=hd.color.CIELabColor.from_rgb(*c.color),
            )
        )
    # highdicom wants segment numbers 1..n; the phantom's ids are, and tests keep it that way.
    if segmentation_type == "FRACTIONAL":
        stack = np.stack([(pixels == d.SegmentNumber) for d in descriptions], axis=-1)
        array: np.ndarray = stack.astype(np.float32) * 0.8  # probabilities above one half
    else:
        array = pixels
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=array,
        segmentation_type=segmentation_type,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="radseg tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
        transfer_syntax_uid=transfer_syntax_uid,
    )
    seg.save_as(out)
    return Path(out)


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (continuous ``(x, y)`` pixel indices) whose even-odd fill is ``mask``.

    cv2 traces boundary *pixel centres*; on a 4x upsampled mask those centres lie 1/8 pixel inside
    the true edges, so mapped back every original pixel centre is clearly in or out. ``RETR_CCOMP``
    returns holes as contours of their own, which the even-odd rule turns back into holes.
    """
    factor = 4
    big: np.ndarray = np.kron(mask.astype(np.uint8), np.ones((factor, factor), dtype=np.uint8))
    found, _ = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in found:
        points = contour[:, 0, :].astype(float)
        out.append((points + 0.5) / factor - 0.5)
    return out


def write_rtstruct(
    files: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[ClassInfo],
    out: Path,
    *,
    polygons: dict[int, dict[int, list[np.ndarray]]] | None = None,
) -> Path:
    """Write an RTSTRUCT of ``labels`` (contours from :func:`mask_contours`) over ``files``.

    :param polygons: instead of tracing ``labels``: ``{class id: {z: [(n, 2) (x, y) index
        polygons]}}``.
    Contour points are in patient coordinates, computed from each slice's
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing.
    """
    headers = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    first = headers[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.481.3")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "FrameOfReferenceUID",
    ):
        if keyword in first:
            setattr(ds, keyword, first[keyword].value)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 400
    ds.InstanceNumber = 1
    ds.Manufacturer = "radseg tests"
    ds.StructureSetLabel = "synthetic"
    ds.StructureSetDate = "20240101"
    ds.StructureSetTime = "120000"

    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([_image_ref(h) for h in headers])
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    rois, contours, observations = [], [], []
    for c in classes:
        per_slice = (
            polygons.get(c.id, {})
            if polygons is not None
            else {
                z: mask_contours(labels[z] == c.id)
                for z in range(labels.shape[0])
                if np.any(labels[z] == c.id)
            }
        )
        if not per_slice:
            continue
        roi = Dataset()
        roi.ROINumber = c.id
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = c.name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        item = Dataset()
        item.ReferencedROINumber = c.id
        item.ROIDisplayColor = list(c.color)
        item.ContourSequence = DicomSequence(
            [_contour(headers[z], poly) for z, polys in sorted(per_slice.items()) for poly in polys]
        )
        contours.append(item)
        obs = Dataset()
        obs.ObservationNumber = c.id
        obs.ReferencedROINumber = c.id
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.save_as(out, enforce_file_format=True)
    return Path(out)


def _image_ref(header: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = header.SOPClassUID
    ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return ref


def _contour(header: Dataset, polygon: np.ndarray) -> Dataset:
    """A ContourSequence item: ``polygon`` (x, y) pixel indices → patient coordinates."""
    position = np.asarray([float(v) for v in header.ImagePositionPatient])
    iop = np.asarray([float(v) for v in header.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    xy = np.asarray(polygon, dtype=float)
    points = position + xy[:, :1] * column_spacing * iop[:3] + xy[:, 1:2] * row_spacing * iop[3:]
    item = Dataset()
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.6f}" for v in points.ravel()]
    item.ContourImageSequence = DicomSequence([_image_ref(header)])
    return item
