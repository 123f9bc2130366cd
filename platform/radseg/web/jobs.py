"""The jobs page: state, kind, progress and message of recent jobs, refreshed by ``jobs.js``.

The page renders the rows once; the script then polls ``GET /api/jobs`` and updates them, so a
running training job's progress bar moves without a reload.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.db.models import Job, JobState, Role
from radseg.errors import JobError
from radseg.jobs import store
from radseg.web import curves
from radseg.web.auth import VIEWERS, roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.schemas import JobsPageQuery
from radseg.web.validation import DEFAULT_LIMIT, MAX_LIMIT, query_args

#: who may start, cancel and retry jobs
OPERATORS = (Role.ADMIN, Role.RESEARCHER)

bp = Blueprint("jobs", __name__)

#: how often the page asks for fresh job states
POLL_MS = 2000


def recent_jobs(
    session: Session, *, state: JobState | None = None, limit: int = DEFAULT_LIMIT
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(min(max(limit, 1), MAX_LIMIT))
    if state is not None:
        query = query.where(Job.state == state)
    return list(session.scalars(query))


def job_to_dict(job: Job) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "kind": job.kind,
        "state": JobState(job.state).value,
        "progress": round(float(job.progress or 0.0), 4),
        "message": job.message,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "payload": job.payload,
        "result": job.result,
    }


def read_log(job_id: int, offset: int) -> tuple[str, int]:
    """The job's log from byte ``offset`` (the job store's log files), and the next offset."""
    from radseg.jobs.logs import read_job_log

    return read_job_log(current_platform().settings, job_id, offset)


def job_curves(job: Job) -> dict[str, list[list[float]]]:
    if job.kind != "train":
        return {}
    metrics_file = current_platform().path("models", f"job-{job.id}", "metrics.json")
    return curves.read_curves(metrics_file, job.result)


def get_job(job_id: int) -> Job:
    job = db().get(Job, job_id)
    if job is None:
        abort(404, f"there is no job {job_id}")
    return job


@bp.get("/jobs")
@roles_required(*VIEWERS)
def list_jobs() -> Any:
    limit = query_args(JobsPageQuery).limit
    return render_template(
        "jobs.html",
        jobs=[job_to_dict(j) for j in recent_jobs(db(), limit=limit)],
        limit=limit,
        poll_ms=POLL_MS,
    )


@bp.get("/jobs/<int:job_id>")
@roles_required(*VIEWERS)
def job_page(job_id: int) -> Any:
    job = get_job(job_id)
    return render_template(
        "job.html",
        job=job_to_dict(job),
        events=job.events,
        can_operate=web_user().role in OPERATORS,
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
    flash(f"Job {job_id}: {job.message or job.state.value}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job_id), 303)


@bp.post("/jobs/<int:job_id>/retry")
@roles_required(*OPERATORS)
def retry(job_id: int) -> Any:
    session = db()
    try:
        job = store.resubmit(session, job_id, web_user().username)
    except JobError as exc:
        abort(409 if "only a finished job" in str(exc) else 404, str(exc))
    audit.record(session, web_user().username, "job.retry", f"job:{job.id}", retry_of=job_id)
    session.commit()
    flash(f"Job {job_id} is queued again as job {job.id}.", "info")
    return redirect(url_for("jobs.job_page", job_id=job.id), 303)
