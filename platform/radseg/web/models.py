"""Model versions in the browser: the list, a model version's page and comparisons.

A model version's page also shows the chain of its model's versions (status, parent, what each
learned from, a retrain's comparison with its parent) and, for researchers and admins, the
Retrain button (``POST /models/<model id>/retrain``, :mod:`radseg.workflows.retrain`).

A model version's page shows its model card (lineage, classes, modality, input recipe,
metrics), its training curves (the loss and the validation Dice against the iteration, drawn on
the server by :mod:`radseg.web.charts` as on a training job's page; the history is also
``/models/<id>/history.json`` for scripts) and each evaluation's report: the
table and its PNG plots — and its quality over time (the weekly table, the alerts and the
control charts, drawn by ``static/quality.js`` from ``/api/model-versions/<id>/quality``).
Nothing here shows patient data: metrics are per class, series are
pseudonymised UIDs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request, send_file
from markupsafe import Markup

from radseg import model_registry, quality
from radseg.db.models import Evaluation, ModelVersion, ModelVersionStatus
from radseg.errors import InputError
from radseg.roles import OPERATORS, VIEWERS
from radseg.web import charts, curves
from radseg.web.auth import current_actor, roles_required
from radseg.web.context import current_platform, db
from radseg.web.outcomes import form_refusals, queued
from radseg.web.paging import Pager
from radseg.web.schemas import CompareQuery, ModelsPageQuery
from radseg.web.validation import query_args
from radseg.workflows.quality import version_quality
from radseg.workflows.retrain import pending_retrain, request_retrain

bp = Blueprint("models", __name__)

#: the report files the page may serve
REPORT_PNGS = ("dice_per_class.png", "hd95_per_class.png", "history.png")


def history_series(card: dict[str, Any]) -> dict[str, list[list[float]]]:
    """``{name: [[iteration, value], ...]}``: mean Dice, loss and each class's Dice."""
    series: dict[str, list[list[float]]] = {}
    for entry in card["history"]:
        it = float(entry["iteration"])
        for key in ("mean_dice", "loss"):
            if isinstance(entry.get(key), int | float):
                series.setdefault(key, []).append([it, float(entry[key])])
        for name, value in (entry.get("dice") or {}).items():
            if isinstance(value, int | float):
                series.setdefault(f"dice/{name}", []).append([it, float(value)])
    return series


def version_charts(version: ModelVersion, card: dict[str, Any]) -> list[Markup]:
    """The training curves of ``version`` (:func:`radseg.web.charts.training_charts`): the loss
    from the ``metrics.json`` its training left next to its weights (else the loss at each
    validation) and the validation Dice of its history."""
    weights = version.weights_path
    metrics_file = current_platform().resolve(weights).parent / "metrics.json" if weights else None
    found = curves.training_curves(metrics_file, card["history"])
    return charts.training_charts(found, prefix="model-chart")


@bp.get("/models")
@roles_required(*VIEWERS)
def list_models() -> Any:
    args = query_args(ModelsPageQuery)
    listed = model_registry.version_page(db(), args.filters(), args.window())
    return render_template(
        "models.html",
        versions=listed.rows,
        pager=Pager.of(listed, args),
        args=args,
        statuses=[s.value for s in ModelVersionStatus],
        sorts=model_registry.VERSION_SORTS,
        trained_by=model_registry.trained_by,
    )


@bp.get("/models/<int:model_version_id>")
@roles_required(*VIEWERS)
def model_version(model_version_id: int) -> Any:
    version = model_registry.get_version(db(), model_version_id)
    card = model_registry.model_card(db(), version)
    reports = []
    for evaluation in sorted(version.evaluations, key=lambda e: e.id, reverse=True):
        folder = (
            current_platform().resolve(evaluation.report_path) if evaluation.report_path else None
        )
        table = (
            (folder / "report.md").read_text(encoding="utf-8")
            if folder and (folder / "report.md").is_file()
            else ""
        )
        pngs = [n for n in REPORT_PNGS if folder and (folder / n).is_file()]
        reports.append({"evaluation": evaluation, "table": table, "pngs": pngs})
    return render_template(
        "model_version.html",
        version=version,
        card=card,
        charts=version_charts(version, card),
        reports=reports,
        quality=version_quality(db(), current_platform().settings, version),
        quality_columns=quality.table_columns(),
        chain=model_registry.version_chain(db(), version.model),
        pending_retrain=pending_retrain(db(), version.model),
        retrain_iterations=current_platform().settings.retrain_iterations,
    )


@bp.post("/models/<int:model_id>/retrain")
@roles_required(*OPERATORS)
@form_refusals("models.list_models")
def retrain(model_id: int) -> Any:
    """The Retrain button: queue a retrain of the model (radseg.workflows.retrain)."""
    text = request.form.get("iterations", "").strip()
    if text and not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise InputError("iterations must be a positive whole number")
    job = request_retrain(
        current_platform(), current_actor(), model=model_id, iterations=int(text) if text else None
    )
    return queued(job, "Retrain")


@bp.get("/models/<int:model_version_id>/history.json")
@roles_required(*VIEWERS)
def history_json(model_version_id: int) -> Any:
    card = model_registry.model_card(db(), model_registry.get_version(db(), model_version_id))
    return jsonify(history_series(card))


@bp.get("/models/evaluations/<int:evaluation_id>/<name>")
@roles_required(*VIEWERS)
def report_file(evaluation_id: int, name: str) -> Any:
    if name not in REPORT_PNGS:
        abort(404, f"no report file {name!r}; the report has {', '.join(REPORT_PNGS)}")
    evaluation = db().get(Evaluation, evaluation_id)
    if evaluation is None or not evaluation.report_path:
        abort(404, f"there is no evaluation report {evaluation_id}")
    path = Path(current_platform().resolve(evaluation.report_path)) / name
    if not path.is_file():
        abort(404, f"evaluation {evaluation_id} has no {name}")
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.get("/models/compare")
@roles_required(*VIEWERS)
def compare() -> Any:
    if "a" not in request.args or "b" not in request.args:
        abort(400, "give two model versions: /models/compare?a=ID&b=ID&split=test")
    args = query_args(CompareQuery)
    result = model_registry.compare(db(), args.a, args.b, split=args.split)
    return render_template("model_compare.html", result=result)
