"""Raw uploads: the identifiable files a web upload leaves for its ingest job, and their end.

A web upload is written to ``RADSEG_HOME/uploads/<name>/`` (:func:`store_upload`, zips
unpacked; the use case is :func:`radseg.workflows.uploads.submit_upload`) and its ingest job's
payload names it (``"upload": name``). Those files still carry the patient's name, ID, birth
date and UIDs, so they go as soon as they are not needed (DESIGN §9):

* when the ingest job ends — succeeded, failed for good, cancelled — the worker that recorded
  the end removes the folder (:func:`discard_upload`); so does a cancel of a queued job;
* a job that is retried keeps it (the next attempt reads it);
* :func:`reap_uploads` removes every folder no queued or running job needs: those whose job
  ended (a worker that died, a cancel seen by no worker) at once, and those with no job at all
  (a web process that died between writing the files and queueing the job, a half-written
  upload's temporary folder) once nothing in them changed for ``grace_seconds``. The worker
  runs it every :data:`REAP_INTERVAL_SECONDS`; ``radseg uploads reap`` runs it by hand.

Nothing here removes anything outside ``RADSEG_HOME/uploads`` (:meth:`Platform.remove`), and
a path the CLI was given (``radseg ingest PATH``) is never an upload: only the payload's
``upload`` name, checked as one plain path component, is.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from werkzeug.utils import secure_filename

from radseg.archives import ArchiveLimits, extract_zip
from radseg.core import Platform
from radseg.db.models import Job, JobState
from radseg.errors import InputError
from radseg.storage import UnsafePathError, atomic_directory

log = logging.getLogger(__name__)

#: the folder under RADSEG_HOME that holds raw uploads
UPLOADS = "uploads"
#: how often a worker looks for uploads to remove (seconds)
REAP_INTERVAL_SECONDS = 60.0

_LIVE = (JobState.QUEUED, JobState.RUNNING)
#: bytes copied at a time from an uploaded stream
CHUNK = 1 << 20


def upload_name(payload: dict[str, Any]) -> str | None:
    """The upload an ingest payload reads, or ``None`` (a path given to the CLI, a query)."""
    name = payload.get("upload")
    return str(name) if name else None


def upload_path(platform: Platform, payload: dict[str, Any]) -> Path:
    """The folder an ingest job reads: its upload's (checked), else the payload's ``path``.

    :raises InputError: the upload is gone — it was removed when an earlier job for it ended
        (a resubmitted job); the message says to upload again.
    """
    name = upload_name(payload)
    if name is None:
        return Path(payload["path"])
    folder = platform.path(UPLOADS, name)
    if not folder.is_dir():
        raise InputError(
            f"upload {name} is no longer stored: raw uploads are removed when their ingest job "
            "ends, so that nothing identifiable stays; upload the files again"
        )
    return folder


def discard_upload(platform: Platform, job: Job) -> bool:
    """Remove the upload of ``job`` if it is an ingest job that has ended; whether one was."""
    if job.kind != "ingest" or not job.state.is_final:
        return False
    name = upload_name(job.payload or {})
    if name is None:
        return False
    try:
        removed = platform.remove(platform.path(UPLOADS, name), within=UPLOADS)
    except UnsafePathError as exc:
        log.error("job %s: its upload name was refused: %s", job.id, exc)
        return False
    except OSError as exc:  # the reaper tries again later
        log.error("job %s: could not remove its upload %s: %s", job.id, name, exc)
        return False
    if removed:
        log.info("job %s %s: upload %s removed", job.id, job.state.value, name)
    return removed


def reap_uploads(
    platform: Platform, *, grace_seconds: float, now: float | None = None
) -> list[str]:
    """Remove the uploads no queued or running job needs (see the module doc); their names.

    :param grace_seconds: how long an upload without any job is kept after its last change
        (the web request that wrote it may still be queueing its job).
    """
    root = platform.path(UPLOADS)
    if not root.is_dir():
        return []
    entries = sorted(root.iterdir())
    if not entries:
        return []
    now = time.time() if now is None else now
    doomed: list[tuple[Path, int | None]] = []
    with platform.sessions() as session:
        live = {
            upload_name(payload or {})
            for payload in session.scalars(
                select(Job.payload).where(Job.kind == "ingest", Job.state.in_(_LIVE))
            )
        }
        for entry in entries:
            if entry.name in live:
                continue
            # only an ended job counts: one queued since `live` was read (PostgreSQL reads each
            # statement afresh) is not "ended", and its new upload is within the grace period
            ended = session.scalar(
                select(Job.id)
                .where(
                    Job.kind == "ingest",
                    Job.state.not_in(_LIVE),
                    Job.payload["upload"].as_string() == entry.name,
                )
                .limit(1)
            )
            if ended is None and now - _last_change(entry) < grace_seconds:
                continue
            doomed.append((entry, ended))
    removed: list[str] = []
    for entry, ended in doomed:  # outside the transaction: deleting takes time
        try:
            platform.remove(entry, within=UPLOADS)
        except OSError as exc:
            log.error("could not remove upload %s: %s", entry.name, exc)
            continue
        removed.append(entry.name)
        log.info(
            "upload %s removed (%s)",
            entry.name,
            f"its job {ended} ended" if ended is not None else "no job used it",
        )
    return removed


def _last_change(entry: Path) -> float:
    """The newest modification time in ``entry`` (a folder being written is still changing)."""
    try:
        newest = entry.lstat().st_mtime
        if entry.is_dir() and not entry.is_symlink():
            for path in entry.rglob("*"):
                newest = max(newest, path.lstat().st_mtime)
    except FileNotFoundError:  # removed meanwhile (by a worker that saw its job end)
        return 0.0
    return newest


def store_upload(
    files: list[tuple[str, IO[bytes]]], uploads_root: Path, limits: ArchiveLimits
) -> tuple[Path, int]:
    """Write the uploaded files (zips unpacked, others as they are) into a new folder under
    ``uploads_root``, all or nothing; the folder and the number of files in it.

    Zips go through :func:`radseg.archives.extract_zip`, the one guard every zip from outside
    passes (zip-slip, links, zip bombs by size or ratio, damaged or encrypted members, names a
    file system cannot hold); the zips of one upload share ``limits.max_unpacked_bytes``.
    """
    if not files:
        raise InputError("choose a .zip of a study folder, or the DICOM files themselves")
    target = uploads_root / uuid.uuid4().hex
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
