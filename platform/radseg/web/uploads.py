"""Uploaded studies: a folder per upload for the ingest job, zips unpacked into it.

Zips go through :func:`radseg.archives.extract_zip`, the one guard every zip from outside passes
(zip-slip, links, zip bombs by size or ratio, damaged or encrypted members, names a file system
cannot hold): a refused zip is an :class:`~radseg.archives.UnsafeArchiveError` with a one-line
reason, and nothing of the upload is kept.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import IO

from werkzeug.utils import secure_filename

from radseg.archives import ArchiveLimits, extract_zip
from radseg.errors import InputError
from radseg.storage import atomic_directory

CHUNK = 1 << 20


def new_upload_dir(root: Path) -> Path:
    return root / uuid.uuid4().hex


def store_upload(
    files: list[tuple[str, IO[bytes]]], uploads_root: Path, limits: ArchiveLimits
) -> tuple[Path, int]:
    """Write the uploaded files (zips unpacked, others as they are) into a new folder under
    ``uploads_root``, all or nothing; the folder and the number of files in it.

    The zips of one upload share ``limits.max_unpacked_bytes``.
    """
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
                unpacked = extract_zip(raw, tmp / f"zip-{n}", limits, name=name)
                limits = dataclasses.replace(
                    limits, max_unpacked_bytes=limits.max_unpacked_bytes - unpacked.bytes
                )
                count += unpacked.files
                raw.unlink()
            else:
                with (tmp / f"{n:05d}-{name}").open("wb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
                count += 1
        staging.rmdir()
    return target, count
