"""The jobs pages, and what each role sees of a job (the JSON API uses the same views).

The page renders the rows once; the script then polls ``GET /api/jobs`` and updates them, so a
running training job's progress bar moves without a reload.

Who sees what (:func:`job_view`), never an absolute server path (:mod:`radseg.web.redact`):

- clinicians: their own jobs and the model work whose output they review (train, predict,
  evaluate): kind, state, progress, time left, message and times; no payload, result, owner,
  or log;
- researchers: every job with its owner and attempts; payload, result and log of their own;
- admins: everything.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for

from radseg.db.models import Job, JobEvent, JobState
from radseg.errors import PermissionDenied
from radseg.jobs.eta import estimate, remaining_text
from radseg.roles import OPERATORS, VIEWERS, Actor, shows_job_details
from radseg.web import curves
from radseg.web.auth import clock, current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.redact import PathRedactor
from radseg.web.schemas import JobsPageQuery
from radseg.web.shapes import iso
from radseg.web.validation import query_args
from radseg.workflows.jobs import cancel_job, recent_jobs, retry_job, visible_job

bp = Blueprint("jobs", __name__)

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


def job_curves(job: Job) -> dict[str, list[list[float]]]:
    if job.kind != "train":
        return {}
    metrics_file = current_platform().path("models", f"job-{job.id}", "metrics.json")
    return curves.read_curves(metrics_file, job.result)


@bp.get("/jobs")
@roles_required(*VIEWERS)
def list_jobs() -> Any:
    limit = query_args(JobsPageQuery).limit
    viewer = current_actor()
    return render_template(
        "jobs.html",
        jobs=[job_view(j, viewer) for j in recent_jobs(db(), viewer, limit=limit)],
        limit=limit,
        poll_ms=POLL_MS,
        show_owner=viewer.may(OPERATORS),
    )


@bp.get("/jobs/<int:job_id>")
@roles_required(*VIEWERS)
def job_page(job_id: int) -> Any:
    viewer = current_actor()
    job = visible_job(db(), viewer, job_id)
    return render_template(
        "job.html",
        job=job_view(job, viewer),
        events=[event_view(e, viewer) for e in job.events],
        can_operate=viewer.may(OPERATORS),
        details=shows_job_details(job, viewer),
        poll_ms=POLL_MS,
    )


@bp.post("/jobs/<int:job_id>/cancel")
@roles_required(*OPERATORS)
def cancel(job_id: int) -> Any:
    job = cancel_job(current_platform(), current_actor(), job_id)
    flash(f"Job {job_id}: {redactor().text(job.message) or job.state.value}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job_id), 303)


@bp.post("/jobs/<int:job_id>/retry")
@roles_required(*OPERATORS)
def retry(job_id: int) -> Any:
    job = retry_job(current_platform(), current_actor(), job_id)
    flash(f"Job {job_id} is queued again as job {job.id}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job.id), 303)
