"""Per-slice PNG masks (a folder, one PNG per slice) → a label volume.

The number in each file name (the last run of digits: ``0007.png``, ``mask_12.png``) is the slice's
z index in the series volume — the ``slice_index`` of the COCO image records, z = 0 being the
slice lowest along the slice normal. Numbering may start at 0 or 1 (then every number is shifted
down by one); slices without a PNG are background. Each PNG must have the series' rows × columns:

* greyscale (``L``, ``I;16``, ``P`` read as its indices) — the value is the class id;
* RGB(A) — the colour is looked up in the class map (which must then be given), black is
  background, and a colour of no class is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from radseg.contracts import ClassInfo, Geometry
from radseg.errors import InputError
from radseg.imaging.labels import LabelVolume, classes_for_labels

__all__ = ["read_png_masks"]

_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def read_png_masks(
    folder: Path, geometry: Geometry, classes: Sequence[ClassInfo] | None = None
) -> LabelVolume:
    """Read the PNG masks in ``folder`` onto ``geometry``'s grid; see the module doc.

    :raises InputError: no PNG, a name without a number, two files for one slice, an index
        outside the series, a size that is not the series', or an unknown colour.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise InputError(f"{folder.name} holds no .png masks")
    nx, ny, nz = geometry.size
    numbered: dict[int, Path] = {}
    for path in files:
        match = _NUMBER.search(path.stem)
        if match is None:
            raise InputError(
                f"{path.name} has no slice number in its name; name masks <prefix><z>.png"
            )
        z = int(match.group(1))
        if z in numbered:
            raise InputError(f"{numbered[z].name} and {path.name} are both masks of slice {z}")
        numbered[z] = path
    shift = 1 if min(numbered) == 1 and max(numbered) == nz else 0
    outside = [z for z in numbered if not 0 <= z - shift < nz]
    if outside:
        raise InputError(
            f"{folder.name}: slice number(s) {sorted(outside)[:5]} are outside the series' "
            f"{nz} slices (numbers are z indices from 0, or from 1 when they run 1..{nz})"
        )
    colour_lut = {c.color: c.id for c in classes or ()}
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    for z, path in numbered.items():
        labels[z - shift] = _read_mask(path, (ny, nx), colour_lut)
    return LabelVolume(labels=labels, classes=classes_for_labels(labels, classes), source="png")


def _read_mask(
    path: Path, shape: tuple[int, int], colour_lut: dict[tuple[int, int, int], int]
) -> np.ndarray:
    try:
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.asarray(image)
    except OSError as exc:
        raise InputError(f"cannot read mask {path.name}: {exc}") from exc
    if pixels.shape[:2] != shape:
        raise InputError(
            f"mask {path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the series' slices are "
            f"{shape[1]}x{shape[0]} (columns x rows)"
        )
    if pixels.ndim == 2:
        if pixels.max(initial=0) > 255 or pixels.min(initial=0) < 0:
            raise InputError(f"mask {path.name} holds values above 255; labels are 0-255")
        return pixels.astype(np.uint8)
    if mode not in ("RGB", "RGBA"):
        raise InputError(f"mask {path.name} has mode {mode}; give grey class ids or RGB colours")
    rgb = pixels[..., :3].astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.zeros(shape, dtype=np.uint8)
    found = np.unique(packed)
    for value in found:
        if value == 0:
            continue
        colour = (int(value >> 16), int((value >> 8) & 255), int(value & 255))
        if colour not in colour_lut:
            raise InputError(
                f"mask {path.name} has colour {list(colour)}, which no class of the class map has"
                + ("" if colour_lut else "; RGB masks need a class map with colours")
            )
        out[packed == value] = colour_lut[colour]
    return out
