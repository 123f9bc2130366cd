"""``/api/jobs``: list, start, follow, cancel and retry jobs.

``POST /api/jobs`` starts a build-dataset, train, predict or evaluate job through the same use
cases as the pages and the CLI (an ingest starts with an upload, on the web page).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify

from radseg.db.models import Job
from radseg.imaging.channels import ChannelRecipe
from radseg.roles import OPERATORS, VIEWERS
from radseg.web.api import VIA, bp
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.job_views import job_curves, job_view, read_log
from radseg.web.schemas import (
    BuildDatasetJob,
    EvaluateJob,
    JobRequest,
    JobsQuery,
    LogQuery,
    PredictJob,
    TrainJob,
)
from radseg.web.validation import json_body, query_args
from radseg.workflows.datasets import request_build
from radseg.workflows.evaluation import request_evaluation
from radseg.workflows.jobs import cancel_job as cancel
from radseg.workflows.jobs import job_kinds, job_list, visible_job
from radseg.workflows.jobs import retry_job as retry
from radseg.workflows.prediction import request_predictions
from radseg.workflows.training import request_training


@bp.get("/jobs")
@roles_required(*VIEWERS)
def jobs() -> Any:
    args = query_args(JobsQuery)
    viewer = current_actor()
    filters = args.filters(job_kinds(current_platform()))
    listed = job_list(db(), viewer, filters, args.window())
    return jsonify(jobs=[job_view(job, viewer) for job in listed.rows], page=listed.meta())


def _start(wanted: BuildDatasetJob | TrainJob | PredictJob | EvaluateJob) -> Job:
    platform, actor = current_platform(), current_actor()
    if isinstance(wanted, BuildDatasetJob):
        return request_build(platform, actor, name=wanted.dataset, recipe=ChannelRecipe(), via=VIA)
    if isinstance(wanted, TrainJob):
        return request_training(
            platform,
            actor,
            dataset=wanted.dataset,
            backend=wanted.backend,
            architecture=wanted.architecture,
            iterations=wanted.iterations,
            via=VIA,
            machines=wanted.machines,
            gpus_per_machine=wanted.gpus_per_machine,
        )
    if isinstance(wanted, PredictJob):
        (job,) = request_predictions(
            platform,
            actor,
            model_version_id=wanted.model_version_id,
            series_ids=[wanted.series_id],
            via=VIA,
        )
        return job
    return request_evaluation(
        platform, actor, model_version_id=wanted.model_version_id, split=wanted.split, via=VIA
    )


@bp.post("/jobs")
@roles_required(*OPERATORS)
def submit_job() -> Any:
    """Start a build-dataset, train, predict or evaluate job (ingest: upload on the web page)."""
    job = _start(json_body(JobRequest).root)
    return jsonify(job_view(job, current_actor())), 201


@bp.get("/jobs/<int:job_id>")
@roles_required(*VIEWERS)
def job(job_id: int) -> Any:
    viewer = current_actor()
    return jsonify(job_view(visible_job(db(), viewer, job_id), viewer))


@bp.get("/jobs/<int:job_id>/log")
@roles_required(*OPERATORS)
def job_log(job_id: int) -> Any:
    viewer = current_actor()
    found = visible_job(db(), viewer, job_id)
    text, next_offset = read_log(found, viewer, query_args(LogQuery).offset)
    return jsonify(text=text, next_offset=next_offset)


@bp.get("/jobs/<int:job_id>/curves")
@roles_required(*VIEWERS)
def job_curves_json(job_id: int) -> Any:
    return jsonify(curves=job_curves(visible_job(db(), current_actor(), job_id)))


@bp.post("/jobs/<int:job_id>/cancel")
@roles_required(*OPERATORS)
def cancel_job(job_id: int) -> Any:
    found = cancel(current_platform(), current_actor(), job_id, via=VIA)
    return jsonify(job_view(found, current_actor()))


@bp.post("/jobs/<int:job_id>/retry")
@roles_required(*OPERATORS)
def retry_job(job_id: int) -> Any:
    new = retry(current_platform(), current_actor(), job_id, via=VIA)
    return jsonify(job_view(new, current_actor())), 201
