"""Siemens MR mosaics: found and refused, never read as one flat slice.

A Siemens mosaic (fMRI, DWI) stores all the slices of one volume as tiles of one frame: a
64x64x36 acquisition is a single 384x384 image. Read as an image it became a one-slice "volume"
the size of the grid, without a word. Unpacking it needs the tile count from Siemens' private
headers and a position that is not the frame's ImagePositionPatient (that is the corner of the
whole grid; each slice's corner lies inside it and the slices follow the CSA SliceNormalVector,
whose sign the row and column cosines do not give). radseg does not unpack mosaics; the file is
refused with a reason that names the mosaic, so the user exports single-slice images instead.

A mosaic is recognised by any of: ImageType containing ``MOSAIC``; the private element
NumberOfImagesInMosaic (0019,xx0A, creator ``SIEMENS MR HEADER``); or NumberOfImagesInMosaic in
the CSA image header (0029,xx10, creator ``SIEMENS CSA HEADER``). Private elements are removed
by de-identification, so :func:`mosaic_reason` looks at the dataset as read.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["mosaic_reason", "read_csa_value"]

_MR_HEADER = "SIEMENS MR HEADER"
_CSA_HEADER = "SIEMENS CSA HEADER"
#: More tags or items than this in a CSA header mean a damaged one (nibabel uses the same bound).
_MAX_CSA_ITEMS = 1000
_TAG = struct.Struct("<64si4s3i")
_ITEM = struct.Struct("<4i")


def mosaic_reason(ds: Dataset) -> str:
    """Why ``ds`` is refused as a Siemens mosaic; ``""`` when it is not one."""
    count = _private_count(ds)
    if count is None:
        count = _csa_count(ds)
    if count is None and not _image_type_says_mosaic(ds):
        return ""
    images = f"{count} images" if count else "an unknown number of images"
    return (
        f"Siemens mosaic ({images} in one frame): not supported; export the series as "
        "single-slice images"
    )


def _image_type_says_mosaic(ds: Dataset) -> bool:
    value = ds.get("ImageType") or []
    values = value.split("\\") if isinstance(value, str) else list(value)
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def _private(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    # Most files hold no element of the group at all: a glance at the tags (a few µs) instead
    # of pydicom's private-block lookup, which slices the dataset (about 0.15 ms a call).
    first, end = group << 16, (group + 1) << 16
    # keys(): iterating the dataset itself would decode every element; int(): BaseTag's own
    # comparisons are Python methods, ten times slower than int's
    if not any(first <= tag < end for tag in map(int, ds.keys())):
        return None
    try:
        return ds.private_block(group, creator)[offset].value
    except (KeyError, ValueError):
        return None


def _private_count(ds: Dataset) -> int | None:
    value = _private(ds, 0x0019, _MR_HEADER, 0x0A)
    if isinstance(value, bytes | bytearray):  # VR UN: an unsigned short, little endian
        value = int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    try:
        count = int(value) if value not in (None, "", b"") else None
    except (TypeError, ValueError):
        return None
    return count if count is not None and count > 0 else None


def _csa_count(ds: Dataset) -> int | None:
    data = _private(ds, 0x0029, _CSA_HEADER, 0x10)
    if not isinstance(data, bytes | bytearray):
        return None
    value = read_csa_value(bytes(data), "NumberOfImagesInMosaic")
    try:
        count = int(float(value)) if value else None
    except ValueError:
        return None
    return count if count is not None and count > 0 else None


def read_csa_value(data: bytes, name: str) -> str | None:
    """The first value of the tag ``name`` in a Siemens CSA header (``SV10`` or the older
    format), or ``None`` when it is absent or the header is damaged; nothing here raises."""
    try:
        return _read_csa_value(data, name)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError):
        return None


def _read_csa_value(data: bytes, name: str) -> str | None:
    csa2 = data[:4] == b"SV10"
    pos = 8 if csa2 else 0
    n_tags, _ = struct.unpack_from("<2I", data, pos)
    pos += 8
    if not 0 < n_tags <= _MAX_CSA_ITEMS:
        return None
    first_items = 0
    for tag_no in range(n_tags):
        raw_name, vm, _vr, _syngodt, n_items, _ = _TAG.unpack_from(data, pos)
        pos += _TAG.size
        if not 0 <= n_items <= _MAX_CSA_ITEMS:
            return None
        if tag_no == 1:
            first_items = n_items  # CSA1 item lengths are offset by it (as nibabel reads them)
        tag_name = raw_name.split(b"\x00", 1)[0].decode("latin-1")
        values: list[str] = []
        for _ in range(n_items):
            x0, x1, _x2, _x3 = _ITEM.unpack_from(data, pos)
            pos += _ITEM.size
            length = x1 if csa2 else x0 - first_items
            if length < 0 or pos + length > len(data):
                return None
            values.append(data[pos : pos + length].split(b"\x00", 1)[0].decode("latin-1"))
            pos += length + (-length % 4)
        if tag_name == name:
            found = [v.strip() for v in values[: vm or len(values)] if v.strip()]
            return found[0] if found else None
    return None
