"""One DICOM file → the image frames it holds, each with its own geometry and rescale.

A legacy single-frame CT/MR instance gives one :class:`Frame`; an enhanced multi-frame instance
(Enhanced CT/MR, Legacy Converted Enhanced) gives one per frame, with ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and RescaleSlope/Intercept looked up in its Per-frame
Functional Groups first, then in the Shared Functional Groups, then at the top level. Both kinds
then go through the same assembly (:mod:`radseg.imaging.geometry_checks`), so a series is the
same volume whichever way the scanner stored it.

Only frames this reader can place are returned; every other layout is refused with its reason
rather than read as something it is not: objects that are not images (RT Dose, SR,
presentation states...: :mod:`radseg.imaging.sop_classes`), Siemens mosaics (many slices tiled
in one frame: :mod:`radseg.imaging.mosaic`), several frames that share the dataset's one
position (cine loops, time series), and palette colour.

Pixel data in a native transfer syntax (implicit/explicit little endian, explicit big endian,
deflate) is read straight from the bytes with :func:`numpy.frombuffer`; compressed syntaxes
(JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE) go through pydicom's decoders, which
use pylibjpeg, pyjpegls or GDCM. GDCM is used only for a syntax no other installed decoder
handles: on some damaged codestreams it throws a C++ exception that aborts the whole process,
which no ``except`` clause can catch. Before any of this, the declared image size is checked
against the bytes present (:mod:`radseg.imaging.pixel_checks`), so a small file that declares a
huge image is refused without allocating it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit

from radseg.imaging.file_failures import is_file_failure
from radseg.imaging.mosaic import mosaic_reason
from radseg.imaging.pixel_checks import check_pixel_data
from radseg.imaging.sop_classes import not_an_image_reason

__all__ = [
    "Frame",
    "NotAnImage",
    "UndecodablePixelData",
    "dataset_to_frames",
    "derived_uid",
]

#: Native syntaxes whose bytes are the pixel values (deflate is inflated by pydicom on read).
_NATIVE_BITS = {8: "u1", 16: "u2", 32: "u4"}
#: pydicom decoding plugins in the order they are tried; GDCM only when none other is there.
#: Lossy JPEG goes to Pillow first: libjpeg-turbo's output is what GDCM and SimpleITK give
#: (pylibjpeg's libjpeg rounds a few pixels differently).
_PLUGIN_ORDER = ("pylibjpeg", "pyjpegls", "pydicom", "pillow")
_JPEG_PLUGIN_ORDER = ("pillow", "pylibjpeg")
_LOSSY_JPEG = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
#: Header elements that series assembly reads from each file's dataset: read here, where a
#: damaged element is reported for its file, instead of there, where it would stop the batch.
_ASSEMBLY_KEYWORDS = (
    "PatientID",
    "Modality",
    "SeriesDescription",
    "SpacingBetweenSlices",
    "SliceThickness",
    "GantryDetectorTilt",
)


class NotAnImage(Exception):
    """The dataset is valid DICOM but not a greyscale image with a place in patient space."""


class UndecodablePixelData(ValueError):
    """No installed decoder could decode the pixel data; the message says what each one said."""


@dataclass
class Frame:
    """One 2D image frame: where it is, its stored values and how they map to HU."""

    source: str
    ds: Dataset
    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_number: int | None = None
    instance_number: int = 0
    localizer: bool = False
    #: the nominal SliceThickness (0018,0050) in mm; ``None`` when absent or not a positive number
    thickness: float | None = None
    #: remarks about this file (e.g. a UID taken from the file meta) for the series' warnings
    notes: list[str] = field(default_factory=list)
    #: the de-identified instance as Part 10 bytes (shared by the frames of a file), when kept:
    #: ``bytes``, or a read-only view of the memory a reading process wrote them to
    original: bytes | memoryview | None = None


def derived_uid(*parts: str) -> str:
    """A deterministic ``2.25.`` UID from already de-identified values (for missing UIDs)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def dataset_to_frames(name: str, ds: Dataset) -> list[Frame]:
    """Decode every frame of ``ds`` (already de-identified) with its geometry.

    :raises NotAnImage: not an image storage SOP class (:mod:`radseg.imaging.sop_classes`), a
        Siemens mosaic (:mod:`radseg.imaging.mosaic`), no pixel data, colour (palette colour
        included), several frames without per-frame positions, or no position/orientation/pixel
        spacing.
    :raises radseg.imaging.pixel_checks.DamagedPixelData: a declared image size that the pixel
        data present does not back (checked before any frame is looked at or decoded).
    :raises UndecodablePixelData: pixel data that no installed decoder can decode.
    """
    _refuse_non_greyscale_images(ds)
    n_frames = _number_of_frames(ds)
    check_pixel_data(ds, n_frames, _transfer_syntax(ds))
    for keyword in _ASSEMBLY_KEYWORDS:
        ds.get(keyword)
    per_frame, shared = _functional_groups(ds, n_frames)
    places = [
        _frame_geometry(ds, per_frame[i] if per_frame is not None else None, shared)
        for i in range(n_frames)
    ]
    thicknesses = [
        _thickness(ds, per_frame[i] if per_frame is not None else None, shared)
        for i in range(n_frames)
    ]
    notes: list[str] = []
    sop_uid = _sop_instance_uid(ds, notes)
    study_uid, series_uid = _study_and_series_uids(ds, notes)
    stored = stored_values(ds, n_frames)
    localizer = _is_localizer(ds)
    instance_number = _int(ds.get("InstanceNumber"), 0)
    numbered = n_frames > 1 or per_frame is not None
    return [
        Frame(
            source=name,
            ds=ds,
            pixels=stored[i],
            position=position,
            orientation=orientation,
            pixel_spacing=spacing,
            slope=slope,
            intercept=intercept,
            sop_instance_uid=sop_uid,
            series_instance_uid=series_uid,
            study_instance_uid=study_uid,
            frame_number=i + 1 if numbered else None,
            instance_number=instance_number,
            localizer=localizer or frame_localizer,
            notes=notes,
            thickness=thicknesses[i],
        )
        for i, (position, orientation, spacing, slope, intercept, frame_localizer) in enumerate(
            places
        )
    ]


