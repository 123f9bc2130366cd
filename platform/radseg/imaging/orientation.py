"""Where a view of a volume points in the patient: orientation letters, reformatted planes and
voxel positions in millimetres.

Patient coordinates are DICOM's LPS: +x towards the patient's Left, +y Posterior, +z Superior
(so -x is Right, -y Anterior, -z Inferior). A :class:`~radseg.contracts.Geometry`'s direction
holds the LPS direction of each voxel axis (i, j, k) as a column; arrays are ``(k, j, i)``.

**Letters** (:func:`direction_letters`): a direction is named by the patient axes it leans
towards, the nearest first, each one whose share is at least sin 22.5° (0.383) of the unit
vector: the letters of the nearest of the 26 compass points, as DICOM viewers print them. A
direction within 22.5° of Left reads "L"; one halfway between Left and Anterior reads "LA";
one along the body diagonal reads all three.

**Planes** (:func:`plane_layout`): axial, coronal and sagittal views are cut through the voxel
grid (no resampling): each plane is the voxel axis nearest to its normal, shown with the two
other voxel axes turned and flipped so that the screen points where the convention wants:

==========  =====================  ==================  =====================================
plane       screen right           screen down         convention
==========  =====================  ==================  =====================================
axial       patient's Left (L)     Posterior (P)       radiological: patient's right on the
coronal     patient's Left (L)     Inferior (I)        screen's left; neurological flips
sagittal    Posterior (P)          Inferior (I)        left-right of axial and coronal
==========  =====================  ==================  =====================================

For an oblique series the screen then points where the nearest voxel axis points, and the
letters say so (e.g. "LA" on the right edge of a series turned 30° about its long axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from radseg.contracts import Geometry

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = get_args(Plane)
Convention = Literal["radiological", "neurological"]
CONVENTIONS: tuple[Convention, ...] = get_args(Convention)

#: the letter of each LPS axis, positive and negative
LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
#: the share of a direction an axis needs for its letter: sin 22.5°, the bisector between the
#: compass points, so the letters name the nearest of the 26
OBLIQUE = math.sin(math.radians(22.5))

#: each plane's normal, screen-right and screen-down as (LPS axis, sign), radiological
_PLANES: dict[Plane, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (0, +1), (1, +1)),
    "coronal": (1, (0, +1), (2, -1)),
    "sagittal": (0, (1, +1), (2, -1)),
}


def direction_letters(vector: tuple[float, float, float] | np.ndarray) -> str:
    """The letters of an LPS direction: each axis whose share is at least :data:`OBLIQUE`,
    the largest first (``(1, 0, 0)`` → "L", ``(0.7, -0.7, 0)`` → "LA" or "AL")."""
    v = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        raise ValueError(f"a direction needs a finite non-zero vector, got {tuple(v)}")
    v = v / norm
    order = sorted(range(3), key=lambda axis: -abs(v[axis]))
    return "".join(
        LETTERS[axis][0 if v[axis] > 0 else 1] for axis in order if abs(v[axis]) >= OBLIQUE
    )


def direction_matrix(geometry: Geometry) -> np.ndarray:
    """The 3×3 direction cosines; column ``a`` is voxel axis ``a`` (i, j, k) in LPS."""
    return np.asarray(geometry.direction, dtype=float).reshape(3, 3)


def nearest_axes(direction: np.ndarray) -> tuple[int, int, int]:
    """For each LPS axis (x, y, z), the voxel axis most nearly along it (a permutation: the
    largest cosines are matched first, so a 45° series still gets one axis each)."""
    pairs = sorted(((abs(direction[p, a]), p, a) for p in range(3) for a in range(3)), reverse=True)
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for _, patient, voxel in pairs:
        if patient not in chosen and voxel not in used:
            chosen[patient] = voxel
            used.add(voxel)
    return chosen[0], chosen[1], chosen[2]


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane of a volume is cut and shown.

    The plane holds the voxels whose index along ``axis`` is fixed; the image's columns run along
    voxel axis ``column`` (reversed when ``column_flip``), its rows along ``row`` (reversed when
    ``row_flip``). Axes are voxel axes: 0 = i (x), 1 = j (y), 2 = k (z).
    """

    plane: Plane
    axis: int
    column: int
    column_flip: bool
    row: int
    row_flip: bool
    #: the letters on the image's edges: left, right, top, bottom
    left: str
    right: str
    top: str
    bottom: str

    def cut(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The ``(rows, columns)`` image of plane ``index`` of a ``(k, j, i)`` volume (a view,
        not a copy)."""
        # numpy's axes are (k, j, i): voxel axis a is array axis 2 - a
        image = np.take(volume, index, axis=2 - self.axis)
        remaining = [a for a in (2, 1, 0) if a != self.axis]  # voxel axes in array order
        if remaining.index(self.row) != 0:
            image = image.T
        return image[:: -1 if self.row_flip else 1, :: -1 if self.column_flip else 1]

    def to_dict(self, geometry: Geometry) -> dict[str, object]:
        """What the viewer's script needs: the axes, flips, letters, and the image's size and
        pixel spacing (columns, rows)."""
        return {
            "plane": self.plane,
            "axis": self.axis,
            "column": self.column,
            "column_flip": self.column_flip,
            "row": self.row,
            "row_flip": self.row_flip,
            "letters": {
                "left": self.left,
                "right": self.right,
                "top": self.top,
                "bottom": self.bottom,
            },
            "size": [geometry.size[self.column], geometry.size[self.row]],
            "spacing": [geometry.spacing[self.column], geometry.spacing[self.row]],
            "count": geometry.size[self.axis],
        }


def _layout(
    plane: Plane,
    direction: np.ndarray,
    axis: int,
    column: int,
    column_flip: bool,
    row: int,
    row_flip: bool,
) -> PlaneLayout:
    right = direction[:, column] * (-1 if column_flip else 1)
    down = direction[:, row] * (-1 if row_flip else 1)
    return PlaneLayout(
        plane=plane,
        axis=axis,
        column=column,
        column_flip=column_flip,
        row=row,
        row_flip=row_flip,
        left=direction_letters(-right),
        right=direction_letters(right),
        top=direction_letters(-down),
        bottom=direction_letters(down),
    )


def plane_layout(
    geometry: Geometry, plane: Plane, convention: Convention = "radiological"
) -> PlaneLayout:
    """How to cut and show ``plane`` of a volume with this geometry (see the module's table)."""
    if plane not in _PLANES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    direction = direction_matrix(geometry)
    nearest = nearest_axes(direction)
    normal, (right_axis, right_sign), (down_axis, down_sign) = _PLANES[plane]
    if convention == "neurological" and plane != "sagittal":
        right_sign = -right_sign
    column, row = nearest[right_axis], nearest[down_axis]
    return _layout(
        plane,
        direction,
        axis=nearest[normal],
        column=column,
        column_flip=bool(np.sign(direction[right_axis, column]) != right_sign),
        row=row,
        row_flip=bool(np.sign(direction[down_axis, row]) != down_sign),
    )


def acquisition_layout(geometry: Geometry, convention: Convention = "radiological") -> PlaneLayout:
    """The stored slices (``volume[k]``: columns along i, rows along j), flipped left-right
    and up-down as the convention wants for the plane they are nearest to. They are never
    turned: a series stored with its rows along the patient's left-right keeps them so, and its
    letters say so."""
    direction = direction_matrix(geometry)
    nearest = nearest_axes(direction)
    plane = next(p for p in PLANES if nearest[_PLANES[p][0]] == 2)
    wanted = plane_layout(geometry, plane, convention)
    if wanted.column == 0:  # the convention's layout keeps i as the columns: flips will do
        column_flip, row_flip = wanted.column_flip, wanted.row_flip
    else:
        column_flip = row_flip = False
    return _layout(
        plane, direction, axis=2, column=0, column_flip=column_flip, row=1, row_flip=row_flip
    )


def index_to_lps(geometry: Geometry, index: tuple[float, float, float]) -> tuple[float, ...]:
    """The LPS position in mm of voxel ``(i, j, k)``'s centre: origin + D · (spacing ∘ index),
    as SimpleITK's ``TransformContinuousIndexToPhysicalPoint``."""
    direction = direction_matrix(geometry)
    scaled = np.asarray(geometry.spacing, dtype=float) * np.asarray(index, dtype=float)
    position = np.asarray(geometry.origin, dtype=float) + direction @ scaled
    return tuple(float(v) for v in position)


def viewer_planes(
    geometry: Geometry, convention: Convention = "radiological", *, thickness: float | None = None
) -> dict[str, object]:
    """What the viewer's page needs to show a series in every plane: the stored slices'
    layout (``acquisition``), the three planes', the convention, the geometry to place a voxel
    in mm (origin, spacing, direction) and the slices' stated ``thickness`` (mm, or ``None``)."""
    layouts = {plane: plane_layout(geometry, plane, convention) for plane in PLANES}
    acquisition = acquisition_layout(geometry, convention)
    return {
        "convention": convention,
        "acquisition": acquisition.to_dict(geometry),
        "planes": {plane: layout.to_dict(geometry) for plane, layout in layouts.items()},
        "origin": list(geometry.origin),
        "spacing": list(geometry.spacing),
        "direction": list(geometry.direction),
        "thickness": thickness,
    }
