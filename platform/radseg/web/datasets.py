"""The datasets area: the datasets page (with the forms that train, predict and evaluate) and
the form that builds a dataset's next version.

Each form calls one use case (:mod:`radseg.workflows`) and leads to the queued job's page,
where its progress, log and result appear.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Dataset, ModelVersion, Study
from radseg.imaging.channels import WINDOW_PRESETS, parse_windows
from radseg.roles import OPERATORS
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.outcomes import form_refusals, queued
from radseg.web.validation import form_ids
from radseg.workflows.datasets import check_seed, request_build
from radseg.workflows.evaluation import EVALUATION_SPLITS

bp = Blueprint("datasets", __name__)

#: the most recent studies the page offers to build from or predict
STUDIES_OFFERED = 500


@bp.get("/datasets")
@roles_required(*OPERATORS)
def datasets() -> Any:
    session = db()
    platform = current_platform()
    backends = {
        name: list(platform.plugins.models.get(name).architectures)
        for name in platform.plugins.models
    }
    return render_template(
        "datasets.html",
        datasets=session.scalars(
            select(Dataset).options(joinedload(Dataset.versions)).order_by(Dataset.name)
        )
        .unique()
        .all(),
        studies=session.scalars(
            select(Study)
            .options(joinedload(Study.series))
            .order_by(Study.id.desc())
            .limit(STUDIES_OFFERED)
        )
        .unique()
        .all(),
        model_versions=session.scalars(
            select(ModelVersion)
            .options(joinedload(ModelVersion.model))
            .order_by(ModelVersion.id.desc())
        ).all(),
        backends=backends,
        splits=EVALUATION_SPLITS,
        presets=list(WINDOW_PRESETS),
    )


@bp.post("/datasets/build")
@roles_required(*OPERATORS)
@form_refusals("datasets.datasets")
def build_dataset() -> Any:
    name = request.form.get("name", "").strip()
    job = request_build(
        current_platform(),
        current_actor(),
        name=name,
        recipe=parse_windows(request.form.get("channels", "soft_tissue,lung,bone")),
        seed=check_seed(request.form.get("seed", "")),
        study_ids=form_ids("study"),
    )
    return queued(job, f"Building dataset {name!r}")
