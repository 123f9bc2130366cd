"""The datasets area: the Research page (choose studies; build, train, predict, evaluate) and
the form that builds a dataset's next version.

Studies are chosen the way the studies list finds them: a search, filters and a sort, a page at
a time (:func:`radseg.workflows.studies.study_rows`). The chooser is a GET form, so its page
buttons carry the ticked studies (``?study=``, at most :data:`MAX_TICKED`) from page to page;
its build and predict buttons post the same form and act on the ticked studies or on every study
the search matches (:func:`radseg.web.study_choice.chosen_study_ids`).

Each form calls one use case (:mod:`radseg.workflows`) and leads to the queued job's page,
where its progress, log and result appear.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg.db.models import Dataset, Model, ModelVersion
from radseg.errors import InputError
from radseg.imaging.channels import WINDOW_PRESETS, parse_windows
from radseg.roles import OPERATORS
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.outcomes import form_refusals, queued
from radseg.web.paging import Pager
from radseg.web.schemas import ResearchPageQuery
from radseg.web.study_choice import MAX_TICKED, chosen_study_ids
from radseg.web.validation import bad_request, query_args, query_ids
from radseg.workflows.datasets import check_seed, request_build
from radseg.workflows.evaluation import EVALUATION_SPLITS
from radseg.workflows.studies import (
    STUDY_SHOWS,
    STUDY_SORTS,
    modalities_present,
    study_rows,
)

bp = Blueprint("datasets", __name__)

#: the newest model versions the predict and evaluate forms suggest (any other is typed)
MODEL_VERSIONS_OFFERED = 100


@bp.get("/datasets")
@roles_required(*OPERATORS)
def datasets() -> Any:
    session = db()
    platform = current_platform()
    args = query_args(ResearchPageQuery)
    try:
        ticked = query_ids("study", at_most=MAX_TICKED)
    except InputError as exc:
        bad_request(exc)
    listed = study_rows(session, args.filters(), args.window())
    shown = {row.study.id for row in listed.rows}
    backends = {
        name: list(platform.plugins.models.get(name).architectures)
        for name in platform.plugins.models
    }
    return render_template(
        "datasets.html",
        args=args,
        rows=listed.rows,
        pager=Pager.of(listed, args),
        ticked=set(ticked),
        max_ticked=MAX_TICKED,
        # ticked on other pages: carried as hidden fields
        ticked_elsewhere=[i for i in ticked if i not in shown],
        modalities=modalities_present(session),
        shows=STUDY_SHOWS,
        sorts=STUDY_SORTS,
        datasets=session.scalars(
            select(Dataset).options(joinedload(Dataset.versions)).order_by(Dataset.name)
        )
        .unique()
        .all(),
        model_versions=session.execute(
            select(ModelVersion.id, Model.name, ModelVersion.status)
            .join(Model, ModelVersion.model_id == Model.id)
            .order_by(ModelVersion.id.desc())
            .limit(MODEL_VERSIONS_OFFERED)
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
        study_ids=chosen_study_ids(),
    )
    return queued(job, f"Building dataset {name!r}")
