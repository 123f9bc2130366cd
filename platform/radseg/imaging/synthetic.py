"""Synthetic CT studies written as real DICOM files, with a matching label volume.

:func:`write_synthetic_ct` draws a simple abdominal/thoracic phantom in Hounsfield units — air
outside an elliptical body of fat and soft tissue, two lungs, liver, kidneys, heart, aorta and a
vertebral column whose spinal canal is a hole in the spine label — and writes it as one CT Image
Storage series (one file per slice, Explicit VR Little Endian, uint16 or int16 with
RescaleSlope/Intercept) plus ``labels.nii.gz`` with exactly the DICOM geometry and ``labels.json``
with the class map.

Conventions: arrays are ``(z, y, x)``; slice ``z = 0`` is the most inferior one and lies at the
lowest position along the slice normal (``row x column`` of ImageOrientationPatient). Image
columns (``x``) run towards the patient's left and rows (``y``) towards posterior (LPS), so the
patient's right lung is on the image's left. Files are named at random (not in slice order) and
InstanceNumber counts from the head down, so a reader that sorts by either gets the volume wrong.
The headers carry fake identifiers (name, ID, birth date, physicians, institution, a private tag)
for de-identification tests. The same ``seed`` gives the same study, UIDs included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from radseg.contracts import ClassInfo, Geometry

__all__ = ["SYNTHETIC_CLASSES", "SyntheticStudy", "write_synthetic_ct"]

#: Label ids of the phantom's organs (0 is background).
SYNTHETIC_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "liver", (221, 130, 101)),
    ClassInfo(2, "lung_left", (128, 174, 128)),
    ClassInfo(3, "lung_right", (111, 184, 210)),
    ClassInfo(4, "spine", (241, 214, 145)),
    ClassInfo(5, "kidneys", (185, 102, 83)),
)

_HU_AIR, _HU_FAT, _HU_SOFT, _HU_LUNG = -1000.0, -100.0, 40.0, -850.0
_HU_LIVER, _HU_KIDNEY, _HU_BONE, _HU_CSF = 60.0, 30.0, 700.0, 15.0
_HU_BLOOD, _HU_DISC = 45.0, 80.0


@dataclass
class SyntheticStudy:
    """What :func:`write_synthetic_ct` wrote, and the ground truth it was drawn from.

    ``hu`` (float32) and ``labels`` (uint8) are ``(z, y, x)`` in slice order; ``files`` and
    ``sop_instance_uids`` are in the same z order. ``geometry`` is the series' geometry in
    SimpleITK's convention (see :class:`radseg.contracts.Geometry`).
    """

    dicom_dir: Path
    label_path: Path
    class_map_path: Path
    classes: list[ClassInfo]
    patient_id: str
    patient_name: str
    patient_birth_date: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]
    files: list[Path]
    geometry: Geometry
    hu: np.ndarray
    labels: np.ndarray


def write_synthetic_ct(
    out_dir: Path,
    *,
    seed: int = 0,
    patient_name: str = "Doe^Jane",
    patient_id: str | None = None,
    patient_birth_date: str = "19600214",
    shape: tuple[int, int, int] = (40, 128, 128),
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
    image_orientation_patient: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    signed: bool = False,
    noise_hu: float = 12.0,
) -> SyntheticStudy:
    """Write a synthetic CT series under ``out_dir/dicom`` and its labels next to it.

    :param out_dir: created if missing; receives ``dicom/``, ``labels.nii.gz`` and ``labels.json``.
    :param seed: drives anatomy (organ sizes and positions vary by a few percent), noise, file
        names and UIDs, so different seeds look like different patients.
    :param patient_id: defaults to ``SYN<seed>``.
    :param shape: ``(z, y, x)`` voxels.
    :param spacing: ``(x, y, z)`` mm — PixelSpacing column/row spacing and the slice distance.
    :param image_orientation_patient: DICOM row and column direction cosines (normalised here);
        pass an oblique pair to exercise readers' geometry.
    :param signed: store int16 HU with intercept 0 instead of uint16 ``HU + 1024`` with
        intercept -1024.
    """
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patient_id = patient_id if patient_id is not None else f"SYN{seed:05d}"

    hu, labels = _phantom(shape, rng, noise_hu)
    if signed:
        stored = np.rint(hu).astype(np.int16)
        intercept = 0.0
    else:
        stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
        intercept = -1024.0
    # The ground truth is what a correct reader gets back from the stored values.
    hu = (stored.astype(np.float32) + np.float32(intercept)).astype(np.float32)

    geometry, positions = _geometry(shape, spacing, image_orientation_patient, rng)
    entropy = ["radseg-synthetic", str(seed), patient_id]
    study_uid = generate_uid(entropy_srcs=[*entropy, "study"])
    series_uid = generate_uid(entropy_srcs=[*entropy, "series"])
    frame_uid = generate_uid(entropy_srcs=[*entropy, "frame"])
    sop_uids = [generate_uid(entropy_srcs=[*entropy, "sop", str(k)]) for k in range(shape[0])]

    base = _base_dataset(
        patient_name=patient_name,
        patient_id=patient_id,
        patient_birth_date=patient_birth_date,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_uid,
        iop=geometry.direction,
        spacing=spacing,
        rows=shape[1],
        columns=shape[2],
        signed=signed,
        intercept=intercept,
    )
    names = _random_names(rng, shape[0])
    files: list[Path] = []
    nz = shape[0]
    for k in range(nz):
        ds = _slice_dataset(base, sop_uids[k], positions[k], instance_number=nz - k)
        ds.PixelData = stored[k].tobytes()
        path = dicom_dir / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)

    label_path = out_dir / "labels.nii.gz"
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(label_path), useCompression=True)
    class_map_path = out_dir / "labels.json"
    class_map_path.write_text(
        json.dumps(
            {
                "classes": [
                    {"id": c.id, "name": c.name, "color": list(c.color)} for c in SYNTHETIC_CLASSES
                ]
            },
            indent=2,
        )
    )
    return SyntheticStudy(
        dicom_dir=dicom_dir,
        label_path=label_path,
        class_map_path=class_map_path,
        classes=list(SYNTHETIC_CLASSES),
        patient_id=patient_id,
        patient_name=patient_name,
        patient_birth_date=patient_birth_date,
        study_instance_uid=str(study_uid),
        series_instance_uid=str(series_uid),
        frame_of_reference_uid=str(frame_uid),
        sop_instance_uids=[str(u) for u in sop_uids],
        files=files,
        geometry=geometry,
        hu=hu,
        labels=labels,
    )


def _phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, noise_hu: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw HU (float32) and labels (uint8), both ``(z, y, x)``, in normalised coordinates.

    ``u`` runs -1..1 across columns (patient right → left), ``v`` -1..1 down the rows (anterior →
    posterior) and ``w`` 0..1 from the most inferior slice to the most superior one.
    """
    nz, ny, nx = shape

    def jitter(scale: float = 0.08) -> float:
        return 1.0 + float(rng.uniform(-scale, scale))

    def shift(scale: float = 0.03) -> float:
        return float(rng.uniform(-scale, scale))

    w = np.linspace(0.0, 1.0, nz, dtype=np.float32)[:, None, None]
    v = ((np.arange(ny, dtype=np.float32) + 0.5) / ny * 2.0 - 1.0)[None, :, None]
    u = ((np.arange(nx, dtype=np.float32) + 0.5) / nx * 2.0 - 1.0)[None, None, :]

    def ellipse(cu: float, cv: float, au: float, av: float) -> np.ndarray:
        return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 <= 1.0

    def ellipsoid(cu: float, cv: float, cw: float, au: float, av: float, aw: float) -> np.ndarray:
        return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 + ((w - cw) / aw) ** 2 <= 1.0

    full = (nz, ny, nx)
    body_u, body_v = 0.86 * jitter(), 0.62 * jitter()
    body = np.broadcast_to(ellipse(0.0, 0.05, body_u, body_v), full)
    inner = np.broadcast_to(ellipse(0.0, 0.05, body_u - 0.08, body_v - 0.07), full)

    liver = ellipsoid(
        -0.33 + shift(),
        -0.05 + shift(),
        0.33 + shift(),
        0.4 * jitter(),
        0.34 * jitter(),
        0.21 * jitter(),
    )
    kidney_r = ellipsoid(
        -0.38 + shift(),
        0.33 + shift(),
        0.17 + shift(),
        0.12 * jitter(),
        0.15 * jitter(),
        0.15 * jitter(),
    )
    kidney_l = ellipsoid(
        0.38 + shift(),
        0.33 + shift(),
        0.21 + shift(),
        0.12 * jitter(),
        0.15 * jitter(),
        0.15 * jitter(),
    )
    heart = ellipsoid(
        0.1 + shift(),
        -0.18 + shift(),
        0.68 + shift(),
        0.26 * jitter(),
        0.24 * jitter(),
        0.16 * jitter(),
    )
    lung_r = ellipsoid(
        -0.38 + shift(), -0.02 + shift(), 0.85, 0.3 * jitter(), 0.42 * jitter(), 0.42 * jitter()
    )
    lung_l = ellipsoid(
        0.4 + shift(), -0.02 + shift(), 0.86, 0.27 * jitter(), 0.4 * jitter(), 0.4 * jitter()
    )
    aorta = np.broadcast_to(ellipse(0.12, 0.1, 0.06, 0.06), full)

    # Vertebrae: a body and a posterior arch around the canal, interrupted by discs.
    spine_v = 0.28 + shift(0.02)
    vertebral_body = ellipse(0.0, spine_v, 0.12 * jitter(), 0.1)
    canal = ellipse(0.0, spine_v + 0.17, 0.06, 0.055)
    arch = ellipse(0.0, spine_v + 0.17, 0.11, 0.11) & ~canal
    period = max(3, round(nz / 4))
    phase = int(rng.integers(0, period))
    disc = ((np.arange(nz) + phase) % period < max(1, period // 4))[:, None, None]
    bone = np.broadcast_to(vertebral_body | arch, full) & ~disc
    disc_region = np.broadcast_to(vertebral_body | arch, full) & disc
    canal3 = np.broadcast_to(canal, full)

    hu = np.full(full, _HU_AIR, np.float32)
    labels = np.zeros(full, np.uint8)
    hu[body] = _HU_FAT
    hu[inner] = _HU_SOFT
    organs: list[tuple[np.ndarray, float, int]] = [
        (liver & inner, _HU_LIVER, 1),
        (kidney_r & inner, _HU_KIDNEY, 5),
        (kidney_l & inner, _HU_KIDNEY, 5),
        (lung_r & inner & ~heart, _HU_LUNG, 3),
        (lung_l & inner & ~heart, _HU_LUNG, 2),
        (heart & inner, _HU_BLOOD, 0),
        (aorta & inner, _HU_BLOOD + 110.0, 0),
        (disc_region & inner, _HU_DISC, 0),
        (bone & inner, _HU_BONE, 4),
        (canal3 & inner, _HU_CSF, 0),
    ]
    for mask, value, label in organs:
        hu[mask] = value
        labels[mask] = label
    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, full).astype(np.float32)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu, labels


def _geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    iop: tuple[float, ...],
    rng: np.random.Generator,
) -> tuple[Geometry, list[tuple[float, float, float]]]:
    """Geometry centred near the scanner isocentre, and each slice's ImagePositionPatient."""
    row = np.asarray(iop[:3], float)
    row /= np.linalg.norm(row)
    col = np.asarray(iop[3:6], float)
    col -= row * float(row @ col)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    nz, ny, nx = shape
    sx, sy, sz = spacing
    centre = np.array([0.0, 20.0, float(rng.uniform(-400.0, -100.0))])
    origin = centre - row * sx * (nx - 1) / 2 - col * sy * (ny - 1) / 2 - normal * sz * (nz - 1) / 2
    # Round through the DS text the headers will carry, so the geometry equals what is read back.
    origin = np.array([float(format_number_as_ds(float(c))) for c in origin])
    row = np.array([float(format_number_as_ds(float(c))) for c in row])
    col = np.array([float(format_number_as_ds(float(c))) for c in col])
    positions = [
        tuple(float(format_number_as_ds(float(c))) for c in origin + normal * sz * k)
        for k in range(nz)
    ]
    direction = np.stack([row, col, normal], axis=1)  # columns are the x, y, z axes
    geometry = Geometry(
        size=(nx, ny, nz),
        spacing=(float(sx), float(sy), float(sz)),
        origin=positions[0],  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction.ravel()),
    )
    return geometry, positions  # type: ignore[return-value]


