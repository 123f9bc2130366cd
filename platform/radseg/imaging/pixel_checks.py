"""Declared image sizes checked against the bytes present, before anything is allocated or decoded.

A DICOM header says how large its pixels are (Rows x Columns x SamplesPerPixel x BitsAllocated x
NumberOfFrames); the decoders believe it and allocate the whole output first. An 8 KB file that
declares a million frames then costs seconds of CPU and hundreds of MB before anything fails,
and a header whose Rows disagree with the compressed codestream can crash a native decoder. So,
for every file, before decoding:

* BitsAllocated is 1 or a multiple of 8 and BitsStored is not larger;
* the decoded size must stay under :data:`MAX_DECODED_BYTES`;
* native pixel data must hold at least the bytes the header declares;
* encapsulated pixel data must hold at least one fragment per frame, every fragment within the
  bytes present, and an offset table (basic or extended) with one entry per frame when it has
  any;
* the first frame's codestream header (JPEG and JPEG-LS SOF, JPEG 2000 SIZ, RLE segment count)
  must agree with Rows, Columns and SamplesPerPixel.

:func:`check_pixel_data` raises :class:`DamagedPixelData`, whose message names what disagrees.
"""

from __future__ import annotations

import struct
import zlib
from itertools import pairwise
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, RLELossless

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_INFLATE_RATIO",
    "DamagedPixelData",
    "InflateRefused",
    "check_deflated",
    "check_pixel_data",
]

#: The largest decoded pixel data radseg accepts from one instance (2 GiB: 1,000 frames of
#: 1024² at 16 bits, or 4,000 CT slices of 512²).
MAX_DECODED_BYTES = 2 * 1024**3

_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
#: JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC) and JPEG-LS SOF55.
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_JPEG_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    }
)
_J2K_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",  # HTJ2K
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


#: A deflated dataset may inflate to at most this many times its compressed size, past its first
#: MiB: a CT slice deflates 2- to 20-fold, a deflate bomb thousands-fold.
MAX_INFLATE_RATIO = 200
_RATIO_FREE_BYTES = 1 << 20
_INFLATE_CHUNK = 1 << 20


class DamagedPixelData(ValueError):
    """The header's declared image size is not backed by the pixel data present."""


class InflateRefused(ValueError):
    """A deflated dataset that would inflate beyond the limits (a deflate bomb)."""


def check_deflated(path: Path) -> None:
    """Refuse a Deflated Explicit VR Little Endian file whose dataset inflates too far.

    pydicom inflates a deflated dataset whole, in memory, before anything can look at it; a
    few hundred KB can declare gigabytes. Here the dataset after the file meta is inflated in
    bounded chunks that are counted and dropped, and refused once it passes
    :data:`MAX_INFLATE_RATIO` times its compressed size (past the first MiB) or
    :data:`MAX_DECODED_BYTES`. Files of other transfer syntaxes, and files whose file meta or
    deflate stream cannot be read (the reader reports those), pass unchecked.

    :raises InflateRefused: with the sizes, in words.
    """
    if _meta_says_not_deflated(path):
        return
    try:
        meta = read_file_meta_info(path)
    except Exception:  # no Part 10 file meta: not deflated (deflate needs one); the reader decides
        return
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    group_length = meta.get("FileMetaInformationGroupLength")
    size = path.stat().st_size
    # preamble and "DICM" (132 bytes), the group length element (12), the rest of the file meta
    start = 132 + 12 + int(group_length) if isinstance(group_length, int) else size
    compressed = max(size - start, 0)
    limit = min(MAX_DECODED_BYTES, max(_RATIO_FREE_BYTES, MAX_INFLATE_RATIO * compressed))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        try:
            while not inflater.eof:
                data = inflater.unconsumed_tail or fh.read(1 << 16)
                if not data:
                    break
                inflated += len(inflater.decompress(data, _INFLATE_CHUNK))
                if inflated > limit:
                    raise InflateRefused(
                        f"the deflated dataset inflates to more than {limit:,} bytes from "
                        f"{compressed:,} (the limit is {MAX_INFLATE_RATIO} times its size past the "
                        "first MiB, and 2 GiB): a deflate bomb or a damaged file"
                    )
        except zlib.error:
            return  # a damaged stream: pydicom's own read reports it


