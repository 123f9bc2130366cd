"""Uploaded studies: safe unpacking of zips and a folder per upload for the ingest job.

A zip is refused, before anything is written, when a member would land outside the upload
folder (zip-slip: absolute paths, ``..``, drive letters, links) or when it would unpack to
more than the limits allow (zip-bomb: total size, member count, or a compression ratio no DICOM
file reaches). Sizes are checked against the declared sizes first and again while unpacking,
since the declared sizes are written by whoever made the zip.
"""

from __future__ import annotations

import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from werkzeug.utils import secure_filename

from radseg.errors import InputError
from radseg.storage import atomic_directory

CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    max_unpacked_bytes: int = 8 << 30
    max_members: int = 100_000
    #: DICOM compresses by at most ~10x in practice; 200x is a bomb
    max_ratio: float = 200.0


class UnsafeUploadError(InputError):
    """A zip that would write outside its folder or unpack to too much."""


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UnsafeUploadError(
            f"the zip holds {name!r}, a path outside the upload folder (zip-slip); "
            "zip the study folder itself, with relative paths"
        )
    return path


def check_zip(archive: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The members to unpack (files only), or :class:`UnsafeUploadError` saying why not."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise UnsafeUploadError(
            f"the zip has {len(members)} entries; at most {limits.max_members} are accepted"
        )
    files = []
    total = 0
    for info in members:
        _member_path(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeUploadError(f"the zip holds a symbolic link {info.filename!r}; remove it")
        if info.is_dir():
            continue
        total += info.file_size
        if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            raise UnsafeUploadError(
                f"{info.filename!r} expands {info.file_size / info.compress_size:.0f}-fold, "
                f"more than the {limits.max_ratio:.0f}-fold any DICOM file does (zip bomb?)"
            )
        files.append(info)
    if total > limits.max_unpacked_bytes:
        raise UnsafeUploadError(
            f"the zip unpacks to {total / 2**30:.1f} GiB; at most "
            f"{limits.max_unpacked_bytes / 2**30:.1f} GiB are accepted (zip bomb?)"
        )
    return files


def unpack_zip(source: Path, dest: Path, limits: UploadLimits) -> int:
    """Unpack ``source`` into ``dest`` (created); the number of files written."""
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise InputError(f"{source.name} is not a readable zip file") from None
    with archive:
        files = check_zip(archive, limits)
        written = 0
        for info in files:
            target = dest.joinpath(*_member_path(info.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as out:
                written += _copy_limited(
                    src, out, limits.max_unpacked_bytes - written, info.filename
                )
    return len(files)


def _copy_limited(src: IO[bytes], out: IO[bytes], budget: int, name: str) -> int:
    copied = 0
    while chunk := src.read(CHUNK):
        copied += len(chunk)
        if copied > budget:
            # the declared size lied: stop before the disk fills
            raise UnsafeUploadError(f"{name!r} unpacks to more than its declared size (zip bomb?)")
        out.write(chunk)
    return copied


def new_upload_dir(root: Path) -> Path:
    return root / uuid.uuid4().hex


def store_upload(
    files: list[tuple[str, IO[bytes]]], uploads_root: Path, limits: UploadLimits
) -> tuple[Path, int]:
    """Write the uploaded files (zips unpacked, others as they are) into a new folder under
    ``uploads_root``, all or nothing; the folder and the number of files in it."""
    if not files:
        raise InputError("choose a .zip of a study folder, or the DICOM files themselves")
    target = new_upload_dir(uploads_root)
    uploads_root.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_directory(target) as tmp:
        staging = tmp / ".incoming"
        staging.mkdir()
        for n, (filename, stream) in enumerate(files):
            name = secure_filename(filename) or f"file-{n}"
            if name.lower().endswith(".zip"):
                raw = staging / f"{n}.zip"
                with raw.open("wb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
                count += unpack_zip(raw, tmp / f"zip-{n}", limits)
                raw.unlink()
            else:
                with (tmp / f"{n:05d}-{name}").open("wb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
                count += 1
        staging.rmdir()
    return target, count