def _base_dataset(
    *,
    patient_name: str,
    patient_id: str,
    patient_birth_date: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    iop: tuple[float, ...],
    spacing: tuple[float, float, float],
    rows: int,
    columns: int,
    signed: bool,
    intercept: float,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240311"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.AccessionNumber = "ACC" + patient_id[-6:]
    ds.Modality = "CT"
    ds.Manufacturer = "radseg synthetic"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Springfield"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StationName = "CT-SYN-01"
    ds.StudyDescription = "CT chest abdomen"
    ds.SeriesDescription = "Synthetic phantom 3mm"
    ds.OperatorsName = "Tech^Terry"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = "F"
    ds.PatientAge = "064Y"
    ds.OtherPatientIDs = patient_id + "-OLD"
    ds.PatientAddress = "42 Elm Street, Springfield"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = format_number_as_ds(float(spacing[2]))
    ds.KVP = "120"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # Direction columns are x (row direction) and y (column direction): Geometry is row-major.
    ds.ImageOrientationPatient = [format_number_as_ds(float(iop[i])) for i in (0, 3, 6, 1, 4, 7)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [
        format_number_as_ds(float(spacing[1])),
        format_number_as_ds(float(spacing[0])),
    ]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = format_number_as_ds(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    # Vendors hide identifiers in private tags too; de-identification must drop them.
    block = ds.private_block(0x0011, "RADSEG SYNTHETIC", create=True)
    block.add_new(0x01, "LO", patient_name)
    return ds


def _slice_dataset(
    base: Dataset, sop_uid: UID, position: tuple[float, float, float], *, instance_number: int
) -> Dataset:
    ds = Dataset()
    ds.update(base)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [format_number_as_ds(float(c)) for c in position]
    ds.SliceLocation = format_number_as_ds(float(position[2]))
    return ds


def _random_names(rng: np.random.Generator, count: int) -> list[str]:
    """Unique, unordered file names like a PACS export (``IM`` + 8 hex digits, no extension)."""
    names: set[str] = set()
    while len(names) < count:
        names.add(f"IM{int(rng.integers(0, 2**32)):08X}")
    out = list(names)
    rng.shuffle(out)
    return out
