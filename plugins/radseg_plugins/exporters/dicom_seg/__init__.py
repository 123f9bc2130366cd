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
with the source instances, and the segment labels with the class names (:mod:`.checks`). The
segments' codes are chosen in :mod:`.segments`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import highdicom as hd
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

import radseg
from radseg.contracts import ClassInfo, ExportCheck, ExportRequest, validate_settings
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.labels import label_array
from radseg.imaging.source_headers import source_headers
from radseg.storage import atomic_path

from .checks import check_geometry, check_references, check_segments, check_voxels
from .segments import segment_description

__all__ = [
    "DicomSegExporter",
    "DicomSegSettings",
    "radseg_configure",
    "radseg_register_exporters",
]

log = logging.getLogger(__name__)

PLUGIN_NAME = "dicom-seg"
SUFFIX = ".dcm"
SEG_TYPES = ("binary", "labelmap")


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
        # Content Creator's Name is type 2 (present, empty allowed) in the Content Identification
        # Macro; highdicom leaves it out when no name is given, which dcmqi (3D Slicer's SEG
        # reader) reports. An algorithm made the SEG, so the name is present and empty.
        if "ContentCreatorName" not in seg:
            seg.ContentCreatorName = ""
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
                f"{request.label_version} of prediction {request.prediction_id}"
                if request.label_version
                else f"prediction {request.prediction_id}"
                + (f", corrected ({request.correction})" if request.correction else "")
            )[:64],
            # a reviewed label version names itself (an adjudicated one: its version)
            series_description=(
                f"radseg {request.label_version}"[:64]
                if request.label_version
                else self.settings.series_description or None
            ),
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
            check_segments(seg, classes),
            check_voxels(seg, request, classes),
            check_geometry(seg, request),
            check_references(seg, request),
        ]


@hookimpl
def radseg_configure(platform: Any) -> DicomSegSettings:
    return validate_settings(
        PLUGIN_NAME, DicomSegSettings, platform.settings.plugin_settings(PLUGIN_NAME)
    )


@hookimpl
def radseg_register_exporters() -> list[type[DicomSegExporter]]:
    return [DicomSegExporter]
