"""Label and HU volumes on disk (NIfTI through SimpleITK), with their geometry.

Arrays are ``(z, y, x)``; :class:`radseg.contracts.Geometry` is ``(x, y, z)`` like SimpleITK.
HU volumes whose values are all integers are stored as int16 (half the disk of float32, exact),
label volumes as uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radseg.contracts import Geometry
from radseg.storage import atomic_path


def array_to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def image_geometry(image: sitk.Image) -> Geometry:
    return Geometry(
        size=tuple(int(v) for v in image.GetSize()),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in image.GetDirection()),
    )


def write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> Path:
    """Write ``array`` with ``geometry`` atomically; compact dtype for HU (see module doc)."""
    if array.dtype.kind == "f" and np.array_equal(array, np.rint(array)):
        lo, hi = float(array.min(initial=0)), float(array.max(initial=0))
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            array = array.astype(np.int16)
    with atomic_path(Path(path)) as tmp:
        sitk.WriteImage(array_to_image(array, geometry), str(tmp), useCompression=True)
    return Path(path)


def read_volume(path: Path, dtype: type | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a volume written by :func:`write_volume` as ``(array (z, y, x), geometry)``."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return array, image_geometry(image)
