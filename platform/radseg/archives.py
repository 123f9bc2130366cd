"""The one guard for zip archives from outside: the upload page and ``radseg ingest x.zip``.

:func:`extract_zip` unpacks an archive into a new folder, all or nothing, or refuses it with one
:class:`UnsafeArchiveError` (an :class:`~radseg.errors.InputError`) whose message is one line:
the archive, the member, what is wrong with it and what to do.

Refused from the central directory, before anything is written:

* more members than ``max_members``;
* names that would land outside the folder (zip-slip: absolute, ``..``, a drive letter, also
  written with backslashes), links and other special files (the Unix mode in the external
  attributes), control characters;
* names a file system cannot hold: a part over :data:`NAME_MAX` bytes, a path over
  ``max_path_bytes``, deeper than ``max_depth`` folders;
* the same path twice, or as both a file and a folder;
* encrypted members and compression methods other than stored, deflate, bzip2 and LZMA;
* declared sizes over the limits below.

The declared sizes are written by whoever made the archive, so they only serve to refuse early.
Every member is then streamed through a byte counter and refused once it has written more than
``max_ratio`` times its compressed size, or the archive more than ``max_ratio`` times its own size
(many members that are each small), or more than ``max_unpacked_bytes`` in all; the ratio checks
start after :data:`RATIO_FLOOR` bytes, since a small blank slice deflates a thousand-fold and is
harmless. A member whose data cannot be decompressed (corrupt deflate, bad CRC, truncated) is
refused naming it, without the decompressor's traceback.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Protocol

from radseg.errors import InputError
from radseg.storage import MAX_NAME_BYTES, atomic_directory

__all__ = [
    "NAME_MAX",
    "RATIO_FLOOR",
    "ArchiveLimits",
    "ArchiveSettings",
    "Unpacked",
    "UnsafeArchiveError",
    "extract_zip",
]

#: bytes in one path component on every common file system (the one rule, in radseg.storage)
NAME_MAX = MAX_NAME_BYTES
#: the ratio checks judge a member, or the archive, once it has unpacked this many bytes
RATIO_FLOOR = 1 << 20
CHUNK = 1 << 20

SUPPORTED_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "LZMA",
}
#: names of the methods other tools write (APPNOTE 4.4.5), for the refusal
OTHER_METHODS = {
    1: "Shrink",
    6: "Implode",
    9: "Deflate64",
    10: "PKWARE Imploding",
    18: "IBM TERSE",
    19: "IBM LZ77",
    93: "Zstandard",
    95: "XZ",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
}
AES_METHOD = 99  # WinZip AES: the real method hides in an extra field behind the encryption
ENCRYPTED_FLAGS = 0x1 | 0x40  # traditional PKWARE encryption | strong encryption

#: what :mod:`zipfile` and its decompressors raise for data they cannot read
UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,  # bz2: "Invalid data stream"
    NotImplementedError,
    RuntimeError,  # encrypted, or a decompressor module missing from this Python
    ValueError,
)


class ArchiveSettings(Protocol):
    """The ``archive_*`` fields of :class:`radseg.settings.Settings`, which takes its defaults
    from :class:`ArchiveLimits`: named here so that this module never imports the settings back.
    """

    @property
    def archive_max_unpacked_bytes(self) -> int: ...
    @property
    def archive_max_members(self) -> int: ...
    @property
    def archive_max_ratio(self) -> float: ...
    @property
    def archive_max_depth(self) -> int: ...
    @property
    def archive_max_path_bytes(self) -> int: ...


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may hold: the ``archive_*`` settings of
    :class:`radseg.settings.Settings`."""

    max_unpacked_bytes: int = 16 << 30
    max_members: int = 100_000
    #: DICOM compresses by at most ~10-fold in practice; 200-fold is a bomb
    max_ratio: float = 200.0
    max_depth: int = 32
    max_path_bytes: int = 1024

    @classmethod
    def from_settings(cls, settings: ArchiveSettings) -> ArchiveLimits:
        return cls(
            max_unpacked_bytes=settings.archive_max_unpacked_bytes,
            max_members=settings.archive_max_members,
            max_ratio=settings.archive_max_ratio,
            max_depth=settings.archive_max_depth,
            max_path_bytes=settings.archive_max_path_bytes,
        )


