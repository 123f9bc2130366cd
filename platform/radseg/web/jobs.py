"""The jobs page: state, kind, progress and message of recent jobs, refreshed by ``jobs.js``.

The page renders the rows once; the script then polls ``GET /api/jobs`` and updates them, so a
running training job's progress bar moves without a reload.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.db.models import Job, JobState
from radseg.web.auth import VIEWERS, roles_required
from radseg.web.context import db

bp = Blueprint("jobs", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
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
    }


@bp.get("/jobs")
@roles_required(*VIEWERS)
def list_jobs() -> Any:
    limit = request.args.get("limit", DEFAULT_LIMIT, type=int) or DEFAULT_LIMIT
    return render_template(
        "jobs.html",
        jobs=[job_to_dict(j) for j in recent_jobs(db(), limit=limit)],
        limit=limit,
        poll_ms=POLL_MS,
    )
