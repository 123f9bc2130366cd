"""Hostile zip archives, built in memory, for every path that unpacks a zip.

Each case is an archive a user could send (by the upload page or ``radseg ingest x.zip``) and
the words the one-line refusal must contain. The web upload and the CLI ingest run the same
cases (tests/unit/test_archives.py), so a path that stops using the guard fails them.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zipfile
from dataclasses import dataclass

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    #: words the refusal must contain
    reason: str


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _patch_first(
    data: bytes,
    *,
    flags: int | None = None,
    method: int | None = None,
    crc: int | None = None,
    size: int | None = None,
) -> bytes:
    """The first member's local and central headers rewritten: what a damaged or foreign zip
    tool leaves, which :mod:`zipfile` cannot write itself."""
    out = bytearray(data)
    local, central = out.find(LOCAL), out.find(CENTRAL)
    assert local >= 0 and central >= 0
    for at, offset in ((local, 6), (central, 8)):  # general purpose flags; method and CRC follow
        if flags is not None:
            struct.pack_into("<H", out, at + offset, flags)
        if method is not None:
            struct.pack_into("<H", out, at + offset + 2, method)
        if crc is not None:
            struct.pack_into("<I", out, at + offset + 8, crc)
        if size is not None:  # the uncompressed size
            struct.pack_into("<I", out, at + offset + 16, size)
    return bytes(out)


def corrupt_deflate() -> bytes:
    """A member whose deflate stream starts with a reserved block type (``zlib.error``)."""
    noise = random.Random(0).randbytes(8000)  # incompressible: no ratio check gets there first
    data = bytearray(zip_bytes({"study/slice.dcm": noise}))
    at = data.find(LOCAL)
    name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
    size = struct.unpack_from("<I", data, at + 18)[0]
    start = at + 30 + name_len + extra_len
    data[start : start + size] = b"\xff" * size
    return bytes(data)


def duplicate_names() -> bytes:
    buffer = io.BytesIO()
    with (
        warnings.catch_warnings(),
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": that is the point
        archive.writestr("study/a.dcm", b"first")
        archive.writestr("study/a.dcm", b"second")
    return buffer.getvalue()


def symlink() -> bytes:
    info = zipfile.ZipInfo("study/link.dcm")
    info.create_system = 3
    info.external_attr = (0o120777) << 16  # S_IFLNK | rwx
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def many_small_members() -> bytes:
    """A bomb made of members that each stay under the per-member floor of the ratio check:
    the archive as a whole expands far beyond the ratio."""
    return zip_bytes({f"study/{n:03d}.dcm": bytes(768 << 10) for n in range(64)})


def hostile_archives() -> list[Hostile]:
    """Every hostile case both paths must refuse with a one-line reason."""
    return [
        Hostile("slip-dotdot", zip_bytes({"../../etc/evil.dcm": b"x"}), "outside"),
        Hostile("slip-inner", zip_bytes({"study/../../evil.dcm": b"x"}), "outside"),
        Hostile("slip-absolute", zip_bytes({"/tmp/evil.dcm": b"x"}), "outside"),
        Hostile("slip-drive", zip_bytes({"C:/evil.dcm": b"x"}), "outside"),
        Hostile("slip-backslash", zip_bytes({"..\\..\\evil.dcm": b"x"}), "outside"),
        Hostile("symlink", symlink(), "link"),
        Hostile("bomb-ratio", zip_bytes({"study/zeros.dcm": bytes(24 << 20)}), "zip bomb"),
        Hostile("bomb-many", many_small_members(), "zip bomb"),
        Hostile("corrupt-deflate", corrupt_deflate(), "damaged"),
        Hostile(
            "bad-crc",
            _patch_first(zip_bytes({"study/a.dcm": b"DICM" * 100}), crc=0x12345678),
            "damaged",
        ),
        Hostile(
            "lying-size",
            _patch_first(zip_bytes({"study/a.dcm": random.Random(1).randbytes(8000)}), size=100),
            "damaged",
        ),
        Hostile(
            "encrypted",
            _patch_first(zip_bytes({"study/a.dcm": b"DICM" * 100}), flags=0x1),
            "encrypted",
        ),
        Hostile(
            "deflate64",
            _patch_first(zip_bytes({"study/a.dcm": b"DICM" * 100}), method=9),
            "Deflate64",
        ),
        Hostile(
            "unknown-method",
            _patch_first(zip_bytes({"study/a.dcm": b"DICM" * 100}), method=77),
            "compression method 77",
        ),
        Hostile("file-then-folder", zip_bytes({"study/a": b"x", "study/a/b.dcm": b"y"}), "both"),
        Hostile("folder-then-file", zip_bytes({"study/a/b.dcm": b"y", "study/a": b"x"}), "both"),
        Hostile("duplicate", duplicate_names(), "twice"),
        Hostile("long-name", zip_bytes({"study/" + "n" * 300 + ".dcm": b"x"}), "long"),
        Hostile("deep-path", zip_bytes({"d/" * 2000 + "f.dcm": b"x"}), "deep"),
        Hostile("not-a-zip", b"PK\x03\x04 not really a zip", "not a readable zip"),
        Hostile("truncated", zip_bytes({"study/a.dcm": b"DICM" * 100})[:60], "not a readable zip"),
    ]
