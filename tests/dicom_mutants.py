"""A deterministic corpus of damaged DICOM files, for the ingest probe.

Seeds are the small files pydicom ships in ``pydicom/data/test_files`` (read from the package
folder: ``get_testdata_files`` would try to download pydicom-data's files). Each mutant is one
seed with one kind of damage:

* ``flip``: 1 to 8 bytes replaced by random ones, half of them in the first 1 KB (the header);
* ``truncate``: the file cut at a random offset;
* ``vr``: the VR of a random top-level element replaced by two random letters or bytes;
* ``length``: the length of a random top-level element replaced by 0, an odd or a huge value,
  the undefined length or a neighbour of the true one;
* ``size``: NumberOfFrames, Rows, Columns or BitsAllocated rewritten in place (declared sizes that
  the bytes present do not back).

The same ``seed`` gives the same bytes on every machine.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataelem import RawDataElement

KINDS = ("flip", "truncate", "vr", "length", "size")
#: Seeds larger than this are left out, so the probe stays fast.
MAX_SEED_BYTES = 16_000
_EXTRA_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"}
_EXTRA_LENGTH_VRS |= {b"UR", b"UT", b"UV"}
#: (tag, is the value an IS string) of the declared sizes the ``size`` mutation rewrites
_SIZE_TAGS = {0x00280008: True, 0x00280010: False, 0x00280011: False, 0x00280100: False}


@dataclass(frozen=True)
class Element:
    """Where one top-level element's header and value are in a seed file."""

    tag: int
    value_offset: int
    value_length: int
    vr_offset: int | None  # None for implicit VR
    length_offset: int
    length_size: int  # 2 or 4
    little_endian: bool


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    elements: tuple[Element, ...]


def seed_files() -> list[Path]:
    """pydicom's own small test files that are DICOM (sorted, so the corpus is stable)."""
    folder = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(
        p
        for p in folder.glob("*.dcm")
        if p.stat().st_size <= MAX_SEED_BYTES and p.read_bytes()[128:132] == b"DICM"
    )


def load_seed(path: Path) -> Seed:
    data = path.read_bytes()
    elements: list[Element] = []
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # a seed pydicom cannot parse still gets flips and truncations
        return Seed(path.name, data, ())
    implicit, little = ds.original_encoding
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue
        start = raw.value_tell
        if implicit:
            vr_offset, length_offset, size = None, start - 4, 4
        elif str(raw.VR).encode() in _EXTRA_LENGTH_VRS:
            vr_offset, length_offset, size = start - 8, start - 4, 4
        else:
            vr_offset, length_offset, size = start - 4, start - 2, 2
        header = (vr_offset if vr_offset is not None else length_offset) - 4
        endian = "<" if little else ">"
        tag_bytes = struct.pack(f"{endian}HH", tag.group, tag.element)
        if data[header : header + 4] != tag_bytes or (
            vr_offset is not None and data[vr_offset : vr_offset + 2] != str(raw.VR).encode()
        ):
            continue  # not where the raw element says (deflated, or a mislabelled encoding)
        elements.append(
            Element(int(tag), start, int(raw.length), vr_offset, length_offset, size, bool(little))
        )
    return Seed(path.name, data, tuple(elements))


def mutate(seed: Seed, kind: str, rng: random.Random) -> bytes:
    """One damaged copy of ``seed``."""
    data = bytearray(seed.data)
    if kind == "truncate":
        return bytes(data[: rng.randrange(0, len(data))])
    if kind == "flip" or not seed.elements:
        for _ in range(rng.randint(1, 8)):
            limit = min(len(data), 1024) if rng.random() < 0.5 else len(data)
            data[rng.randrange(limit)] = rng.randrange(256)
        return bytes(data)
    if kind == "size":
        sized = [e for e in seed.elements if e.tag in _SIZE_TAGS]
        if sized:
            element = rng.choice(sized)
            _rewrite_size(data, element, rng)
            return bytes(data)
        kind = "length"
    element = rng.choice(seed.elements)
    if kind == "vr" and element.vr_offset is not None:
        if rng.random() < 0.7:
            vr = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
        else:
            vr = bytes(rng.randrange(256) for _ in range(2))
        data[element.vr_offset : element.vr_offset + 2] = vr
        return bytes(data)
    # length (and vr on implicit files, which have none)
    size = element.length_size
    top = (1 << (8 * size)) - 1
    value = rng.choice(
        [
            0,
            element.value_length + 1,
            max(0, element.value_length - 1),
            element.value_length * 2 + 2,
            top,  # undefined length (4 bytes) or 65535
            top - 1,
            rng.randrange(top),
        ]
    )
    fmt = ("<" if element.little_endian else ">") + ("H" if size == 2 else "I")
    data[element.length_offset : element.length_offset + size] = struct.pack(fmt, min(value, top))
    return bytes(data)


def _rewrite_size(data: bytearray, element: Element, rng: random.Random) -> None:
    start, length = element.value_offset, element.value_length
    if _SIZE_TAGS[element.tag]:  # NumberOfFrames, an IS string: keep its length
        text = str(rng.choice([0, 2, 7, 999, 10**6, 10**9, 10 ** (length - 1)]))[:length]
        data[start : start + length] = text.ljust(length).encode("ascii")
        return
    if length != 2:
        return
    fmt = "<H" if element.little_endian else ">H"
    data[start : start + 2] = struct.pack(fmt, rng.choice([0, 1, 3, 8, 16, 32, 4096, 65535]))


def corpus(count: int, seed: int = 11) -> Iterator[tuple[str, bytes]]:
    """``count`` mutants as ``(file name, bytes)``, the same for the same ``seed``."""
    rng = random.Random(seed)
    seeds = [load_seed(p) for p in seed_files()]
    for i in range(count):
        source = seeds[i % len(seeds)]
        kind = KINDS[(i // len(seeds)) % len(KINDS)]
        yield f"{i:05d}_{kind}_{Path(source.name).stem}.dcm", mutate(source, kind, rng)


def write_corpus(folder: Path, count: int, seed: int = 11) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in corpus(count, seed):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
