"""What each role sees of a job, for the jobs pages, the prediction page and the JSON API.

Who sees what (:func:`job_view`), never an absolute server path (:mod:`radseg.web.redact`):

- clinicians: their own jobs and the model work whose output they review (train, predict,
  evaluate): kind, state, progress, time left, message and times; no payload, result, owner,
  or log;
- researchers: every job with its owner and attempts; payload, result and log of their own;
- admins: everything.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy import select

from radseg.db.models import Job, JobEvent, JobGangMember, JobState, ModelVersion
from radseg.errors import PermissionDenied
from radseg.jobs.eta import estimate, remaining_text
from radseg.roles import OPERATORS, Actor, shows_job_details
from radseg.web import charts, curves
from radseg.web.auth import clock
from radseg.web.context import current_platform, db
from radseg.web.redact import PathRedactor
from radseg.web.shapes import iso

#: how often the page asks for fresh job states
POLL_MS = 2000


def redactor() -> PathRedactor:
    return _redactor(current_platform().home)


@functools.lru_cache(maxsize=8)
def _redactor(home: Path) -> PathRedactor:
    return PathRedactor(home)


def job_view(job: Job, viewer: Actor) -> dict[str, Any]:
    """What ``viewer`` may see of ``job``, as JSON, with server paths made relative or hidden."""
    paths = redactor()
    eta = estimate(db(), job, clock())
    view: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "state": JobState(job.state).value,
        "progress": round(float(job.progress or 0.0), 4),
        # a running job's estimate (radseg.jobs.eta); null when there is none
        "eta_seconds": None if eta is None else round(eta),
        "eta": None if eta is None else remaining_text(eta),
        "message": paths.text(job.message or ""),
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
    if viewer.may(OPERATORS):
        view.update(attempts=job.attempts, max_attempts=job.max_attempts, created_by=job.created_by)
        if job.machines > 1:  # a gang job: the machines that joined it, by rank
            members = db().scalars(
                select(JobGangMember)
                .where(JobGangMember.job_id == job.id)
                .order_by(JobGangMember.rank)
            )
            view.update(
                machines=job.machines, gang=[{"rank": m.rank, "machine": m.host} for m in members]
            )
    if shows_job_details(job, viewer):
        view.update(payload=paths.value(job.payload), result=paths.value(job.result))
    return view


def event_view(event: JobEvent, viewer: Actor) -> dict[str, Any]:
    """One state change of a job; clinicians do not see who made it."""
    return {
        "created_at": event.created_at,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "actor": event.actor if viewer.may(OPERATORS) else "",
        "message": redactor().text(event.message or ""),
    }


def read_log(job: Job, viewer: Actor, offset: int) -> tuple[str, int]:
    """The job's log from byte ``offset`` (the job store's log files), and the next offset.

    Only for viewers :func:`~radseg.roles.shows_job_details` allows; paths in it are made
    relative or hidden.
    """
    from radseg.jobs.logs import read_job_log

    if not shows_job_details(job, viewer):
        raise PermissionDenied("only the job's owner and admins read its log")
    text, next_offset = read_job_log(current_platform().settings, job.id, offset)
    return redactor().text(text), next_offset


#: the kinds of job that train a model in ``models/job-<id>/``
TRAINING_KINDS = ("train", "retrain")


def _training_folder(job: Job) -> Path:
    return current_platform().path("models", f"job-{job.id}")


def job_charts_etag(job: Job) -> str:
    """What the job's charts are drawn from, as an ETag: the size and time of its two files and
    the model version it made, so that a page polling unchanged charts gets a 304, not a
    render."""
    folder = _training_folder(job)
    key: list[object] = [job.id, (job.result or {}).get("model_version_id")]
    for name in ("metrics.json", "history.json"):
        try:
            found = (folder / name).stat()
            key.append((found.st_size, found.st_mtime_ns))
        except FileNotFoundError:
            key.append(None)
    return hashlib.sha1(repr(key).encode(), usedforsecurity=False).hexdigest()[:24]


def job_curves(job: Job) -> curves.Curves | None:
    """A training job's loss and validation Dice by iteration (:mod:`radseg.web.curves`);
    ``None`` for other kinds. The validations are the run's ``history.json`` while it runs,
    else the history its model version keeps."""
    if job.kind not in TRAINING_KINDS:
        return None
    folder = _training_folder(job)
    validations = curves.read_validations(folder / "history.json")
    version_id = (job.result or {}).get("model_version_id")
    if not validations and isinstance(version_id, int):
        version = db().get(ModelVersion, version_id)
        if version is not None:
            validations = (version.history or {}).get("validations") or []
    return curves.training_curves(folder / "metrics.json", validations)


def job_charts(job: Job) -> list[Markup]:
    """The training job's charts (:func:`radseg.web.charts.training_charts`); none for others."""
    found = job_curves(job)
    return [] if found is None else charts.training_charts(found)
