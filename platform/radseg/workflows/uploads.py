"""The upload use case: a researcher's files become an upload folder and the ingest job that
reads it. Where the folder lives and when it goes: :mod:`radseg.workflows.upload_folders`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from radseg import audit
from radseg.archives import ArchiveLimits, UnsafeArchiveError
from radseg.core import Platform
from radseg.db.models import Job
from radseg.errors import InputError
from radseg.roles import OPERATORS, Actor, require_role
from radseg.workflows.datasets import usable_dataset_name
from radseg.workflows.jobs import queue_job
from radseg.workflows.upload_folders import UPLOADS, store_upload


@dataclass(frozen=True)
class UploadQueued:
    """An accepted upload: the ingest job that reads it, how many files it holds, its folder's
    name under ``RADSEG_HOME/uploads``."""

    job: Job
    files: int
    folder: str


def submit_upload(
    platform: Platform,
    actor: Actor,
    files: list[tuple[str, IO[bytes]]],
    *,
    dataset: str | None = None,
) -> UploadQueued:
    """Store uploaded files (zips unpacked safely) and queue the ingest job that reads them.

    A refusal (bad dataset name, no files, an unsafe or unreadable zip) is audited as
    ``upload.refused`` with its reason in fixed words, then raised as :class:`InputError`: the
    message, which names uploaded files and archive members (a patient's name, maybe), goes to
    the uploader only, never to the append-only audit trail.
    """
    require_role(actor, OPERATORS, "upload studies")
    reason = "dataset-name"
    try:
        if dataset:
            with platform.sessions() as session:
                usable_dataset_name(session, dataset)
        reason = "no-files" if not files else "upload"
        limits = ArchiveLimits.from_settings(platform.settings)
        folder, count = store_upload(files, platform.path(UPLOADS), limits)
    except InputError as exc:
        if isinstance(exc, UnsafeArchiveError):
            reason = exc.kind
        with platform.sessions.begin() as session:
            audit.record(session, actor.username, "upload.refused", reason=reason)
        raise
    # "upload" names the folder (no server path in the payload): the worker reads it and
    # removes it when the job ends (discard_upload)
    payload: dict[str, Any] = {"upload": folder.name, "source": "dicom-folder"}
    if dataset:
        payload["dataset"] = dataset
    target = f"upload:{folder.name}"
    with platform.sessions.begin() as session:
        job = queue_job(session, platform, actor, "ingest", payload, target=target)
        audit.record(session, actor.username, "upload", target, files=count, job=job.id)
    return UploadQueued(job=job, files=count, folder=folder.name)