def _refuse_non_greyscale_images(ds: Dataset) -> None:
    """:raises NotAnImage: no image, a mosaic, no pixel data, or colour (palette included)."""
    refusal = not_an_image_reason(ds) or mosaic_reason(ds)
    if refusal:
        raise NotAnImage(refusal)
    if "PixelData" not in ds:
        raise NotAnImage(
            f"no pixel data ({_sop_class_name(ds)}): a truncated file or not an image; skipped"
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric == "PALETTE COLOR":
        # PALETTE COLOR has one sample per pixel, but it is an index into a colour table
        shown = photometric if photometric in _PHOTOMETRIC else "?"  # a damaged value is not quoted
        raise NotAnImage(
            f"colour image ({shown}); only greyscale CT/MR series are ingested; skipped"
        )


def _functional_groups(
    ds: Dataset, n_frames: int
) -> tuple[Sequence[Dataset] | None, Dataset | None]:
    """The Per-frame Functional Groups (``None`` for a legacy instance) and the shared item.

    :raises NotAnImage: their frame count disagrees, or several frames have no per-frame
        positions.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per_frame is not None and len(per_frame) != n_frames:
        raise NotAnImage(
            f"NumberOfFrames is {n_frames} but the Per-frame Functional Groups hold "
            f"{len(per_frame)} items; the file is inconsistent, skipped"
        )
    if n_frames > 1 and per_frame is None:
        # Every frame would get the one ImagePositionPatient of the dataset: a cine loop, a
        # time series or a layout placed by other attributes (GridFrameOffsetVector, detector
        # sequences), never a stack this reader can place. Read as one, all frames but one
        # were dropped as duplicate positions.
        raise NotAnImage(
            f"{n_frames} frames in one instance without Per-frame Functional Groups (a cine "
            "loop or time series, not a stack of slices with their own positions): not "
            "supported; skipped"
        )
    return per_frame, shared


def _study_and_series_uids(ds: Dataset, notes: list[str]) -> tuple[str, str]:
    """StudyInstanceUID and SeriesInstanceUID; a missing one is derived (and written to ``ds``)
    from what else identifies the study or series, with a note saying so."""
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not study_uid:
        study_uid = derived_uid("study", str(ds.get("PatientID", "")), str(ds.get("StudyDate", "")))
        ds.StudyInstanceUID = study_uid
        notes.append("StudyInstanceUID missing; derived from the patient and the study date")
    if not series_uid:
        series_uid = derived_uid(
            "series",
            study_uid,
            str(ds.get("SeriesNumber", "")),
            str(ds.get("Modality", "")),
            str(ds.get("FrameOfReferenceUID", "")),
        )
        ds.SeriesInstanceUID = series_uid
        notes.append(
            "SeriesInstanceUID missing; slices grouped by study, series number, modality and "
            "frame of reference instead"
        )
    return study_uid, series_uid


def stored_values(ds: Dataset, n_frames: int | None = None) -> np.ndarray:
    """The stored pixel values of ``ds`` as ``(frames, rows, columns)`` in native byte order."""
    n_frames = n_frames or _number_of_frames(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    syntax = _transfer_syntax(ds)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if syntax is not None and not syntax.is_compressed and bits in _NATIVE_BITS:
        # Native pixel data is the array itself: frombuffer avoids pydicom's generic decoder,
        # which copies and validates (about 2 ms per 512² slice, most of a legacy read).
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        code = ("i" if signed else "u") + _NATIVE_BITS[bits][1:]
        dtype = np.dtype(("<" if syntax.is_little_endian else ">") + code)
        count = n_frames * rows * cols
        data = ds.PixelData
        if len(data) < count * dtype.itemsize:
            raise ValueError(
                f"pixel data holds {len(data)} bytes, {count * dtype.itemsize} expected for "
                f"{n_frames}x{rows}x{cols} at {bits} bits: the file is truncated"
            )
        array = np.frombuffer(data, dtype=dtype, count=count).reshape(n_frames, rows, cols)
        array = array.astype(dtype.newbyteorder("="), copy=False)
        stored_bits = int(ds.get("BitsStored", bits) or bits)
        if stored_bits < bits:
            shift = bits - stored_bits
            # Unused high bits may hold overlays or garbage: mask them (unsigned) or
            # sign-extend from the stored high bit (signed), as the standard says.
            if signed:
                array = (array << shift) >> shift
            else:
                array = array & np.array((1 << stored_bits) - 1, dtype=array.dtype)
        return array
    if syntax is not None and syntax.is_compressed:
        array = _decode(ds, syntax)
    else:
        try:
            array = ds.pixel_array
        except Exception as exc:
            raise UndecodablePixelData(_first_line(exc)) from exc
    return np.asarray(array).reshape(n_frames, rows, cols)


#: PhotometricInterpretation values quoted in reports (PS3.3 C.7.6.3.1.2); others are not.
_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422"}
    | {"YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"}
)


def _sop_class_name(ds: Dataset) -> str:
    """The SOP class's name when the UID is a known one; a damaged UID is not quoted back."""
    uid = UID(str(ds.get("SOPClassUID", "") or "").strip())
    return uid.name if uid.is_valid and uid.name != str(uid) else "unknown SOP class"


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return UID(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)) if meta else None


