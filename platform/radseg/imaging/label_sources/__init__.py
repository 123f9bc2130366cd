"""Every label source, placed on an image series' grid: one entry point for ingest and plugins.

:func:`read_label_source` looks at what ``path`` is and reads it with the matching reader:

=====================================  ===========================================================
a folder of ``.png`` files             per-slice masks (:mod:`.png`)
``*.seg.nrrd`` (or an NRRD with        3D Slicer segmentation, segment names kept (:mod:`.slicer`)
Slicer segment fields)
``.nii``, ``.nii.gz``, ``.nrrd``,      label volume in any orientation, resampled nearest-neighbour
``.nhdr``, ``.mha``, ``.mhd``          (:func:`radseg.imaging.labels.load_label_volume`); class
                                       map from ``classes`` or a sidecar ``<stem>.json``
a DICOM file, Modality SEG             DICOM Segmentation (:mod:`.seg`)
a DICOM file, Modality RTSTRUCT        RT Structure Set (:mod:`.rtstruct`)
=====================================  ===========================================================

The result is a :class:`~radseg.imaging.labels.LabelVolume`: uint8 ``(z, y, x)`` on the image grid
and the class map. Sources that name their own classes (SEG segments, RTSTRUCT ROIs, Slicer
segments) keep their names; when ``classes`` is given as well, labels are renumbered to the ids it
gives those names (:func:`.classmap.remap_by_name`), and a name it lacks is an error — ids never
collide silently. Colours: the map's where it gives one, else the source's (SEG recommended
display colour, Slicer segment colour, ROI display colour), else the palette's
(:mod:`radseg.imaging.palette`). To combine several sources use :func:`.classmap.merge_class_maps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pydicom

from radseg.contracts import ClassInfo, Geometry, SeriesVolume
from radseg.errors import InputError
from radseg.imaging.label_sources.classmap import merge_class_maps, remap_by_name
from radseg.imaging.labels import (
    LabelVolume,
    classes_for_labels,
    find_class_map,
    load_label_volume,
    read_class_map,
)
from radseg.imaging.palette import is_generated
from radseg.imaging.pixel_checks import InflateRefused, check_deflated

__all__ = [
    "LABEL_SOP_CLASS_UIDS",
    "LABEL_VOLUME_SUFFIXES",
    "is_label_object",
    "label_source_kind",
    "merge_class_maps",
    "read_label_object",
    "read_label_source",
]

LABEL_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: DICOM objects that hold labels, not images, by Modality: SOP class (Segmentation Storage, RT
#: Structure Set Storage), how errors name one, and what it is
_LABEL_OBJECTS = {
    "SEG": ("1.2.840.10008.5.1.4.1.1.66.4", "DICOM SEG", "a DICOM Segmentation object"),
    "RTSTRUCT": ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "an RT Structure Set"),
}
LABEL_SOP_CLASS_UIDS = frozenset(sop_class for sop_class, _, _ in _LABEL_OBJECTS.values())


def is_label_object(ds: pydicom.Dataset) -> bool:
    """Whether a DICOM header is a SEG or RTSTRUCT (to be read as labels, never as an image)."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    return sop_class in LABEL_SOP_CLASS_UIDS or str(ds.get("Modality", "")) in _LABEL_OBJECTS


def read_label_object(source: Path | pydicom.Dataset, modality: str) -> pydicom.Dataset:
    """The DICOM label object (``modality`` ``"SEG"`` or ``"RTSTRUCT"``) at ``source``; a
    dataset already read is returned as it is.

    :raises InputError: unreadable, or neither its SOP class nor its Modality is ``modality``'s.
    """
    if isinstance(source, pydicom.Dataset):
        return source
    sop_class_uid, kind, what = _LABEL_OBJECTS[modality]
    try:
        check_deflated(Path(source))
        ds = pydicom.dcmread(str(source), force=True)  # files without preamble too
    except InflateRefused as exc:
        raise InputError(f"cannot read {kind} {Path(source).name}: {exc}") from None
    except Exception as exc:
        raise InputError(f"cannot read {kind} {Path(source).name}: {exc}") from exc
    if str(ds.get("SOPClassUID", "")) != sop_class_uid and ds.get("Modality") != modality:
        raise InputError(f"{Path(source).name} is not {what}")
    return ds


