"""Which DICOM objects are images: only image storage SOP classes become image series.

A folder exported from a PACS holds more than images: RT Dose grids (whose frames are dose
planes, scaled by DoseGridScaling, placed by GridFrameOffsetVector), RT Plans, structured
reports, presentation states, key object selections, raw data, waveforms. Read as images they
make wrong volumes: an RT Dose's frames all share one ImagePositionPatient, so all but one were
dropped as duplicate slices and the dose was stored in stored units as if they were HU. The
reader therefore decides by SOPClassUID (or the file meta's MediaStorageSOPClassUID when the
dataset lacks one), before looking at the pixels, against the whitelist below, and reports
everything else as "not an image series (RT Dose)".

The whitelist holds the image storage classes of PS3.4 Annex B whose pixels are greyscale
samples a volume can be made of (cross-sectional CT/MR/PET/NM, their enhanced and legacy
converted forms, projection radiography, ultrasound, secondary capture). Objects of these
classes still have to pass the geometry checks: a projection image without
ImagePositionPatient is reported as such.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

__all__ = ["IMAGE_STORAGE_CLASSES", "not_an_image_reason"]

#: Image storage SOP classes (PS3.4 B.5) the reader turns into image series.
IMAGE_STORAGE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
        "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
        "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
        "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image Storage
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image Storage
        "1.2.840.10008.5.1.4.1.1.13.1.1",  # X-Ray 3D Angiographic Image Storage
        "1.2.840.10008.5.1.4.1.1.13.1.2",  # X-Ray 3D Craniofacial Image Storage
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    }
)


def not_an_image_reason(ds: Dataset) -> str:
    """Why ``ds`` (read, not yet de-identified) is not an image series; ``""`` when it is one.

    The class is named by pydicom's name for it without " Storage" ("RT Dose"); a UID pydicom
    does not know (a vendor's private class) is quoted when it is a valid UID (a class UID is
    not patient data), and a damaged one is not quoted back.
    """
    uid = str(ds.get("SOPClassUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    if not uid and meta is not None:
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    if not uid:
        return (
            "no SOPClassUID in the dataset or its file meta: cannot tell whether it is an "
            "image; skipped"
        )
    if uid in IMAGE_STORAGE_CLASSES:
        return ""
    return f"not an image series ({_class_name(UID(uid))}); kept out of volumes"


def _class_name(uid: UID) -> str:
    if not uid.is_valid or len(uid) > 64:
        return "a damaged SOPClassUID"
    if uid.name == str(uid):
        return f"SOP class {uid}, not one radseg knows"
    name = uid.name
    return name[: -len(" Storage")] if name.endswith(" Storage") else name