def _decode(ds: Dataset, syntax: UID) -> np.ndarray:
    """Compressed pixel data through pydicom's decoders, one plugin after the other.

    A plugin that fails hands over to the next; one that panics (the Rust ones) refuses the
    file. GDCM is left out when another plugin can decode the syntax (see the module doc).
    """
    decoder = get_decoder(syntax)
    available = list(decoder.available_plugins)
    order = _JPEG_PLUGIN_ORDER if syntax in _LOSSY_JPEG else _PLUGIN_ORDER
    ranked = sorted(
        (p for p in available if p != "gdcm"),
        key=lambda p: order.index(p) if p in order else len(order),
    )
    plugins = ranked or available
    if not plugins:
        return ds.pixel_array  # raises pydicom's error, which says what to install
    failures = []
    for plugin in plugins:
        try:
            array, _ = decoder.as_array(ds, decoding_plugin=plugin)
            return array
        except Exception as exc:
            failures.append(f"{plugin}: {_first_line(exc)}")
        except BaseException as exc:
            if not is_file_failure(exc):
                raise
            # A Rust decoder panics where the data overruns what the header declares (an RLE
            # segment longer than Rows x Columns); pydicom's own decoder would cut it to fit
            # and return a wrong image, so the file is refused instead.
            raise UndecodablePixelData(
                f"{plugin} crashed ({type(exc).__name__}): the pixel data is damaged or does "
                "not match Rows/Columns"
            ) from None
    raise UndecodablePixelData("; ".join(failures))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _number_of_frames(ds: Dataset) -> int:
    value = _int(ds.get("NumberOfFrames"), 1)
    if value < 1:
        raise NotAnImage(f"NumberOfFrames is {value}; skipped")
    return value


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _sop_instance_uid(ds: Dataset, notes: list[str]) -> str:
    """SOPInstanceUID, falling back to (or preferring, when they disagree) the file meta's."""
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    meta_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip() if meta else ""
    if not uid and meta_uid:
        notes.append(
            "SOPInstanceUID missing; taken from the file meta (MediaStorageSOPInstanceUID)"
        )
        ds.SOPInstanceUID = meta_uid
        return meta_uid
    if uid and meta_uid and uid != meta_uid:
        notes.append(
            "SOPInstanceUID differs from the file meta's MediaStorageSOPInstanceUID; the file "
            "meta's is used (the file was probably edited without updating its meta)"
        )
        ds.SOPInstanceUID = meta_uid
        return meta_uid
    if not uid:
        raise NotAnImage("no SOPInstanceUID in the dataset or its file meta; skipped")
    return uid


