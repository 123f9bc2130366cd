"""The researcher's workflow: upload studies, build dataset versions, train, predict, evaluate.

Each action queues a job (the worker does the work) and leads to that job's page, where its
progress, log and result (e.g. the ingest report) appear. Uploads are unpacked safely first
(:mod:`radseg.web.uploads`); the ingest job reads the upload's folder.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from radseg import audit
from radseg.archives import ArchiveLimits, UnsafeArchiveError
from radseg.db.models import (
    Dataset,
    DatasetMember,
    DatasetVersion,
    Job,
    ModelVersion,
    Series,
    Study,
)
from radseg.errors import InputError
from radseg.imaging.channels import WINDOW_PRESETS, Channel, ChannelRecipe
from radseg.jobs import store
from radseg.web import uploads
from radseg.web.auth import roles_required, web_user
from radseg.web.context import current_platform, db
from radseg.web.jobs import OPERATORS
from radseg.web.limits import accepts_upload
from radseg.web.validation import form_id, form_ids
from radseg.workflows.datasets import usable_dataset_name
from radseg.workflows.uploads import UPLOADS

bp = Blueprint("research", __name__)

#: a dataset build's split seed (numpy's seeds are 32 bits)
MAX_SEED = 2**32 - 1
EVALUATION_SPLITS = ("test", "val", "train")


def submit_job(kind: str, payload: dict[str, Any], target: str = "") -> Job:
    """Queue a job for the logged-in user and audit it (the caller commits)."""
    session = db()
    user = web_user().username
    job = store.submit(
        session,
        kind,
        {**payload, "created_by": user},
        max_attempts=current_platform().settings.max_attempts,
        created_by=user,
    )
    audit.record(session, user, f"job.submit.{kind}", target or f"job:{job.id}", job=job.id)
    return job


def _done(job: Job, what: str) -> Any:
    db().commit()
    if request.accept_mimetypes.best == "application/json" or request.is_json:
        return jsonify(job_id=job.id, url=url_for("jobs.job_page", job_id=job.id)), 202
    flash(f"{what}: job {job.id} is queued.", "info")
    return redirect(url_for("jobs.job_page", job_id=job.id), 303)


def _refuse(message: str, code: int = 400) -> Any:
    if request.accept_mimetypes.best == "application/json":
        return jsonify(error="Bad Request", detail=message), code
    flash(message, "error")
    return redirect(request.referrer or url_for("research.datasets"), 303)


def upload_limits() -> ArchiveLimits:
    return ArchiveLimits.from_settings(current_platform().settings)


# --- upload ---------------------------------------------------------------------------------


@bp.get("/upload")
@roles_required(*OPERATORS)
def upload_page() -> Any:
    return render_template(
        "upload.html",
        max_bytes=current_app.config.get("MAX_CONTENT_LENGTH"),
        datasets=db().scalars(select(Dataset.name).order_by(Dataset.name)).all(),
    )


@bp.post("/upload")
@accepts_upload
@roles_required(*OPERATORS)
def upload() -> Any:
    files = [(f.filename or "", f.stream) for f in request.files.getlist("files") if f.filename]
    dataset = request.form.get("dataset", "").strip() or None
    platform = current_platform()
    # The audit trail (append-only) gets why in fixed words; the message, which names the
    # uploaded files and archive members (a patient's name, maybe), goes to the uploader only.
    kind = "dataset-name"
    try:
        if dataset:
            usable_dataset_name(db(), dataset)
        kind = "no-files" if not files else "upload"
        folder, count = uploads.store_upload(files, platform.path(UPLOADS), upload_limits())
    except InputError as exc:
        if isinstance(exc, UnsafeArchiveError):
            kind = exc.kind
        audit.record(db(), web_user().username, "upload.refused", reason=kind)
        db().commit()
        return _refuse(str(exc), 400)
    # "upload" names the folder (no server path in the payload): the worker reads it and
    # removes it when the job ends (workflows/uploads.py)
    payload: dict[str, Any] = {
        "upload": folder.name,
        "source": "dicom-folder",
    }
    if dataset:
        payload["dataset"] = dataset
    job = submit_job("ingest", payload, target=f"upload:{folder.name}")
    audit.record(
        db(), web_user().username, "upload", f"upload:{folder.name}", files=count, job=job.id
    )
    return _done(job, f"Uploaded {count} file{'s' if count != 1 else ''}")


# --- datasets, training, prediction, evaluation -------------------------------------------


def _recipe(text: str) -> ChannelRecipe:
    channels = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        width, sep, level = item.partition("/")
        if sep:
            try:
                channels.append(Channel(f"w{width}l{level}", float(width), float(level)))
            except ValueError:
                raise InputError(f"channel {item!r} is not WIDTH/LEVEL in HU") from None
        elif item in WINDOW_PRESETS:
            channels.append(Channel.preset(item))
        else:
            raise InputError(
                f"unknown window {item!r}; use WIDTH/LEVEL or one of: {', '.join(WINDOW_PRESETS)}"
            )
    if not channels:
        raise InputError("give at least one channel, e.g. soft_tissue,lung,bone")
    return ChannelRecipe(tuple(channels))


@bp.get("/datasets")
@roles_required(*OPERATORS)
def datasets() -> Any:
    session = db()
    platform = current_platform()
    from radseg.jobs.handlers import HANDLERS

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
            select(Study).options(joinedload(Study.series)).order_by(Study.id.desc()).limit(500)
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
        can_evaluate="evaluate" in HANDLERS,
    )


@bp.post("/datasets/build")
@roles_required(*OPERATORS)
def build_dataset() -> Any:
    session = db()
    name = request.form.get("name", "").strip()
    try:
        usable_dataset_name(session, name)
        recipe = _recipe(request.form.get("channels", "soft_tissue,lung,bone"))
        seed_text = request.form.get("seed", "").strip() or "0"
        digits = seed_text.isascii() and seed_text.isdigit() and len(seed_text) <= 10
        if not digits or int(seed_text) > MAX_SEED:
            raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}")
        seed = int(seed_text)
        study_ids = form_ids("study")
    except InputError as exc:
        return _refuse(str(exc))
    dataset = session.scalars(select(Dataset).where(Dataset.name == name)).first()
    if dataset is None:
        dataset = Dataset(name=name)
        session.add(dataset)
        session.flush()
    series_ids = session.scalars(select(Series.id).where(Series.study_id.in_(study_ids))).all()
    for series_id in series_ids:
        if session.get(DatasetMember, (dataset.id, series_id)) is None:
            session.add(DatasetMember(dataset_id=dataset.id, series_id=series_id))
    if not series_ids and not dataset.members:
        return _refuse("choose at least one study for a new dataset")
    job = submit_job(
        "build-dataset",
        {"dataset": name, "recipe": recipe.to_dict(), "seed": seed},
        target=f"dataset:{dataset.id}",
    )
    return _done(job, f"Building dataset {name!r}")


@bp.post("/train")
@roles_required(*OPERATORS)
def train() -> Any:
    platform = current_platform()
    dataset = request.form.get("dataset", "")
    backend = request.form.get("backend", "")
    architecture = request.form.get("architecture", "").strip()
    if backend not in platform.plugins.models:
        return _refuse(
            f"unknown backend {backend!r}; enabled: {', '.join(platform.plugins.models) or 'none'}"
        )
    architectures = platform.plugins.models.get(backend).architectures
    if architecture and architecture not in architectures:
        return _refuse(
            f"{backend} has no architecture {architecture!r}; choose: {', '.join(architectures)}"
        )
    found = db().scalars(select(Dataset).where(Dataset.name == dataset)).first()
    if found is None or not found.versions:
        return _refuse(f"dataset {dataset!r} has no built version yet; build it first")
    config: dict[str, Any] = {}
    if architecture:
        config["architecture"] = architecture
    iterations = request.form.get("iterations", "").strip()
    if iterations:
        if not iterations.isdigit() or not 0 < int(iterations) <= 10_000_000:
            return _refuse("iterations must be a positive whole number")
        config["iterations"] = int(iterations)
    job = submit_job(
        "train", {"dataset": dataset, "backend": backend, "config": config}, f"dataset:{found.id}"
    )
    return _done(job, f"Training on {dataset!r}")


def _series_of_studies(study_ids: list[int]) -> list[Series]:
    return list(
        db().scalars(select(Series).where(Series.study_id.in_(study_ids)).order_by(Series.id))
    )


@bp.post("/predict")
@roles_required(*OPERATORS)
def predict() -> Any:
    try:
        model_version_id = form_id("model_version")
        study_ids = form_ids("study")
    except InputError as exc:
        return _refuse(str(exc))
    if model_version_id is None:
        return _refuse("choose a model version and at least one study")
    if db().get(ModelVersion, model_version_id) is None:
        return _refuse(f"there is no model version {model_version_id}")
    series = _series_of_studies(study_ids)
    if not series:
        return _refuse("choose at least one study with a series")
    jobs = [
        submit_job(
            "predict",
            {"model_version_id": model_version_id, "series_instance_uid": s.series_instance_uid},
            f"series:{s.id}",
        )
        for s in series
    ]
    if len(jobs) > 1:
        db().commit()
        flash(f"{len(jobs)} prediction jobs are queued.", "info")
        return redirect(url_for("jobs.list_jobs"), 303)
    return _done(jobs[0], "Prediction")


@bp.post("/evaluate")
@roles_required(*OPERATORS)
def evaluate() -> Any:
    from radseg.jobs.handlers import HANDLERS

    if "evaluate" not in HANDLERS:
        return _refuse("this installation has no evaluation jobs yet (no 'evaluate' job kind)", 409)
    try:
        model_version_id = form_id("model_version")
        dataset_version_id = form_id("dataset_version")
    except InputError as exc:
        return _refuse(str(exc))
    if model_version_id is None:
        return _refuse("choose a model version")
    version = db().get(ModelVersion, model_version_id)
    if version is None:
        return _refuse(f"there is no model version {model_version_id}")
    split = request.form.get("split", "test")
    if split not in EVALUATION_SPLITS:
        return _refuse(f"split must be one of: {', '.join(EVALUATION_SPLITS)}")
    payload: dict[str, Any] = {"model_version_id": model_version_id, "split": split}
    if dataset_version_id is not None:
        if db().get(DatasetVersion, dataset_version_id) is None:
            return _refuse(f"there is no dataset version {dataset_version_id}")
        payload["dataset_version_id"] = dataset_version_id
    job = submit_job("evaluate", payload, f"model_version:{model_version_id}")
    return _done(job, "Evaluation")
