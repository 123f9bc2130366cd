"""Serialise a de-identified dataset back to DICOM Part 10 bytes, quickly.

Storing the de-identified originals was the largest single cost of an ingest: pydicom's
``dcmwrite`` spends tens of microseconds of Python on every element, raw or not. Most elements
of a slice are still the undecoded raw elements pydicom read; most of the others are short ASCII
strings that de-identification rewrote (UIDs, dates, names) or numbers the reader decoded.
:func:`part10_bytes` writes those with one ``struct.pack`` each and hands everything else
(sequences, floats, undefined lengths, non-ASCII text) to pydicom's own ``write_data_element``;
the preamble and file meta are written by pydicom. The output is byte-for-byte what
``pydicom.dcmwrite`` gives (tested on pydicom's test files, as read and de-identified); datasets
it does not handle (no preamble, big endian, deflate, an encoding or character set that differs
from the one read) go to ``dcmwrite``.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID

__all__ = ["part10_bytes"]

#: Explicit VRs with a 4-byte length (after 2 reserved bytes), PS3.5 Table 7.1-1.
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
#: Decoded text VRs written here when their values are plain ASCII: value(s) joined by ``\\``,
#: padded to an even length (UI with NUL, the others with a space), exactly as pydicom does.
_TEXT_VRS = frozenset({"UI", "DA", "DT", "TM", "CS", "SH", "LO", "PN", "AS"})
#: Decoded numbers written here: DS/IS from their original strings, binary integers packed.
_NUMBER_VRS = frozenset({"DS", "IS"})
#: Decoded byte values (e.g. native PixelData once accessed) written as they are when even.
_BYTES_VRS = frozenset({"OB", "OW"})
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
_UNDEFINED = 0xFFFFFFFF
_GROUP_LENGTH = 0x00020000
_SHORT = struct.Struct("<HH2sH").pack
_LONG = struct.Struct("<HH2s2xI").pack
_IMPLICIT = struct.Struct("<HHI").pack


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` as Part 10 bytes, identical to ``pydicom.dcmwrite(buffer, ds)``."""
    meta = getattr(ds, "file_meta", None)
    syntax = UID(meta.get("TransferSyntaxUID", "")) if meta is not None else None
    if (
        syntax is None
        or not syntax.is_transfer_syntax
        or getattr(ds, "preamble", None) is None
        or not syntax.is_little_endian
        or syntax.is_deflated
        or ds.original_encoding != (syntax.is_implicit_VR, syntax.is_little_endian)
        or ds.original_character_set != ds._character_set
    ):
        return _dcmwrite(ds)
    implicit = bool(syntax.is_implicit_VR)
    head = DicomBytesIO()
    head.is_little_endian = True
    head.is_implicit_VR = False
    head.write(ds.preamble)
    head.write(b"DICM")
    out = [head.getvalue(), _file_meta(meta)]  # type: ignore[arg-type]
    encodings = ds.get("SpecificCharacterSet") or default_encoding
    tags = [
        tag
        for tag in sorted(ds.keys())
        # file meta stored in the dataset and retired group lengths: dcmwrite skips them too
        if not (tag.group == 0x0002 or (tag.element == 0 and tag.group > 6))
    ]
    _write_elements(ds, tags, implicit, encodings, out)
    return b"".join(out)


def _file_meta(meta: FileMetaDataset) -> bytes:
    """The file meta group as ``write_file_meta_info(..., enforce_standard=False)`` writes it
    (always explicit VR little endian), with its group length recomputed; pydicom's own writer
    took about as long as the rest of a slice."""
    tags = sorted(meta.keys())
    if any(tag.group != 0x0002 for tag in tags):
        head = DicomBytesIO()
        head.is_little_endian = True
        head.is_implicit_VR = False
        write_file_meta_info(head, meta, enforce_standard=False)  # raises the usual error
        return head.getvalue()
    parts: list[bytes] = []
    _write_elements(meta, [t for t in tags if t != _GROUP_LENGTH], False, default_encoding, parts)
    body = b"".join(parts)
    if _GROUP_LENGTH not in meta:
        return body
    meta.FileMetaInformationGroupLength = len(body)  # pydicom updates it the same way
    return _SHORT(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", len(body)) + body


def _write_elements(
    ds: Dataset, tags: list[Any], implicit: bool, encodings: Any, out: list[bytes]
) -> None:
    """Append the encoded elements ``tags`` of ``ds`` to ``out``."""
    for tag in tags:
        elem = ds.get_item(tag)
        vr = elem.VR
        value: Any = elem.value
        if isinstance(elem, RawDataElement):
            if elem.length == _UNDEFINED or value is None or (not implicit and not vr):
                out.append(_element(ds, tag, implicit, encodings))
                continue
            data = value
        elif (
            vr in _BYTES_VRS
            and isinstance(value, bytes)
            and len(value) % 2 == 0
            and not elem.is_undefined_length
        ):
            # native pixel data the reader decoded: pydicom writes the bytes as they are
            data = value
        elif vr in _TEXT_VRS or vr in _NUMBER_VRS or vr in _BINARY_FORMATS:
            data = _encoded(value, vr)
            if data is None:
                out.append(_element(ds, tag, implicit, encodings))
                continue
        else:
            out.append(_element(ds, tag, implicit, encodings))
            continue
        length = len(data)
        if implicit:
            out.append(_IMPLICIT(tag.group, tag.elem, length))
        elif vr in _LONG_VRS:
            out.append(_LONG(tag.group, tag.elem, vr.encode(), length))
        elif vr and len(vr) == 2 and length <= 0xFFFF:
            out.append(_SHORT(tag.group, tag.elem, vr.encode(), length))
        else:
            out.append(_element(ds, tag, implicit, encodings))
            continue
        out.append(data)


def _encoded(value: Any, vr: str) -> bytes | None:
    """The encoded value of a decoded element, or ``None`` to let pydicom write it."""
    if value is None or (isinstance(value, str) and value == ""):
        return b""
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if vr in _BINARY_FORMATS:
        if not all(isinstance(v, int) for v in values):
            return None
        try:
            return struct.pack(f"<{len(values)}{_BINARY_FORMATS[vr]}", *values)
        except struct.error:
            return None
    if vr in _NUMBER_VRS:
        # decoded DS/IS keep the string they were read from; pydicom writes that back
        if not all(isinstance(getattr(v, "original_string", None), str) for v in values):
            return None
        parts = [v.original_string for v in values]
    elif all(isinstance(v, str) for v in values) or vr in ("PN", "DA", "DT", "TM"):
        parts = [str(v) for v in values]
    else:
        return None
    text = "\\".join(parts)
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _element(ds: Dataset, tag: Any, implicit: bool, encodings: Any) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    # exactly what dcmwrite does: raw elements are written as they were read
    write_data_element(buffer, ds.get_item(tag), encodings)
    return buffer.getvalue()


def _dcmwrite(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()