def _is_localizer(ds: Dataset) -> bool:
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return any(str(v).strip().upper() == "LOCALIZER" for v in image_type)


def _lookup(
    ds: Dataset, groups: Dataset | None, shared: Dataset | None, sequence: str, keyword: str
) -> Any:
    """A functional-group attribute: per-frame item, then shared item, then the top level."""
    for container in (groups, shared):
        if container is None:
            continue
        seq = container.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0][keyword].value
    return ds.get(keyword)


def _thickness(ds: Dataset, groups: Dataset | None, shared: Dataset | None) -> float | None:
    """The frame's SliceThickness; ``None`` when it is absent or cannot be decoded (it only
    describes the slice: a damaged one does not cost the frame)."""
    try:
        value = _lookup(ds, groups, shared, "PixelMeasuresSequence", "SliceThickness")
    except (NotImplementedError, ValueError, TypeError, KeyError, OverflowError):
        return None
    return slice_thickness(value)


def slice_thickness(value: Any) -> float | None:
    """A SliceThickness value in mm, or ``None`` when it is missing, malformed, not finite or not
    positive (it only describes the slices; nothing is placed by it)."""
    try:
        thickness = float(value)
    except (TypeError, ValueError):
        return None
    return thickness if math.isfinite(thickness) and thickness > 0 else None


def _floats(value: Any, n: int, keyword: str) -> np.ndarray:
    if value in (None, ""):
        raise NotAnImage(f"missing {keyword}; cannot place the slice in space, skipped")
    try:
        values = [float(v) for v in (value if isinstance(value, Sequence) else [value])]
    except (TypeError, ValueError):
        raise NotAnImage(f"malformed {keyword}; skipped") from None
    if len(values) != n:
        raise NotAnImage(f"malformed {keyword} ({len(values)} values, {n} expected); skipped")
    return np.array(values, dtype=np.float64)


def _frame_geometry(
    ds: Dataset, groups: Dataset | None, shared: Dataset | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float, float, bool]:
    position = _floats(
        _lookup(ds, groups, shared, "PlanePositionSequence", "ImagePositionPatient"),
        3,
        "ImagePositionPatient",
    )
    orientation = _floats(
        _lookup(ds, groups, shared, "PlaneOrientationSequence", "ImageOrientationPatient"),
        6,
        "ImageOrientationPatient",
    )
    spacing = _floats(
        _lookup(ds, groups, shared, "PixelMeasuresSequence", "PixelSpacing"), 2, "PixelSpacing"
    )
    slope_value = _lookup(ds, groups, shared, "PixelValueTransformationSequence", "RescaleSlope")
    intercept_value = _lookup(
        ds, groups, shared, "PixelValueTransformationSequence", "RescaleIntercept"
    )
    slope = float(slope_value) if slope_value not in (None, "") else 1.0
    intercept = float(intercept_value) if intercept_value not in (None, "") else 0.0
    frame_type = _lookup(ds, groups, shared, "CTImageFrameTypeSequence", "FrameType") or _lookup(
        ds, groups, shared, "MRImageFrameTypeSequence", "FrameType"
    )
    localizer = bool(frame_type) and "LOCALIZER" in [str(v).upper() for v in frame_type]
    return (
        position,
        orientation,
        (float(spacing[0]), float(spacing[1])),
        slope,
        intercept,
        localizer,
    )
