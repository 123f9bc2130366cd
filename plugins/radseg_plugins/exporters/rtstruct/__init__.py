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

Modules: :mod:`.sources` (what is copied from the source instances), :mod:`.writing` (the
dataset), :mod:`.contours` (masks to contours), :mod:`.verification` (the checks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import pydicom

from radseg.contracts import ExportCheck, ExportRequest
from radseg.hookspecs import hookimpl
from radseg.storage import atomic_path

from .contours import mask_to_contours
from .sources import SourceHeaders, checked_labels
from .verification import contour_check, reference_check
from .writing import RTSTRUCT_SOP_CLASS_UID, structure_set

__all__ = [
    "RTSTRUCT_SOP_CLASS_UID",
    "RtstructExporter",
    "mask_to_contours",
    "radseg_register_exporters",
]

log = logging.getLogger(__name__)

SUFFIX = ".dcm"


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
        labels = checked_labels(request)
        sources = SourceHeaders.read(request)
        ds = structure_set(request, labels, sources)
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
        return [contour_check(request, written, ds), reference_check(request, ds)]


@hookimpl
def radseg_register_exporters() -> list[type[RtstructExporter]]:
    return [RtstructExporter]