#: the usual start of a Part 10 file meta: FileMetaInformationGroupLength (0002,0000) UL 4
_GROUP_LENGTH_START = b"DICM\x02\x00\x00\x00UL\x04\x00"
_DEFLATED_UID = DeflatedExplicitVRLittleEndian.encode("ascii")
_HEAD_BYTES = 4096


def _meta_says_not_deflated(path: Path) -> bool:
    """Whether the file meta, read from the file's first 4 KiB, cannot name the deflated
    transfer syntax: it starts with its group length, ends within those bytes and nowhere holds
    the deflated syntax's UID. ``False`` (decide by parsing the file meta) otherwise.

    Every file went through pydicom's file meta reader here and then again in ``dcmread``; the
    parse is kept for the files this glance cannot clear.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return False
    if head[128:140] != _GROUP_LENGTH_START or len(head) < 144:
        return False
    end = 144 + int.from_bytes(head[140:144], "little")
    return end <= len(head) and _DEFLATED_UID not in head[132:end]


def check_pixel_data(ds: Dataset, n_frames: int, syntax: UID | None) -> None:
    """Refuse pixel data whose declared size the bytes present do not back; see the module doc.

    :param n_frames: NumberOfFrames as the reader understood it (at least 1).
    :param syntax: the transfer syntax, ``None`` when the file had no file meta (native).
    :raises DamagedPixelData: with what disagrees, in words.
    """
    rows, columns = _positive(ds, "Rows"), _positive(ds, "Columns")
    samples = _positive(ds, "SamplesPerPixel", default=1)
    bits = _positive(ds, "BitsAllocated")
    if bits != 1 and bits % 8:
        raise DamagedPixelData(f"BitsAllocated is {bits}, not 1 or a multiple of 8")
    stored = _positive(ds, "BitsStored", default=bits)
    if stored > bits:
        raise DamagedPixelData(f"BitsStored ({stored}) is larger than BitsAllocated ({bits})")
    pixels = n_frames * rows * columns * samples
    decoded = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    if decoded > MAX_DECODED_BYTES:
        raise DamagedPixelData(
            f"the header declares {n_frames} frame(s) of {rows}x{columns}x{samples} at {bits} "
            f"bits ({decoded / 1024**3:.1f} GiB decoded), over the "
            f"{MAX_DECODED_BYTES // 1024**3} GiB limit per instance"
        )
    data = ds.PixelData
    if syntax is None or not syntax.is_compressed:
        if len(data) < decoded:
            raise DamagedPixelData(
                f"pixel data holds {len(data)} bytes but the header declares {decoded} "
                f"({n_frames} frame(s) of {rows}x{columns}x{samples} at {bits} bits): the file "
                "is truncated or its header damaged"
            )
        return
    offsets, fragments = _fragments(memoryview(data))  # views: no copy of the pixel data
    extended = ds.get("ExtendedOffsetTable")
    if extended is not None and len(extended) != 8 * n_frames:
        raise DamagedPixelData(
            f"the extended offset table has {len(extended) // 8} entries for {n_frames} frame(s)"
        )
    if offsets and len(offsets) != n_frames:
        raise DamagedPixelData(
            f"the basic offset table has {len(offsets)} entries for {n_frames} frame(s)"
        )
    if len(fragments) < n_frames:
        raise DamagedPixelData(
            f"the header declares {n_frames} frame(s) but the encapsulated pixel data holds "
            f"{len(fragments)} fragment(s); a frame needs at least one"
        )
    if not fragments:
        raise DamagedPixelData("the encapsulated pixel data holds no fragment")
    _check_codestream(str(syntax), bytes(fragments[0]), rows, columns, samples, bits)


def _positive(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DamagedPixelData(f"{keyword} is missing or not a number") from None
    if number < 1:
        raise DamagedPixelData(f"{keyword} is {number}")
    return number


def _fragments(data: memoryview) -> tuple[list[int], list[memoryview]]:
    """The basic offset table and the fragments of encapsulated pixel data (PS3.5 A.4), each
    checked to lie within ``data``."""
    position, offsets, fragments = 0, [], []
    first = True
    while position + 8 <= len(data):
        tag, length = _tag_and_length(data, position)
        position += 8
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            raise DamagedPixelData(
                f"encapsulated pixel data holds an element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                "where an item was expected"
            )
        if length == 0xFFFFFFFF or position + length > len(data):
            raise DamagedPixelData(
                f"an encapsulated pixel data item declares {length} bytes, "
                f"{len(data) - position} are present: the file is truncated or damaged"
            )
        value = data[position : position + length]
        position += length
        if first:
            if length % 4:
                raise DamagedPixelData("the basic offset table's length is not a multiple of 4")
            offsets = list(struct.unpack(f"<{length // 4}I", value))
            first = False
        else:
            fragments.append(value)
    if first:
        raise DamagedPixelData("the encapsulated pixel data has no basic offset table item")
    return offsets, fragments


def _tag_and_length(data: bytes | memoryview, position: int) -> tuple[int, int]:
    group, element, length = struct.unpack_from("<HHI", data, position)
    return (group << 16) | element, length


def _check_codestream(
    syntax: str, fragment: bytes, rows: int, columns: int, samples: int, bits: int
) -> None:
    """The first frame's codestream header against Rows, Columns and SamplesPerPixel."""
    if syntax in _JPEG_SYNTAXES:
        found = _jpeg_frame_header(fragment)
        kind = "JPEG-LS" if syntax.startswith("1.2.840.10008.1.2.4.8") else "JPEG"
    elif syntax in _J2K_SYNTAXES:
        found = _j2k_frame_header(fragment)
        kind = "JPEG 2000"
    elif syntax == RLELossless:
        _check_rle(fragment, samples, bits)
        return
    else:
        return  # a syntax whose header radseg does not parse: the decoder checks
    if found is None:
        raise DamagedPixelData(f"the first frame's {kind} codestream has no readable frame header")
    height, width, components, precision = found
    if (height, width, components) != (rows, columns, samples) or precision > bits:
        raise DamagedPixelData(
            f"the header declares {rows}x{columns}x{samples} at {bits} bits but the {kind} "
            f"codestream holds {height}x{width}x{components} at {precision} bits"
        )


