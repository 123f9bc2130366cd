"""The training area: the forms that train a model, predict studies with a model version and
evaluate one (their page is the datasets page, :mod:`radseg.web.datasets`).

Each form calls one use case (:mod:`radseg.workflows`); a refusal goes back to the form with
the reason (:mod:`radseg.web.outcomes`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, request, url_for

from radseg.errors import InputError
from radseg.roles import OPERATORS
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform
from radseg.web.outcomes import form_refusals, queued
from radseg.web.study_choice import chosen_study_ids
from radseg.web.validation import form_id
from radseg.workflows.evaluation import request_evaluation
from radseg.workflows.prediction import request_predictions
from radseg.workflows.training import request_training

bp = Blueprint("training", __name__)

#: where a refused form goes back to when the browser sent no referrer
FORMS_PAGE = "datasets.datasets"


def _whole_number(name: str) -> int | None:
    """A form field's whole number, ``None`` when it is empty; :class:`InputError` otherwise."""
    text = request.form.get(name, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise InputError(f"{name} must be a positive whole number")
    return int(text)


@bp.post("/train")
@roles_required(*OPERATORS)
@form_refusals(FORMS_PAGE)
def train() -> Any:
    dataset = request.form.get("dataset", "")
    job = request_training(
        current_platform(),
        current_actor(),
        dataset=dataset,
        backend=request.form.get("backend", ""),
        architecture=request.form.get("architecture", "").strip() or None,
        iterations=_whole_number("iterations"),
    )
    return queued(job, f"Training on {dataset!r}")


@bp.post("/predict")
@roles_required(*OPERATORS)
@form_refusals(FORMS_PAGE)
def predict() -> Any:
    model_version_id = form_id("model_version")
    if model_version_id is None:
        raise InputError("choose a model version and at least one study")
    jobs = request_predictions(
        current_platform(),
        current_actor(),
        model_version_id=model_version_id,
        study_ids=chosen_study_ids(),
    )
    if len(jobs) > 1:
        flash(f"{len(jobs)} prediction jobs are queued.", "info")
        return redirect(url_for("jobs.list_jobs"), 303)
    return queued(jobs[0], "Prediction")


@bp.post("/evaluate")
@roles_required(*OPERATORS)
@form_refusals(FORMS_PAGE)
def evaluate() -> Any:
    model_version_id = form_id("model_version")
    if model_version_id is None:
        raise InputError("choose a model version")
    job = request_evaluation(
        current_platform(),
        current_actor(),
        model_version_id=model_version_id,
        split=request.form.get("split", "test"),
        dataset_version_id=form_id("dataset_version"),
    )
    return queued(job, "Evaluation")
