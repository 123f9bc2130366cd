"""The ``dicom-seg`` exporter: a predicted label volume as one DICOM Segmentation object.

The SEG is built with highdicom on the prediction's own de-identified source instances, so it
shares their study, patient and frame of reference, and every frame references the source
instance (or, for an enhanced multi-frame series, the source frame) it segments:

- ``seg_type = "binary"`` (default): Segmentation Storage, SegmentationType BINARY, one
  bit-packed frame per slice and segment; frames with no voxel of their segment are left out
  (highdicom's default). Explicit VR Little Endian.
- ``seg_type = "labelmap"``: Label Map Segmentation Storage (SegmentationType LABELMAP, DICOM
  2024), one 8-bit frame per slice whose pixel value is the segment number; RLE Lossless, which
  keeps the mostly-background frames small.

Each class of the class map becomes one segment, in class id order: segment number ``n`` is the
``n``-th class (ids need not be contiguous; the SEG's numbers are). A segment is labelled with the
class name, coloured with the class colour (as CIELab) and coded with the class's SNOMED CT code
when it has one, else with the SNOMED CT concept of the same name when pydicom knows one for a
segmentable anatomical structure (``liver`` → Liver, ``lung_left`` → Lung with laterality Left),
else as the generic Tissue. Its algorithm is the model that made the prediction
(``AlgorithmInfo``), family Artificial Intelligence.

A prediction with no labelled voxel still exports: highdicom then keeps every (empty) frame,
which is a valid SEG that says "nothing found" for each slice.

Settings (``[plugins.dicom-seg]``)::

    seg_type = "binary"                      # or "labelmap"; a per-export option may override it
    manufacturer = "radseg"
    series_description = "radseg prediction"

:meth:`DicomSegExporter.verify` re-reads the file with ``highdicom.seg.segread`` and compares
the voxels slice by source instance, the frames' geometry with the series' grid, the references
with the source instances, and the segment labels with the class names.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import highdicom as hd
import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

import radseg
from radseg.contracts import ClassInfo, ExportCheck, ExportRequest, Geometry
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.label_sources.seg import functional_group
from radseg.imaging.labels import label_array
from radseg.imaging.source_headers import source_headers
from radseg.plugins import validate_settings
from radseg.storage import atomic_path

__all__ = [
    "DicomSegExporter",
    "DicomSegSettings",
    "radseg_configure",
    "radseg_register_exporters",
    "segment_description",
]

log = logging.getLogger(__name__)

PLUGIN_NAME = "dicom-seg"
SUFFIX = ".dcm"
SEG_TYPES = ("binary", "labelmap")
#: The frames' geometry must equal the series' grid to this many mm.
GEOMETRY_TOL_MM = 1e-3
#: SNOMED CT categories and fallback (CID 7150 "Segmentation Property Category").
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
TISSUE = codes.SCT.Tissue
#: Context groups of anatomical segmentation types: a name found in one of them is an anatomical
#: structure (CID 4031 common anatomic regions, 7152-7156 and 7160 organ segmentation types).
_ANATOMY_CIDS = ("cid4031", "cid7152", "cid7153", "cid7154", "cid7155", "cid7156", "cid7160")
_LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right}


class DicomSegSettings(BaseModel):
    """``[plugins.dicom-seg]``: the default SEG type and the equipment and series names."""

    model_config = ConfigDict(extra="forbid")

    seg_type: Literal["binary", "labelmap"] = Field(
        default="binary",
        description="BINARY (one bit-packed frame per slice and segment) or LABELMAP",
    )
    manufacturer: str = Field(default="radseg", min_length=1, max_length=64)
    series_description: str = Field(default="radseg prediction", max_length=64)


class _Options(BaseModel):
    """Per-export options (``ExportRequest.options``)."""

    model_config = ConfigDict(extra="forbid")

    seg_type: Literal["binary", "labelmap"] | None = None


def _seg_type(request: ExportRequest, settings: DicomSegSettings) -> str:
    """The SEG type for this export: the option if given, else the plugin setting."""
    try:
        options = _Options.model_validate(dict(request.options))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {field!r} (valid options: seg_type)")
            else:
                problems.append(
                    f"option {field}={err.get('input')!r} is not valid "
                    f"(valid values: {', '.join(SEG_TYPES)})"
                )
        raise InputError(f"dicom-seg export: {'; '.join(problems)}") from None
    return options.seg_type or settings.seg_type


# -- segment descriptions ---------------------------------------------------------------------


def _camel(words: Sequence[str]) -> str:
    return "".join(w[:1].upper() + w[1:] for w in words)


def _anatomy_keyword(keyword: str) -> Code | None:
    """The concept called ``keyword`` in an anatomical context group, if one lists it."""
    for cid in _ANATOMY_CIDS:
        group = getattr(codes, cid)
        if keyword in group.dir():
            code: Code = getattr(group, keyword)
            return code
    return None


def _anatomy_code(name: str) -> tuple[Code, Code | None] | None:
    """The SNOMED CT structure a class name denotes, and its laterality, if pydicom knows it.

    ``"liver"`` → (Liver, None); ``"lung_left"``/``"left lung"`` → (Lung, Left);
    ``"kidneys"`` → (Kidney, None). Only concepts listed in an anatomical segmentation context
    group count, so a class named like a finding or a procedure falls back to Tissue.
    """
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name.strip().lower()) if w]
    laterality = None
    sides = [w for w in words if w in _LATERALITY]
    if len(sides) == 1:
        laterality = _LATERALITY[sides[0]]
        words = [w for w in words if w not in _LATERALITY]
    if not words:
        return None
    keyword = _camel(words)
    for candidate in (keyword, keyword[:-1] if keyword.endswith("s") else ""):
        code = _anatomy_keyword(candidate) if candidate else None
        if code is not None and code.scheme_designator == "SCT":
            return code, laterality
    return None


def segment_description(
    number: int,
    cls: ClassInfo,
    algorithm: hd.AlgorithmIdentificationSequence,
    *,
    corrected: bool = False,
) -> hd.seg.SegmentDescription:
    """The SEG segment ``number`` for class ``cls`` (see the module doc for the codes used)."""
    modifier = None
    if cls.snomed_code:
        category, kind = ANATOMICAL_STRUCTURE, Code(str(cls.snomed_code), "SCT", cls.name)
    elif (found := _anatomy_code(cls.name)) is not None:
        category, (kind, modifier) = ANATOMICAL_STRUCTURE, found
    else:
        category, kind = TISSUE, TISSUE
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=cls.name,
        segmented_property_category=category,
        segmented_property_type=kind,
        # a reviewer's correction of the model's output is semi-automatic (PS3.3 C.8.20.4)
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if corrected
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*(int(v) for v in cls.color)),
    )
    if modifier is not None:
        item = description.SegmentedPropertyTypeCodeSequence[0]
        item.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(modifier)]
    return description


# -- sources --------------------------------------------------------------------------------


def _frames_of_sources(
    request: ExportRequest, labels: np.ndarray, datasets: Mapping[str, Dataset]
) -> tuple[list[Dataset], np.ndarray]:
    """Source images in highdicom's order and the label frames matching them one to one.

    ``datasets`` are :func:`radseg.imaging.source_headers.source_headers` (every slice's
    instance is among them). Single-frame series: one dataset per slice, in slice order
    (``slices[k]`` names the instance of ``labels[k]``). Enhanced multi-frame series: the one
    instance, with the labels reordered into its frame order.
    """
    slices = request.series.slices
    if len(slices) != labels.shape[0]:
        raise InputError(
            f"prediction {request.prediction_id} has {labels.shape[0]} slices but its series "
            f"lists {len(slices)}; the prediction does not belong to this series"
        )
    if all(s.frame_number is None for s in slices):
        return [datasets[s.sop_instance_uid] for s in slices], labels
    uids = {s.sop_instance_uid for s in slices}
    if len(uids) != 1 or any(s.frame_number is None for s in slices):
        raise InputError(
            f"prediction {request.prediction_id}: its series spreads over {len(uids)} enhanced "
            "multi-frame instances, and a DICOM SEG can reference one; export it as nifti instead"
        )
    source = datasets[slices[0].sop_instance_uid]
    frames = int(source.get("NumberOfFrames", 1) or 1)
    numbers = [int(s.frame_number or 0) for s in slices]
    if sorted(numbers) != list(range(1, frames + 1)):
        raise InputError(
            f"prediction {request.prediction_id}: its slices cover frames {min(numbers)}-"
            f"{max(numbers)} of a {frames}-frame instance, but a SEG of an enhanced instance "
            "must cover all its frames; export it as nifti instead"
        )
    ordered = np.empty_like(labels)
    for k, number in enumerate(numbers):
        ordered[number - 1] = labels[k]
    return [source], ordered


def _positions(labels: np.ndarray, classes: Sequence[ClassInfo], prediction_id: int) -> np.ndarray:
    """``labels`` with class ids replaced by segment numbers (1 = first class by id)."""
    lut = np.zeros(max(256, *(c.id + 1 for c in classes)), dtype=np.uint8)
    for number, cls in enumerate(classes, start=1):
        lut[cls.id] = number
    present = set(np.unique(labels).tolist()) - {0}
    unknown = sorted(present - {c.id for c in classes})
    if unknown:
        raise InputError(
            f"prediction {prediction_id} has class ids {unknown} that its class map does not "
            "list; a SEG needs a description for every segment, so add them to the class map"
        )
    return lut[labels]


def _seg_path(out: Path) -> Path:
    out = Path(out)
    return out if out.name.lower().endswith(SUFFIX) else out.with_name(out.name + SUFFIX)


def _sorted_classes(request: ExportRequest) -> list[ClassInfo]:
    classes = sorted((c for c in request.classes if c.id != 0), key=lambda c: c.id)
    if not classes:
        raise InputError(
            f"prediction {request.prediction_id} has an empty class map; a SEG needs at least "
            "one segment"
        )
    return classes


class DicomSegExporter:
    """Writes one DICOM SEG (BINARY or LABELMAP) referencing the prediction's source series."""

    name: ClassVar[str] = PLUGIN_NAME
    suffix: ClassVar[str] = SUFFIX
    dicom: ClassVar[bool] = True

    def __init__(self, settings: DicomSegSettings | None = None) -> None:
        self.settings = settings or DicomSegSettings()

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write the SEG to ``out`` (``.dcm`` added if missing) and return the path written.

        :raises InputError: no DICOM sources, an invalid option, labels off the series' grid or
            with class ids the class map lacks.
        """
        seg_type = _seg_type(request, self.settings)
        labels = label_array(request.labels, request.geometry)
        classes = _sorted_classes(request)
        datasets = source_headers(request)
        sources, frames = _frames_of_sources(request, labels, datasets)
        numbers = _positions(frames, classes, request.prediction_id)
        algorithm = hd.AlgorithmIdentificationSequence(
            name=request.algorithm.name[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=request.algorithm.version[:64],
        )
        descriptions = [
            segment_description(n, cls, algorithm, corrected=request.correction is not None)
            for n, cls in enumerate(classes, start=1)
        ]
        labelmap = seg_type == "labelmap"
        with warnings.catch_warnings():
            # radseg's patient pseudonym is a one-component name on purpose (PS3.15 profile)
            warnings.filterwarnings("ignore", "The string .* is unlikely to represent")
            seg = self._segmentation(request, sources, numbers, descriptions, labelmap)
        path = _seg_path(out)
        with atomic_path(path) as tmp:
            seg.save_as(tmp)
        log.info(
            "wrote %s SEG of prediction %d: %d frame(s), %d segment(s)",
            seg_type,
            request.prediction_id,
            int(seg.NumberOfFrames),
            len(classes),
        )
        return path

    def _segmentation(
        self,
        request: ExportRequest,
        sources: list[Dataset],
        numbers: np.ndarray,
        descriptions: list[hd.seg.SegmentDescription],
        labelmap: bool,
    ) -> hd.seg.Segmentation:
        source_series_number = sources[0].get("SeriesNumber")
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=numbers,
            segmentation_type=(
                hd.seg.SegmentationTypeValues.LABELMAP
                if labelmap
                else hd.seg.SegmentationTypeValues.BINARY
            ),
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            # After the source series in a viewer's list, and recognisably derived from it.
            series_number=1000 + int(source_series_number or 0),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=self.settings.manufacturer,
            manufacturer_model_name="radseg",
            software_versions=radseg.__version__,
            device_serial_number="0",
            content_label="RADSEG",
            content_description=(
                f"prediction {request.prediction_id}"
                + (f", corrected ({request.correction})" if request.correction else "")
            )[:64],
            series_description=self.settings.series_description or None,
            transfer_syntax_uid=RLELossless if labelmap else ExplicitVRLittleEndian,
        )

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Re-read ``written`` with highdicom's reader and compare it with ``request``."""
        try:
            seg = hd.seg.segread(str(written))
        except Exception as exc:
            return [
                ExportCheck(
                    "voxels (highdicom)",
                    False,
                    f"highdicom cannot read the SEG back: {type(exc).__name__}: {exc}",
                )
            ]
        classes = _sorted_classes(request)
        return [
            _check_segments(seg, classes),
            _check_voxels(seg, request, classes),
            _check_geometry(seg, request),
            _check_references(seg, request),
        ]