def _jpeg_frame_header(src: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, precision) from a JPEG or JPEG-LS SOF segment."""
    if src[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(src):
        if src[position] != 0xFF:
            return None
        marker = src[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", src, position + 2)
        if marker in _SOF:
            if position + 10 > len(src):
                return None
            precision = src[position + 4]
            height, width = struct.unpack_from(">HH", src, position + 5)
            return height, width, src[position + 9], precision
        position += 2 + length
    return None


def _j2k_frame_header(src: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, precision) from a JPEG 2000 SIZ segment (ISO 15444-1 A.5.1),
    in a bare codestream or a JP2 file."""
    start = src.find(b"\xff\x4f\xff\x51")
    if start < 0 or start + 42 > len(src):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", src, start + 8)
    (components,) = struct.unpack_from(">H", src, start + 40)
    if start + 43 > len(src) or xsiz <= xosiz or ysiz <= yosiz:
        return None
    precision = (src[start + 42] & 0x7F) + 1
    return ysiz - yosiz, xsiz - xosiz, components, precision


def _check_rle(fragment: bytes, samples: int, bits: int) -> None:
    """The RLE header (PS3.5 G.5): one segment per sample and byte, offsets within the frame."""
    if len(fragment) < 64:
        raise DamagedPixelData("the first RLE frame is shorter than its 64-byte header")
    header = struct.unpack_from("<16I", fragment)
    expected = samples * max(1, bits // 8)
    if header[0] != expected:
        raise DamagedPixelData(
            f"the first RLE frame holds {header[0]} segment(s); {samples} sample(s) at {bits} "
            f"bits need {expected}"
        )
    offsets = header[1 : 1 + expected]
    if offsets[0] != 64 or any(b <= a for a, b in pairwise(offsets)):
        raise DamagedPixelData("the first RLE frame's segment offsets are out of order")
    if offsets[-1] >= len(fragment):
        raise DamagedPixelData("the first RLE frame's segment offsets point past its end")
