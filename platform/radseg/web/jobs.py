"""The jobs pages: the list, a job's page, cancel and retry.

The page renders the rows once; the script then polls ``GET /api/jobs`` and updates them, so a
running training job's progress bar moves without a reload. What each role sees of a job:
:mod:`radseg.web.job_views`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from radseg.db.models import JobState
from radseg.roles import OPERATORS, VIEWERS, shows_job_details
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.job_views import (
    POLL_MS,
    event_view,
    job_charts,
    job_charts_etag,
    job_view,
    redactor,
)
from radseg.web.paging import Pager
from radseg.web.schemas import JobsPageQuery
from radseg.web.validation import query_args
from radseg.workflows.jobs import JOB_SORTS, cancel_job, job_kinds, job_list, retry_job, visible_job

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@roles_required(*VIEWERS)
def list_jobs() -> Any:
    args = query_args(JobsPageQuery)
    kinds = job_kinds(current_platform())
    viewer = current_actor()
    listed = job_list(db(), viewer, args.filters(kinds), args.window())
    window = listed.window
    return render_template(
        "jobs.html",
        jobs=[job_view(j, viewer) for j in listed.rows],
        pager=Pager.of(listed, args),
        args=args,
        kinds=kinds,
        states=[s.value for s in JobState],
        sorts=JOB_SORTS,
        # the script polls the API for the same rows: the same filters, limit and offset
        poll_url=url_for(
            "api.jobs",
            **args.model_dump(mode="json", exclude_defaults=True, exclude={"page", "per_page"}),
            limit=window.limit,
            offset=window.offset,
        ),
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
        charts=job_charts(job),
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


@bp.get("/jobs/<int:job_id>/charts")
@roles_required(*VIEWERS)
def job_charts_fragment(job_id: int) -> Any:
    """The training curves of the job's page as an HTML fragment, which its script fetches
    again while the job runs (the same charts the page was rendered with)."""
    job = visible_job(db(), current_actor(), job_id)
    response = Response(mimetype="text/html")
    response.cache_control.private = True
    response.cache_control.no_cache = True  # the browser asks again each time, with the ETag
    etag = job_charts_etag(job)
    response.set_etag(etag)
    if request.if_none_match.contains(etag):
        response.status_code = 304
        return response
    response.set_data(render_template("training_charts.html", charts=job_charts(job)))
    return response
