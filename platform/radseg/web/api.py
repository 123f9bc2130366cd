"""A minimal JSON API for the pages' scripts and for scripts of users (session cookie login).

``GET /api/jobs?state=&limit=`` and ``GET /api/studies?limit=&offset=``; errors are JSON too.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request

from radseg.db.models import JobState
from radseg.web.auth import VIEWERS, roles_required
from radseg.web.context import db
from radseg.web.jobs import DEFAULT_LIMIT, MAX_LIMIT, job_to_dict, recent_jobs
from radseg.web.studies import study_rows

bp = Blueprint("api", __name__, url_prefix="/api")


def _limit() -> int:
    limit = request.args.get("limit", DEFAULT_LIMIT, type=int)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        abort(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


@bp.get("/jobs")
@roles_required(*VIEWERS)
def jobs() -> Any:
    raw_state = request.args.get("state")
    state = None
    if raw_state:
        try:
            state = JobState(raw_state)
        except ValueError:
            valid = ", ".join(s.value for s in JobState)
            abort(400, f"unknown state {raw_state!r}; valid states are: {valid}")
    rows = recent_jobs(db(), state=state, limit=_limit())
    return jsonify(jobs=[job_to_dict(job) for job in rows])


@bp.get("/studies")
@roles_required(*VIEWERS)
def studies() -> Any:
    offset = request.args.get("offset", 0, type=int)
    if offset is None or offset < 0:
        abort(400, "offset must be a non-negative integer")
    rows = study_rows(db(), limit=_limit(), offset=offset)
    return jsonify(studies=[row.to_dict() for row in rows])
