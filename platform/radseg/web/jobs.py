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

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.db.models import Job, JobEvent, JobState, Role
from radseg.errors import JobError
from radseg.jobs import store
from radseg.jobs.eta import estimate, remaining_text
from radseg.web import curves
from radseg.web.auth import VIEWERS, WebUser, clock, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.redact import PathRedactor
from radseg.web.schemas import JobsPageQuery
from radseg.web.validation import DEFAULT_LIMIT, MAX_LIMIT, query_args
from radseg.workflows.uploads import discard_upload

#: who may start, cancel and retry jobs
OPERATORS = (Role.ADMIN, Role.RESEARCHER)
#: the kinds of other people's jobs a clinician sees: the model work whose output they review
CLINICIAN_KINDS = ("train", "predict", "evaluate")

bp = Blueprint("jobs", __name__)

#: how often the page asks for fresh job states
POLL_MS = 2000


def visible_to(viewer: WebUser) -> ColumnElement[bool] | None:
    """The SQL condition for the jobs ``viewer`` may see (``None``: all of them)."""
    if viewer.role == Role.CLINICIAN:
        return or_(Job.created_by == viewer.username, Job.kind.in_(CLINICIAN_KINDS))
    return None


def may_see(job: Job, viewer: WebUser) -> bool:
    return viewer.role != Role.CLINICIAN or (
        job.created_by == viewer.username or job.kind in CLINICIAN_KINDS
    )


def shows_details(job: Job, viewer: WebUser) -> bool:
    """Whether ``viewer`` sees the job's payload, result and log."""
    return viewer.role == Role.ADMIN or (
        viewer.role == Role.RESEARCHER and job.created_by == viewer.username
    )


def recent_jobs(
    session: Session,
    viewer: WebUser,
    *,
    state: JobState | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(min(max(limit, 1), MAX_LIMIT))
    if state is not None:
        query = query.where(Job.state == state)
    condition = visible_to(viewer)
    if condition is not None:
        query = query.where(condition)
    return list(session.scalars(query))


def redactor() -> PathRedactor:
    return _redactor(current_platform().home)


@functools.lru_cache(maxsize=8)
def _redactor(home: Path) -> PathRedactor:
    return PathRedactor(home)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_view(job: Job, viewer: WebUser) -> dict[str, Any]:
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
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
    if viewer.role in OPERATORS:
        view.update(attempts=job.attempts, max_attempts=job.max_attempts, created_by=job.created_by)
    if shows_details(job, viewer):
        view.update(payload=paths.value(job.payload), result=paths.value(job.result))
    return view


def event_view(event: JobEvent, viewer: WebUser) -> dict[str, Any]:
    """One state change of a job; clinicians do not see who made it."""
    return {
        "created_at": event.created_at,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "actor": event.actor if viewer.role in OPERATORS else "",
        "message": redactor().text(event.message or ""),
    }


def read_log(job: Job, offset: int) -> tuple[str, int]:
    """The job's log from byte ``offset`` (the job store's log files), and the next offset.

    Only for viewers :func:`shows_details` allows; paths in it are made relative or hidden.
    """
    from radseg.jobs.logs import read_job_log

    if not shows_details(job, web_user()):
        abort(403, "only the job's owner and admins read its log")
    text, next_offset = read_job_log(current_platform().settings, job.id, offset)
    return redactor().text(text), next_offset


def job_curves(job: Job) -> dict[str, list[list[float]]]:
    if job.kind != "train":
        return {}
    metrics_file = current_platform().path("models", f"job-{job.id}", "metrics.json")
    return curves.read_curves(metrics_file, job.result)


def get_job(job_id: int) -> Job:
    """The job, if the logged-in user may see it (404 otherwise: its existence is not told)."""
    job = db().get(Job, job_id)
    if job is None or not may_see(job, web_user()):
        abort(404, f"there is no job {job_id}")
    return job


def get_retryable_job(job_id: int) -> Job:
    """The job, if the logged-in user may retry it: a retry copies the payload into a job of
    the person who retries, so only those who see the payload (its owner, an admin) may."""
    job = get_job(job_id)
    if not shows_details(job, web_user()):
        abort(
            403,
            f"job {job_id} is {job.created_by or 'another person'}'s: only its owner or an admin "
            "can retry it (a retry copies its inputs); queue your own job instead",
        )
    return job


@bp.get("/jobs")
@roles_required(*VIEWERS)
def list_jobs() -> Any:
    limit = query_args(JobsPageQuery).limit
    viewer = web_user()
    return render_template(
        "jobs.html",
        jobs=[job_view(j, viewer) for j in recent_jobs(db(), viewer, limit=limit)],
        limit=limit,
        poll_ms=POLL_MS,
        show_owner=viewer.role in OPERATORS,
    )


@bp.get("/jobs/<int:job_id>")
@roles_required(*VIEWERS)
def job_page(job_id: int) -> Any:
    job = get_job(job_id)
    viewer = web_user()
    return render_template(
        "job.html",
        job=job_view(job, viewer),
        events=[event_view(e, viewer) for e in job.events],
        can_operate=viewer.role in OPERATORS,
        details=shows_details(job, viewer),
        poll_ms=POLL_MS,
    )


@bp.post("/jobs/<int:job_id>/cancel")
@roles_required(*OPERATORS)
def cancel(job_id: int) -> Any:
    session = db()
    try:
        job = store.cancel(session, job_id, web_user().username)
    except JobError as exc:
        abort(404, str(exc))
    audit.record(session, web_user().username, "job.cancel", f"job:{job.id}")
    session.commit()
    discard_upload(current_platform(), job)  # a queued ingest ended here: its upload goes now
    flash(f"Job {job_id}: {redactor().text(job.message) or job.state.value}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job_id), 303)


@bp.post("/jobs/<int:job_id>/retry")
@roles_required(*OPERATORS)
def retry(job_id: int) -> Any:
    session = db()
    get_retryable_job(job_id)
    try:
        job = store.resubmit(session, job_id, web_user().username)
    except JobError as exc:
        abort(409 if "only a finished job" in str(exc) else 404, str(exc))
    audit.record(session, web_user().username, "job.retry", f"job:{job.id}", retry_of=job_id)
    session.commit()
    flash(f"Job {job_id} is queued again as job {job.id}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job.id), 303)