def label_source_kind(path: Path) -> str:
    """``"png"``, ``"slicer"``, ``"volume"``, ``"seg"`` or ``"rtstruct"`` for ``path``.

    :raises InputError: none of these (the message lists what is accepted).
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if any(p.suffix.lower() == ".png" for p in path.iterdir()):
            return "png"
        raise InputError(f"{path.name} is a folder without .png masks; {_ACCEPTED}")
    if not path.is_file():
        raise InputError(f"label source {path.name} does not exist")
    if name.endswith(".seg.nrrd") or (name.endswith(".nrrd") and _is_slicer_nrrd(path)):
        return "slicer"
    if name.endswith(LABEL_VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(".png"):
        raise InputError(f"{path.name}: give the folder of per-slice PNG masks, not one PNG")
    try:
        check_deflated(path)
    except InflateRefused as exc:
        raise InputError(f"{path.name}: {exc}") from None
    try:
        # force: old label files often lack the 128-byte preamble and "DICM"; the Modality
        # check below still tells DICOM from anything else.
        header = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception as exc:  # forced parsing of a non-DICOM file fails in many ways
        raise InputError(f"{path.name} is not a label source I can read; {_ACCEPTED}") from exc
    modality = str(header.get("Modality", "") or "")
    if modality == "SEG":
        return "seg"
    if modality == "RTSTRUCT":
        return "rtstruct"
    if not modality:
        raise InputError(f"{path.name} is not a label source I can read; {_ACCEPTED}")
    raise InputError(
        f"{path.name} is a DICOM {modality} object, not a SEG or RTSTRUCT; {_ACCEPTED}"
    )


def read_label_source(
    path: Path,
    target: Geometry | SeriesVolume,
    *,
    classes: Sequence[ClassInfo] | None = None,
) -> LabelVolume:
    """Read the label source at ``path`` onto the grid of ``target``; see the module doc.

    :param target: the image series (or its geometry) the labels belong to.
    :param classes: the class map to use; for sources that name their classes, names decide.
    :raises InputError: unreadable or unknown source, unknown class names, bad class map.
    :raises radseg.errors.GeometryError: the labels do not overlap the series.
    """
    # Imported here so that importing this package stays light (highdicom, slicerio).
    from radseg.imaging.label_sources.png import read_png_masks
    from radseg.imaging.label_sources.rtstruct import read_rtstruct
    from radseg.imaging.label_sources.seg import read_seg
    from radseg.imaging.label_sources.slicer import read_slicer_segmentation

    path = Path(path)
    geometry = target.geometry if isinstance(target, SeriesVolume) else target
    kind = label_source_kind(path)
    if kind == "png":
        return read_png_masks(path, geometry, classes)
    if kind == "volume":
        labels = load_label_volume(path, geometry)
        if classes is None:
            sidecar = find_class_map(path)
            classes = read_class_map(sidecar) if sidecar else None
        return LabelVolume(labels, classes_for_labels(labels, classes), "volume")
    if kind == "slicer":
        result = read_slicer_segmentation(path, geometry)
    elif kind == "seg":
        result = read_seg(path, geometry)
    else:
        result = read_rtstruct(path, geometry)
    if classes is not None:
        result.labels = remap_by_name(result.labels, result.classes, classes, where=path.name)
        result.classes = classes_for_labels(result.labels, _keep_source_details(classes, result))
    return result


def _keep_source_details(given: Sequence[ClassInfo], source: LabelVolume) -> list[ClassInfo]:
    """``given`` with what the source knows and the map left out, matched by name.

    The map decides ids and names. A colour the map gives wins; where the map gives none (the
    palette filled one in), the source's own colour is kept — a SEG's recommended display colour,
    a Slicer segment's or an ROI's display colour. A SNOMED code the source knows is kept too.
    """
    known = {c.name: c for c in source.classes}
    out = []
    for c in given:
        found = known.get(c.name)
        if found is None:
            out.append(c)
            continue
        color = found.color if is_generated(c.color) and not is_generated(found.color) else c.color
        out.append(replace(c, color=color, snomed_code=c.snomed_code or found.snomed_code))
    return out


_ACCEPTED = (
    "label sources are a NIfTI/NRRD/MetaImage label volume, a 3D Slicer .seg.nrrd, a DICOM SEG or "
    "RTSTRUCT file, or a folder of per-slice PNG masks"
)


def _is_slicer_nrrd(path: Path) -> bool:
    """Whether an NRRD header carries Slicer's segment fields (``Segment0_Name``...)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return False
    header = head.split(b"\n\n", 1)[0]
    return b"Segment0_" in header