class UnsafeArchiveError(InputError):
    """An archive that is refused; the message is one line naming the archive and the member.

    :attr:`kind` says why in a fixed word or two (``zip-slip``, ``zip-bomb``...), without any
    name: what an audit trail records (the names in the message may be a patient's).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Unpacked(NamedTuple):
    files: int
    bytes: int


def extract_zip(
    source: Path, dest: Path, limits: ArchiveLimits, *, name: str | None = None
) -> Unpacked:
    """Unpack the zip ``source`` into ``dest`` (which must not exist), all or nothing.

    :param name: the archive's name in messages (default: ``source``'s file name), e.g. the name
        the user uploaded it under.
    :returns: the number of files written and their bytes; folders are made as files need them.
    :raises UnsafeArchiveError: the archive is refused (see the module); ``dest`` is not created.
    """
    source = Path(source)
    shown = name or source.name
    try:
        archive = zipfile.ZipFile(source)
    except (*UNREADABLE, UnicodeDecodeError) as exc:
        raise UnsafeArchiveError(
            f"{shown} is not a readable zip file ({_one_line(exc)}); zip the study folder again "
            "with a standard zip tool",
            "not-a-zip",
        ) from None
    with archive:
        plan = _plan(archive, shown, limits)
        archive_cap = max(RATIO_FLOOR, limits.max_ratio * source.stat().st_size)
        written = 0
        with atomic_directory(dest) as tmp:
            for info, parts in plan:
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                member_cap = max(RATIO_FLOOR, limits.max_ratio * info.compress_size)
                copied = 0
                with target.open("xb") as out:
                    for chunk in _chunks(archive, info, shown):
                        copied += len(chunk)
                        written += len(chunk)
                        if copied > member_cap:
                            raise _bomb(shown, f"{_member(info)} expands", limits)
                        if written > archive_cap:
                            raise _bomb(shown, "its members expand", limits)
                        if written > limits.max_unpacked_bytes:
                            raise _too_big(shown, "unpacks to more than", limits)
                        out.write(chunk)
    return Unpacked(len(plan), written)


def _plan(
    archive: zipfile.ZipFile, shown: str, limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The files to write with their path parts, or the first reason to refuse the archive."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise UnsafeArchiveError(
            f"{shown} has {len(members)} entries; at most {limits.max_members} are accepted "
            "(setting archive_max_members); split the archive",
            "too-many-members",
        )
    files: dict[PurePosixPath, zipfile.ZipInfo] = {}
    folders: set[PurePosixPath] = set()
    declared = 0
    for info in members:
        parts = _parts(info, shown, limits)
        _check_kind(info, shown)
        path = PurePosixPath(*parts) if parts else PurePosixPath()
        if info.is_dir():
            if path in files:
                raise _clash(shown, info, path)
            folders.add(path)
            continue
        if not parts:
            raise UnsafeArchiveError(
                f"{shown}: {_member(info)} has no file name; remove it", "no-name"
            )
        _check_method(info, shown)
        if path in files:
            raise UnsafeArchiveError(
                f"{shown}: {_member(info)} appears twice; remove one of them", "duplicate"
            )
        if path in folders:
            raise _clash(shown, info, path)
        clash = next((parent for parent in path.parents if parent in files), None)
        if clash is not None:
            raise _clash(shown, info, clash)
        folders.update(path.parents)
        if info.file_size > max(RATIO_FLOOR, limits.max_ratio * info.compress_size):
            raise _bomb(shown, f"{_member(info)} declares that it expands", limits)
        declared += info.file_size
        files[path] = info
    if declared > limits.max_unpacked_bytes:
        raise _too_big(shown, f"declares {_size(declared)} unpacked, more than", limits)
    return [(info, path.parts) for path, info in files.items()]


def _parts(info: zipfile.ZipInfo, shown: str, limits: ArchiveLimits) -> tuple[str, ...]:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} would be written outside the folder it is unpacked into "
            "(zip-slip: an absolute path, '..' or a drive letter); zip the study folder with "
            "relative paths",
            "zip-slip",
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} has a control character in its name; rename it",
            "control-character",
        )
    if len(parts) > limits.max_depth:
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} is {len(parts)} levels deep; at most {limits.max_depth} "
            "are accepted (setting archive_max_depth); flatten the folders",
            "too-deep",
        )
    longest = max((len(p.encode("utf-8", "surrogateescape")) for p in parts), default=0)
    if longest > NAME_MAX:
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} has a name {longest} bytes long; a file system takes at "
            f"most {NAME_MAX}; rename it",
            "name-too-long",
        )
    total = len("/".join(parts).encode("utf-8", "surrogateescape"))
    if total > limits.max_path_bytes:
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} has a path {total} bytes long; at most "
            f"{limits.max_path_bytes} are accepted (setting archive_max_path_bytes); shorten it",
            "path-too-long",
        )
    return parts


def _check_kind(info: zipfile.ZipInfo, shown: str) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return
    what = "a symbolic link" if kind == stat.S_IFLNK else "a device, pipe or socket"
    raise UnsafeArchiveError(
        f"{shown}: {_member(info)} is {what}, not a file; zip the files themselves", "not-a-file"
    )


def _check_method(info: zipfile.ZipInfo, shown: str) -> None:
    method = info.compress_type
    if info.flag_bits & ENCRYPTED_FLAGS or method == AES_METHOD:
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} is encrypted; zip the study again without a password",
            "encrypted",
        )
    if method not in SUPPORTED_METHODS:
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} uses compression method {method} "
            f"({OTHER_METHODS.get(method, 'unknown')}), which radseg cannot read; zip it again "
            "with standard (deflate) compression",
            "compression-method",
        )


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> Iterator[bytes]:
    """The member's bytes as they are decompressed; a refusal naming it if they cannot be."""
    try:
        with archive.open(info) as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except UNREADABLE as exc:
        # `from None`: the decompressor's chained traceback says nothing more, at great length
        raise UnsafeArchiveError(
            f"{shown}: {_member(info)} is damaged and cannot be unpacked ({_one_line(exc)}); "
            "copy or zip the study again",
            "damaged",
        ) from None


def _bomb(shown: str, what: str, limits: ArchiveLimits) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{shown}: {what} more than {limits.max_ratio:.0f}-fold, which no DICOM study does "
        "(zip bomb?); if the archive is genuine, unpack it yourself and ingest the folder",
        "zip-bomb",
    )


def _too_big(shown: str, what: str, limits: ArchiveLimits) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{shown} {what} the {_size(limits.max_unpacked_bytes)} accepted (setting "
        "archive_max_unpacked_bytes); split it, or unpack it yourself and ingest the folder",
        "too-big",
    )


def _clash(shown: str, info: zipfile.ZipInfo, path: PurePosixPath) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{shown}: {_member(info)} makes {_shorten(str(path))!r} both a file and a folder; "
        "rename one of them",
        "file-and-folder",
    )


def _member(info: zipfile.ZipInfo) -> str:
    """The member's name for a one-line message: quoted, escaped, long names shortened."""
    return f"member {_shorten(info.filename)!r}"


def _shorten(name: str) -> str:
    return name if len(name) <= 80 else f"{name[:40]}...{name[-30:]}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