# -- verify ---------------------------------------------------------------------------------


def _check_segments(seg: hd.seg.Segmentation, classes: Sequence[ClassInfo]) -> ExportCheck:
    numbers = list(seg.segment_numbers)
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    expected = [c.name for c in classes]
    if numbers != list(range(1, len(classes) + 1)) or labels != expected:
        return ExportCheck(
            "segments",
            False,
            f"segments {numbers} are labelled {labels}, expected 1-{len(classes)} labelled "
            f"{expected}",
        )
    return ExportCheck(
        "segments", True, f"{len(numbers)} segment(s) labelled {', '.join(labels)} in id order"
    )


def _check_voxels(
    seg: hd.seg.Segmentation, request: ExportRequest, classes: Sequence[ClassInfo]
) -> ExportCheck:
    slices = request.series.slices
    try:
        if all(s.frame_number is None for s in slices):
            numbers = seg.get_pixels_by_source_instance(
                [s.sop_instance_uid for s in slices],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
        else:
            numbers = seg.get_pixels_by_source_frame(
                slices[0].sop_instance_uid,
                [int(s.frame_number or 0) for s in slices],
                combine_segments=True,
                assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
    except Exception as exc:
        return ExportCheck(
            "voxels (highdicom)",
            False,
            f"highdicom cannot rebuild the label volume by source instance: "
            f"{type(exc).__name__}: {exc}",
        )
    # Segment number n is the n-th class by id (see the module doc).
    lut = np.zeros(max(int(numbers.max(initial=0)), len(classes)) + 1, dtype=np.int32)
    lut[1 : len(classes) + 1] = [c.id for c in classes]
    lut[len(classes) + 1 :] = -1  # a segment number the export never writes
    read = lut[numbers]
    expected = np.asarray(request.labels)
    nz, ny, nx = expected.shape
    if read.shape != expected.shape:
        return ExportCheck(
            "voxels (highdicom)",
            False,
            f"the SEG gives {read.shape} (z, y, x) voxels, the prediction has {expected.shape}",
        )
    differ = int(np.count_nonzero(read != expected))
    return ExportCheck(
        "voxels (highdicom)",
        differ == 0,
        f"{nz} slices × {ny}×{nx}: {differ} voxel(s) differ, {len(classes)} segment(s), "
        f"{int(seg.NumberOfFrames)} frame(s)",
    )


def _frame_slice(seg: Dataset, index: int, geometry: Geometry) -> tuple[int | None, float]:
    """The slice of ``geometry`` frame ``index`` lies on, and how far from it it is (mm)."""
    position = functional_group(seg, index, "PlanePositionSequence")
    if position is None:
        return None, float("inf")
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    offset = direction.T @ (
        np.asarray([float(v) for v in position.ImagePositionPatient]) - np.asarray(geometry.origin)
    )
    dz = float(geometry.spacing[2])
    k = round(offset[2] / dz)
    error = float(np.max(np.abs(offset - (0.0, 0.0, k * dz))))
    if not 0 <= k < geometry.size[2]:
        return None, error
    return k, error


def _check_geometry(seg: hd.seg.Segmentation, request: ExportRequest) -> ExportCheck:
    geometry = request.geometry
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    iop = np.concatenate([direction[:, 0], direction[:, 1]])
    sx, sy, sz = (float(v) for v in geometry.spacing)
    problems: list[str] = []
    worst = 0.0
    frames = int(seg.NumberOfFrames)
    for i in range(frames):
        orientation = functional_group(seg, i, "PlaneOrientationSequence")
        measures = functional_group(seg, i, "PixelMeasuresSequence")
        if orientation is None or measures is None:
            problems.append(f"frame {i + 1} has no plane orientation or pixel measures")
            break
        cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        # A cosine error times the image's extent is the displacement it causes at the far edge.
        extent = max(geometry.size[0] * sx, geometry.size[1] * sy)
        if float(np.max(np.abs(cosines - iop))) * extent > GEOMETRY_TOL_MM:
            problems.append(f"frame {i + 1} orientation {cosines.round(6).tolist()} ≠ series")
            break
        row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
        if abs(row_spacing - sy) > GEOMETRY_TOL_MM or abs(column_spacing - sx) > GEOMETRY_TOL_MM:
            problems.append(
                f"frame {i + 1} pixel spacing {[row_spacing, column_spacing]} ≠ {[sy, sx]}"
            )
            break
        between = measures.get("SpacingBetweenSlices")
        if between is not None and abs(float(between) - sz) > GEOMETRY_TOL_MM:
            problems.append(f"SpacingBetweenSlices {float(between)} ≠ slice distance {sz}")
            break
        k, error = _frame_slice(seg, i, geometry)
        worst = max(worst, error)
        if k is None or error > GEOMETRY_TOL_MM:
            problems.append(f"frame {i + 1} lies {error:.4g} mm off the series' slices")
            break
    if (int(seg.Rows), int(seg.Columns)) != (geometry.size[1], geometry.size[0]):
        problems.append(
            f"frames are {seg.Rows}×{seg.Columns}, the series {geometry.size[1]}×{geometry.size[0]}"
        )
    source_frame = _source_frame_of_reference(request)
    if str(seg.get("FrameOfReferenceUID", "")) != source_frame:
        problems.append("FrameOfReferenceUID differs from the source series'")
    if problems:
        return ExportCheck("geometry", False, "; ".join(problems))
    return ExportCheck(
        "geometry",
        True,
        f"{frames} frame(s) on the series' slices (worst {worst:.1e} mm), orientation, pixel "
        f"spacing and slice distance equal to {GEOMETRY_TOL_MM:g} mm; same frame of reference",
    )


def _source_frame_of_reference(request: ExportRequest) -> str:
    if not request.series.instances:
        return ""
    ds = pydicom.dcmread(
        str(request.series.instances[0]),
        stop_before_pixels=True,
        specific_tags=["FrameOfReferenceUID"],
    )
    return str(ds.get("FrameOfReferenceUID", ""))


def _referenced(seg: Dataset, index: int) -> list[tuple[str, int | None]]:
    """The source (SOP Instance UID, frame number) pairs frame ``index`` was derived from."""
    derivation = functional_group(seg, index, "DerivationImageSequence")
    refs: list[tuple[str, int | None]] = []
    if derivation is None:
        return refs
    for item in derivation.get("SourceImageSequence", []):
        frames = item.get("ReferencedFrameNumber")
        if frames is None:
            refs.append((str(item.ReferencedSOPInstanceUID), None))
        else:
            for number in frames if isinstance(frames, Sequence) else [frames]:
                refs.append((str(item.ReferencedSOPInstanceUID), int(number)))
    return refs


def _check_references(seg: hd.seg.Segmentation, request: ExportRequest) -> ExportCheck:
    slices = request.series.slices
    by_slice = {k: (s.sop_instance_uid, s.frame_number) for k, s in enumerate(slices)}
    known = {s.sop_instance_uid for s in slices}
    problems: list[str] = []
    if str(seg.StudyInstanceUID) != request.series.study_instance_uid:
        problems.append("StudyInstanceUID differs from the source study's")
    series_refs = {
        str(instance.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedInstanceSequence", [])
    }
    if series_refs - known:
        problems.append(
            f"{len(series_refs - known)} referenced instance(s) are not in the source series"
        )
    frames = int(seg.NumberOfFrames)
    referenced = 0
    for i in range(frames):
        refs = _referenced(seg, i)
        k, _ = _frame_slice(seg, i, request.geometry)
        if not refs:
            problems.append(f"frame {i + 1} references no source image")
            break
        if k is None or by_slice[k] not in refs:
            problems.append(f"frame {i + 1} references an instance other than its slice's")
            break
        referenced += 1
    if problems:
        return ExportCheck("references", False, "; ".join(problems))
    return ExportCheck(
        "references",
        True,
        f"{referenced} frame(s) reference the source instance of their own slice; "
        f"{len(series_refs)} referenced instance(s), all in the source series; same study",
    )


@hookimpl
def radseg_configure(platform: Any) -> DicomSegSettings:
    return validate_settings(
        PLUGIN_NAME, DicomSegSettings, platform.settings.plugin_settings(PLUGIN_NAME)
    )


@hookimpl
def radseg_register_exporters() -> list[type[DicomSegExporter]]:
    return [DicomSegExporter]
