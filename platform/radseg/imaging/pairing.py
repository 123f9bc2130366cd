"""Pair image volumes with label volumes by file name, and say which names would have paired.

A name is read without its volume suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``,
``.mhd``; ``.seg.nrrd`` is a label); suffixes and role words (``_seg``, ``_image``, ...) are read
whatever their case, the case's own name as written (``Case1`` and ``case1`` are two cases). In
one folder:

* ``case_seg``, ``case_segmentation``, ``case_label``, ``case_labels``, ``case_mask``,
  ``case_masks``, ``case_gt`` (``-`` or ``.`` may stand for the ``_``), and 3D Slicer's
  ``case.seg.nrrd``: a label of ``case``;
* ``case_image``, ``case_img``, ``case_volume``, ``case_vol``: the image of ``case`` (it also
  pairs with ``case_image_seg``);
* ``case_0000``: nnU-Net's channel 0 of ``case`` (see below);
* anything else: the image of the case of that name.

With two folders (``images/`` + ``labels/``, nnU-Net's ``imagesTr/`` + ``labelsTr/``, or a label
folder given apart) every file in the label folder is a label: ``labels/case.nii.gz`` and
``labels/case_seg.nii.gz`` both pair with ``images/case.nii.gz`` or ``images/case_0000.nii.gz``.

nnU-Net's channel suffix ``_NNNN`` is read as a channel only where the image names follow its
scheme: every image ends in four digits, every case has the same channels starting at ``0000``,
and there are several cases or one channel — so ``patient_0001`` … ``patient_0099`` stay 99
cases. radseg reads one channel per case: ``_0000``; the other channels are reported, not used.

The case of an image does not depend on whether a label is found, so a case keeps its identity
when its labels come later. Files that pair ambiguously (two images of one case, two labels for
one image) are reported and their case left out; a label without an image is reported with the
image names that would have paired it, and, when the input has labels at all, so is an image
without a label (it is still read, unlabelled).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "VOLUME_SUFFIXES",
    "Case",
    "NamedVolume",
    "Pairing",
    "name_role",
    "pair_volumes",
    "volume_stem",
]

Role = Literal["image", "label"]

#: what an image or label volume file is called (SimpleITK reads them all)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_SLICER = ".seg.nrrd"
_LABEL = re.compile(r"^(?P<case>.+?)[._-](seg|segmentation|labels?|masks?|gt)$", re.IGNORECASE)
_IMAGE = re.compile(r"^(?P<case>.+?)[._-](image|img|volume|vol)$", re.IGNORECASE)
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class NamedVolume:
    """One volume file as its name reads: ``role``, ``case``, and the names it pairs under."""

    path: Path
    role: Role
    case: str
    #: the case names this file pairs under, most specific first (``case`` is the first)
    keys: tuple[str, ...]
    #: nnU-Net channel, for images named in its scheme
    channel: int | None = None


@dataclass(frozen=True)
class Case:
    """An image volume and its label file, if one paired."""

    case: str
    image: Path
    label: Path | None


@dataclass
class Pairing:
    """What :func:`pair_volumes` found: the cases and, per file, what went wrong or is missing."""

    cases: list[Case] = field(default_factory=list)
    #: ``(file, reason)`` for files that are not used
    problems: list[tuple[Path, str]] = field(default_factory=list)
    #: ``(image, reason)`` for images read without labels although the input has labels
    unlabelled: list[tuple[Path, str]] = field(default_factory=list)


def volume_stem(name: str) -> tuple[str, str]:
    """``(stem, suffix)`` of a volume file name; the suffix is ``""`` for other files."""
    lower = name.lower()
    for suffix in (_SLICER, *VOLUME_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def name_role(name: str, *, folder: Role | None = None) -> NamedVolume:
    """Read one file name (see the module doc); ``folder`` is the role of a two-folder layout.

    nnU-Net channels are left to :func:`pair_volumes`, which sees all the names.
    """
    stem, suffix = volume_stem(name)
    path = Path(name)
    if folder == "label" or suffix.lower() == _SLICER:
        marked = _LABEL.match(stem)
        keys = (marked["case"], stem) if marked else (stem,)
        return NamedVolume(path, "label", keys[0], keys)
    if folder is None:
        marked = _LABEL.match(stem)
        if marked:
            return NamedVolume(path, "label", marked["case"], (marked["case"],))
    marked = _IMAGE.match(stem)
    if marked:
        return NamedVolume(path, "image", marked["case"], (marked["case"], stem))
    return NamedVolume(path, "image", stem, (stem,))


def pair_volumes(
    images: Sequence[Path],
    labels: Sequence[Path] = (),
    *,
    label_folder: str | None = None,
) -> Pairing:
    """Pair ``images`` with ``labels`` by name; see the module doc.

    :param images: the volume files of the image folder, or of the one folder (labels included:
        they are told apart by name).
    :param labels: the files of the label folder of a two-folder layout (all labels).
    :param label_folder: that folder's name, for the hints; ``None`` for one folder.
    """
    result = Pairing()
    two_folders = label_folder is not None
    named = [name_role(p.name, folder="image" if two_folders else None) for p in images]
    image_files = [
        _with_path(n, p) for n, p in zip(named, images, strict=True) if n.role == "image"
    ]
    label_files = [
        _with_path(n, p) for n, p in zip(named, images, strict=True) if n.role == "label"
    ]
    label_files += [_with_path(name_role(p.name, folder="label"), p) for p in labels]
    image_files = _channels(image_files, result)
    by_case, ambiguous = _one_image_per_case(image_files, result)
    labels_of = _labels_by_case(label_files, by_case, ambiguous, label_folder, result)
    for case in sorted(by_case):
        image = by_case[case]
        found = labels_of.get(case, [])
        if len(found) > 1:
            files = ", ".join(f.path.name for f in found)
            result.problems.append(
                (image.path, f"label files {files} all pair with it; keep one label file per case")
            )
            continue
        if not found and label_files:
            result.unlabelled.append(
                (
                    image.path,
                    "read without labels: no label file pairs with it; "
                    + _label_hint(image, label_folder),
                )
            )
        result.cases.append(Case(case, image.path, found[0].path if found else None))
    return result


def _one_image_per_case(
    images: list[NamedVolume], result: Pairing
) -> tuple[dict[str, NamedVolume], dict[str, str]]:
    """Each case's one image; a case with several images is reported and left out.

    Returns the cases and, for every name those left-out images pair under, their case.
    """
    by_case: dict[str, list[NamedVolume]] = defaultdict(list)
    for image in images:
        by_case[image.case].append(image)
    ambiguous: dict[str, str] = {}  # key -> case with several images
    for case, found in list(by_case.items()):
        if len(found) > 1:
            files = ", ".join(f.path.name for f in found)
            for f in found:
                result.problems.append(
                    (f.path, f"{len(found)} image volumes are case {case!r} ({files}); keep one")
                )
                ambiguous.update((key, case) for key in f.keys)
            del by_case[case]
    return {case: image for case, (image,) in by_case.items()}, ambiguous


def _labels_by_case(
    labels: list[NamedVolume],
    by_case: dict[str, NamedVolume],
    ambiguous: dict[str, str],
    label_folder: str | None,
    result: Pairing,
) -> dict[str, list[NamedVolume]]:
    """The labels that pair with each case: under the first of their names that exactly one
    case's image has. A label that pairs with none is reported, with the image names that
    would have paired it."""
    cases_of_key: dict[str, set[str]] = defaultdict(set)
    for case, image in by_case.items():
        for key in image.keys:
            cases_of_key[key].add(case)
    labels_of: dict[str, list[NamedVolume]] = defaultdict(list)
    for label in labels:
        paired = next(
            (next(iter(cases_of_key[k])) for k in label.keys if len(cases_of_key.get(k, ())) == 1),
            None,
        )
        if paired is not None:
            labels_of[paired].append(label)
        elif any(k in ambiguous for k in label.keys):
            clash = next(ambiguous[k] for k in label.keys if k in ambiguous)
            result.problems.append(
                (label.path, f"case {clash!r} has several image volumes; keep one of them")
            )
        else:
            result.problems.append(
                (
                    label.path,
                    "label volume without a matching image volume; "
                    + _image_hint(label, label_folder),
                )
            )
    return labels_of


def _with_path(named: NamedVolume, path: Path) -> NamedVolume:
    return NamedVolume(path, named.role, named.case, named.keys, named.channel)


def _channels(images: list[NamedVolume], result: Pairing) -> list[NamedVolume]:
    """Read nnU-Net channel suffixes where the names follow its scheme; keep channel 0 only."""
    matches = [_CHANNEL.match(volume_stem(i.path.name)[0]) for i in images]
    if not images or not all(matches):
        return images
    channels: dict[str, set[int]] = defaultdict(set)
    for m in matches:
        assert m is not None
        channels[m["case"]].add(int(m["channel"]))
    sets = {frozenset(s) for s in channels.values()}
    if len(sets) != 1:
        return images
    (only,) = sets
    if only != frozenset(range(len(only))) or (len(channels) < 2 and len(only) > 1):
        return images
    kept = []
    for image, m in zip(images, matches, strict=True):
        assert m is not None
        case, channel = m["case"], int(m["channel"])
        if channel != 0:
            result.problems.append(
                (
                    image.path,
                    f"channel {channel} of case {case!r} (nnU-Net naming): radseg reads one "
                    "channel per case, the _0000 file; give other channels as cases of their own",
                )
            )
            continue
        kept.append(NamedVolume(image.path, "image", case, (case, *image.keys), 0))
    return kept


def _image_hint(label: NamedVolume, label_folder: str | None) -> str:
    suffix = volume_stem(label.path.name)[1]
    suffix = ".nii.gz" if suffix.lower() == _SLICER else suffix
    key = label.keys[0]
    names = [f"{key}{suffix}", f"{key}_0000{suffix}"]
    if label_folder is None:
        names.append(f"{key}_image{suffix}")
        return f"an image named {_either(names)} would pair with it"
    return f"an image named {_either(names)} in the image folder would pair with it"


def _label_hint(image: NamedVolume, label_folder: str | None) -> str:
    suffix = volume_stem(image.path.name)[1]
    case = image.case
    if label_folder is not None:
        names = [f"{label_folder}/{case}{suffix}", f"{label_folder}/{case}_seg{suffix}"]
        return f"{_either(names)} would"
    names = [
        f"{case}_seg{suffix}",
        f"{case}_label{suffix}",
        f"{case}_mask{suffix}",
        f"{case}.seg.nrrd",
    ]
    return f"{_either(names)} beside it would"


def _either(names: Iterable[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
