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
    stored, intercept = _stored_values(hu, signed)
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
    files = _write_slices(dicom_dir, base, stored, sop_uids, positions, rng)
    label_path, class_map_path = _write_labels(out_dir, labels, geometry)
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


def _write_slices(
    dicom_dir: Path,
    base: Dataset,
    stored: np.ndarray,
    sop_uids: list[UID],
    positions: list[tuple[float, float, float]],
    rng: np.random.Generator,
) -> list[Path]:
    """One file per slice, in z order: named at random, InstanceNumber counting from the head
    down (see the module doc)."""
    names = _random_names(rng, len(stored))
    files: list[Path] = []
    nz = len(stored)
    for k in range(nz):
        ds = _slice_dataset(base, sop_uids[k], positions[k], instance_number=nz - k)
        ds.PixelData = stored[k].tobytes()
        path = dicom_dir / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _stored_values(hu: np.ndarray, signed: bool) -> tuple[np.ndarray, float]:
    """The pixel values a CT file stores for ``hu``, and its RescaleIntercept: int16 HU with
    intercept 0, or uint16 ``HU + 1024`` (12 bits) with intercept -1024."""
    if signed:
        return np.rint(hu).astype(np.int16), 0.0
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16), -1024.0


def _write_labels(out_dir: Path, labels: np.ndarray, geometry: Geometry) -> tuple[Path, Path]:
    """``labels.nii.gz`` on exactly the series' geometry and ``labels.json``, its class map."""
    label_path = out_dir / "labels.nii.gz"
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(label_path), useCompression=True)
    class_map_path = out_dir / "labels.json"
    classes = [{"id": c.id, "name": c.name, "color": list(c.color)} for c in SYNTHETIC_CLASSES]
    class_map_path.write_text(json.dumps({"classes": classes}, indent=2))
    return label_path, class_map_path


@dataclass(frozen=True)
class _Ellipsoid:
    """An organ: centre ``(u, v, w)`` and semi-axes in the phantom's normalised coordinates.

    Each patient's organ is shifted and scaled by a few percent, but for a ``fixed_w`` centre
    (the lungs reach the top slices whatever the patient).
    """

    centre: tuple[float, float, float]
    axes: tuple[float, float, float]
    fixed_w: bool = False


#: the organs in the order the random generator draws them (a seed's anatomy depends on it)
_LIVER = _Ellipsoid((-0.33, -0.05, 0.33), (0.4, 0.34, 0.21))
_KIDNEY_RIGHT = _Ellipsoid((-0.38, 0.33, 0.17), (0.12, 0.15, 0.15))
_KIDNEY_LEFT = _Ellipsoid((0.38, 0.33, 0.21), (0.12, 0.15, 0.15))
_HEART = _Ellipsoid((0.1, -0.18, 0.68), (0.26, 0.24, 0.16))
_LUNG_RIGHT = _Ellipsoid((-0.38, -0.02, 0.85), (0.3, 0.42, 0.42), fixed_w=True)
_LUNG_LEFT = _Ellipsoid((0.4, -0.02, 0.86), (0.27, 0.4, 0.4), fixed_w=True)


class _Space:
    """The phantom's normalised coordinates and the patient's random variation.

    ``u`` runs -1..1 across columns (patient right → left), ``v`` -1..1 down the rows (anterior →
    posterior) and ``w`` 0..1 from the most inferior slice to the most superior one.
    """

    def __init__(self, shape: tuple[int, int, int], rng: np.random.Generator) -> None:
        nz, ny, nx = shape
        self.shape = shape
        self.rng = rng
        self.w = np.linspace(0.0, 1.0, nz, dtype=np.float32)[:, None, None]
        self.v = ((np.arange(ny, dtype=np.float32) + 0.5) / ny * 2.0 - 1.0)[None, :, None]
        self.u = ((np.arange(nx, dtype=np.float32) + 0.5) / nx * 2.0 - 1.0)[None, None, :]

    def jitter(self, scale: float = 0.08) -> float:
        """A size factor within ``1 ± scale``."""
        return 1.0 + float(self.rng.uniform(-scale, scale))

    def shift(self, scale: float = 0.03) -> float:
        """An offset within ``± scale``."""
        return float(self.rng.uniform(-scale, scale))

    def ellipse(self, cu: float, cv: float, au: float, av: float) -> np.ndarray:
        """The same ellipse on every slice: ``(1, y, x)``."""
        return ((self.u - cu) / au) ** 2 + ((self.v - cv) / av) ** 2 <= 1.0

    def column(self, cu: float, cv: float, au: float, av: float) -> np.ndarray:
        """:meth:`ellipse` through the whole volume: ``(z, y, x)``."""
        return np.broadcast_to(self.ellipse(cu, cv, au, av), self.shape)

    def organ(self, organ: _Ellipsoid) -> np.ndarray:
        """This patient's ``organ``: shifted centre, then scaled axes (the order draws happen)."""
        (cu, cv, cw), (au, av, aw) = organ.centre, organ.axes
        cu, cv = cu + self.shift(), cv + self.shift()
        cw = cw if organ.fixed_w else cw + self.shift()
        au, av, aw = au * self.jitter(), av * self.jitter(), aw * self.jitter()
        u, v, w = self.u, self.v, self.w
        return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 + ((w - cw) / aw) ** 2 <= 1.0


def _phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, noise_hu: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw HU (float32) and labels (uint8), both ``(z, y, x)``, in normalised coordinates
    (:class:`_Space`)."""
    space = _Space(shape, rng)
    body_u, body_v = 0.86 * space.jitter(), 0.62 * space.jitter()
    body = space.column(0.0, 0.05, body_u, body_v)
    inner = space.column(0.0, 0.05, body_u - 0.08, body_v - 0.07)
    liver, kidney_r, kidney_l, heart, lung_r, lung_l = (
        space.organ(o)
        for o in (_LIVER, _KIDNEY_RIGHT, _KIDNEY_LEFT, _HEART, _LUNG_RIGHT, _LUNG_LEFT)
    )
    aorta = space.column(0.12, 0.1, 0.06, 0.06)
    bone, disc, canal = _spine(space)

    hu = np.full(shape, _HU_AIR, np.float32)
    labels = np.zeros(shape, np.uint8)
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
        (disc & inner, _HU_DISC, 0),
        (bone & inner, _HU_BONE, 4),
        (canal & inner, _HU_CSF, 0),
    ]
    for mask, value, label in organs:
        hu[mask] = value
        labels[mask] = label
    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, shape).astype(np.float32)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu, labels


def _spine(space: _Space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertebrae, intervertebral discs and the spinal canal, each ``(z, y, x)``: a vertebral
    body and a posterior arch around the canal, interrupted every few slices by a disc."""
    nz = space.shape[0]
    spine_v = 0.28 + space.shift(0.02)
    vertebral_body = space.ellipse(0.0, spine_v, 0.12 * space.jitter(), 0.1)
    canal = space.ellipse(0.0, spine_v + 0.17, 0.06, 0.055)
    arch = space.ellipse(0.0, spine_v + 0.17, 0.11, 0.11) & ~canal
    period = max(3, round(nz / 4))
    phase = int(space.rng.integers(0, period))
    disc = ((np.arange(nz) + phase) % period < max(1, period // 4))[:, None, None]
    vertebrae = np.broadcast_to(vertebral_body | arch, space.shape)
    return vertebrae & ~disc, vertebrae & disc, np.broadcast_to(canal, space.shape)


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
