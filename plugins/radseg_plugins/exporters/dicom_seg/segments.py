"""The segments of a DICOM SEG: one per class, labelled, coloured and coded.

A class is coded with its own SNOMED CT code when it has one, else with the SNOMED CT concept of
the same name when pydicom knows one for a segmentable anatomical structure (``liver`` → Liver,
``lung_left`` → Lung with laterality Left), else as the generic Tissue.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from radseg.contracts import ClassInfo

__all__ = ["segment_description"]

#: SNOMED CT categories and fallback (CID 7150 "Segmentation Property Category").
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
TISSUE = codes.SCT.Tissue
#: Context groups of anatomical segmentation types: a name found in one of them is an anatomical
#: structure (CID 4031 common anatomic regions, 7152-7156 and 7160 organ segmentation types).
_ANATOMY_CIDS = ("cid4031", "cid7152", "cid7153", "cid7154", "cid7155", "cid7156", "cid7160")
_LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right}


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
