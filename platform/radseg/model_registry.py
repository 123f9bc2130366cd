"""The model registry: model versions with their lineage, model cards and comparisons.

A model version's **lineage** is what it was made from and by: the dataset version (name,
version, content hash, split), the backend config (and its hash), radseg's version, who trained
it and when. Its **model card** adds what a user of the model needs to know: the classes, the
intended modality, the input recipe (CT windows and their order), the input size and pixel
statistics, the validation metrics and the evaluations. :func:`compare` puts two versions side
by side on the evaluations they share (same dataset version and split), class by class.
Functions take a session and never commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, get_args

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, contains_eager, joinedload

from radseg.db.models import (
    DatasetMember,
    DatasetVersion,
    Evaluation,
    Model,
    ModelVersion,
    ModelVersionStatus,
    Series,
)
from radseg.db.paging import Listed, Window, fetch
from radseg.errors import NotFound, check_one_of
from radseg.roles import CLI_ACTOR

#: the metrics a comparison shows, and whether higher is better
COMPARED_METRICS = {
    "dice": True,
    "iou": True,
    "surface_dice": True,
    "hd95": False,
    "assd": False,
}


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.cache
def code_version() -> str:
    """radseg's installed version (``0.0.0`` when it runs from a tree that is not installed).

    Read once per process: the code a process runs is the code it started with, and the
    metadata lookup costs milliseconds that every prediction would pay."""
    try:
        return metadata.version("radseg")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def get_version(session: Session, model_version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        ids = ", ".join(str(i) for i in session.scalars(select(ModelVersion.id))) or "none"
        raise NotFound(f"model version {model_version_id} does not exist (have: {ids})")
    return version


def get_model(session: Session, name: str) -> Model:
    """The model called ``name``; :class:`NotFound` lists the models there are."""
    model = session.scalars(select(Model).where(Model.name == name)).first()
    if model is None:
        names = ", ".join(session.scalars(select(Model.name).order_by(Model.name))) or "none"
        raise NotFound(f"there is no model {name!r} (models: {names})")
    return model


def current_version(session: Session, model: Model) -> ModelVersion | None:
    """The model's current version: its newest promoted one (what predictions use by default
    and what a retrain starts from); ``None`` when it has none."""
    return session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.model_id == model.id,
            ModelVersion.status == ModelVersionStatus.PROMOTED,
        )
        .order_by(ModelVersion.id.desc())
    ).first()


def version_chain(session: Session, model: Model) -> list[dict[str, Any]]:
    """Every version of ``model``, oldest first: its status, whether it is the current one,
    the version it was fine-tuned from, what it learned from and its retrain comparison."""
    current = current_version(session, model)
    rows = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.id)
    ).all()
    return [
        {
            "id": v.id,
            "status": v.status.value,
            "current": current is not None and v.id == current.id,
            "parent_id": v.parent_id,
            "dataset_version_id": v.dataset_version_id,
            "dataset_version": v.dataset_version.version,
            "learned_from": v.learned_from,
            "comparison": v.comparison,
            "created_by": v.created_by,
            "created_at": v.created_at.isoformat(),
        }
        for v in rows
    ]


def list_versions(session: Session) -> list[dict[str, Any]]:
    """Every model version, newest first, with its headline metric."""
    rows = session.scalars(select(ModelVersion).join(Model).order_by(ModelVersion.id.desc())).all()
    return [_summary(v) for v in rows]


#: the model versions list's orders: newest or oldest first, by model name (then newest)
VersionSort = Literal["newest", "oldest", "model"]
VERSION_SORTS: tuple[str, ...] = get_args(VersionSort)


@dataclass(frozen=True)
class VersionFilters:
    """What the model versions list shows: ``q`` finds a model's name or backend (any part, any
    case); ``status`` one of :class:`ModelVersionStatus`; ``sort`` one of :data:`VERSION_SORTS`.

    :raises InputError: ``sort`` is not one of :data:`VERSION_SORTS`.
    """

    q: str = ""
    status: ModelVersionStatus | None = None
    sort: str = "newest"

    def __post_init__(self) -> None:
        check_one_of("sort", self.sort, VERSION_SORTS)


def _versions_filtered(query: Select[Any], filters: VersionFilters) -> Select[Any]:
    query = query.join(Model, ModelVersion.model_id == Model.id)
    text = filters.q.strip()
    if text:
        query = query.where(
            Model.name.icontains(text, autoescape=True)
            | Model.backend.icontains(text, autoescape=True)
        )
    if filters.status is not None:
        query = query.where(ModelVersion.status == filters.status)
    return query


def version_page(
    session: Session, filters: VersionFilters | None = None, window: Window | None = None
) -> Listed[dict[str, Any]]:
    """One page of model versions (as :func:`list_versions` gives them) and their count."""
    filters = filters or VersionFilters()
    order: tuple[Any, ...] = {
        "newest": (ModelVersion.id.desc(),),
        "oldest": (ModelVersion.id,),
        "model": (Model.name, ModelVersion.id.desc()),
    }[filters.sort]
    rows = (
        _versions_filtered(select(ModelVersion), filters)
        .order_by(*order)
        .options(
            contains_eager(ModelVersion.model),
            joinedload(ModelVersion.dataset_version).joinedload(DatasetVersion.dataset),
        )
    )
    matching = _versions_filtered(select(ModelVersion.id), filters)
    return fetch(session, rows, matching, window or Window(100)).map(_summary)


def _summary(version: ModelVersion) -> dict[str, Any]:
    val = (version.metrics or {}).get("val") or {}
    dataset_version = version.dataset_version
    return {
        "id": version.id,
        "model": version.model.name,
        "backend": version.model.backend,
        "architecture": version.config.get("architecture"),
        "dataset": dataset_version.dataset.name,
        "dataset_version": dataset_version.version,
        "val_mean_dice": val.get("mean_dice"),
        "status": version.status.value,
        "parent_id": version.parent_id,
        "created_by": version.created_by,
        "created_at": version.created_at.isoformat(),
    }


#: what a model card says for a version trained from the command line
COMMAND_LINE = "command line"


def trained_by(created_by: str) -> str:
    """Who trained a version, as a person reads it: the user who asked for the training, or
    "command line". The CLI acts as :data:`~radseg.roles.CLI_ACTOR`; before it did, its
    training jobs recorded nobody, and the web and the API have always recorded the user, so
    a version without a trainer was trained from the command line too."""
    return COMMAND_LINE if created_by in ("", CLI_ACTOR.username) else created_by


def lineage(version: ModelVersion) -> dict[str, Any]:
    dataset_version = version.dataset_version
    return {
        "model_version_id": version.id,
        "model": version.model.name,
        "backend": version.model.backend,
        "dataset": dataset_version.dataset.name,
        "dataset_version": dataset_version.version,
        "dataset_version_id": dataset_version.id,
        "dataset_content_hash": dataset_version.content_hash,
        "split": {k: len(v) for k, v in (dataset_version.split or {}).items()},
        "config_hash": version.config_hash or config_hash(version.config),
        "code_version": version.code_version,
        "trained_by": trained_by(version.created_by),
        "trained_at": version.created_at.isoformat(),
        "iterations": version.config.get("iterations"),
        "status": version.status.value,
        "parent_id": version.parent_id,
        "learned_from": version.learned_from,
    }


def model_card(session: Session, version: ModelVersion) -> dict[str, Any]:
    """What a user of ``version`` needs to know (see the module docstring)."""
    config = version.config
    dataset_version = version.dataset_version
    modalities = sorted(_modalities(session, dataset_version))
    metrics = version.metrics or {}
    val = metrics.get("val") or {}
    history = (version.history or {}).get("validations") or metrics.get("history") or []
    return {
        "lineage": lineage(version),
        "classes": [
            {"id": c["id"], "name": c["name"], "color": c.get("color")}
            for c in config.get("classes", [])
        ],
        "intended_modality": modalities,
        "input": {
            "recipe": dataset_version.recipe,
            "image_size": config.get("image_size"),
            "input_format": config.get("input_format"),
            "pixel_mean": config.get("pixel_mean"),
            "pixel_std": config.get("pixel_std"),
            "augmentations": config.get("augmentations"),
        },
        "architecture": config.get("architecture"),
        "validation": {
            "mean_dice": val.get("mean_dice"),
            "per_class": val.get("per_class"),
            "volume": (val.get("volume") or {}).get("per_class"),
            "best": metrics.get("best"),
            "stopped_early": metrics.get("stopped_early"),
        },
        "history": history,
        "inference": inference_engine(version),
        "evaluations": [
            {
                "id": e.id,
                "dataset_version_id": e.dataset_version_id,
                "split": e.split,
                "mean_dice": (e.metrics or {}).get("mean_dice"),
                "report_path": e.report_path,
                "created_at": e.created_at.isoformat(),
            }
            for e in sorted(version.evaluations, key=lambda e: e.id)
        ],
    }


#: the reduced-precision engines a backend reports measurements of (``metrics[name]``), in the
#: order the detectron2 plugin's ``auto`` tries them
REDUCED_PRECISION = ("bf16", "int8")


def inference_engine(version: ModelVersion) -> dict[str, Any] | None:
    """How the model version predicts on a CPU, as its backend last measured it.

    ``engines``: what is stored of each reduced-precision engine considered (by name: why it
    was or was not used — its labels' lowest per-class Dice against float32's and the setting
    it must meet, or that the CPU has no native bfloat16 —, the agreement per class, the last
    check made on a prediction, the prediction that reported it). At the top, ``engine``: the
    engine the newest report says was used (``"bf16"``, ``"int8"``, ``"onnx"`` or ``"torch"``:
    float32), with the facts of that engine's record, or where float32 was used those of the
    first engine ``auto`` tried (so ``reason`` says why it was not used). ``None`` until a
    prediction has measured one (the detectron2 plugin does on a model version's first
    prediction on a CPU)."""
    metrics = version.metrics or {}
    engines = {
        name: dict(metrics[name])
        for name in REDUCED_PRECISION
        if isinstance(metrics.get(name), dict)
    }
    if not engines:
        return None
    newest = max(int(r.get("prediction_id") or 0) for r in engines.values())
    current = {n: r for n, r in engines.items() if int(r.get("prediction_id") or 0) == newest}
    engine = next(iter(current.values())).get("engine")
    shown = current.get(str(engine)) or next(iter(current.values()))
    return {**shown, "engine": engine, "engines": engines}


def _modalities(session: Session, dataset_version: DatasetVersion) -> set[str]:
    return set(
        session.scalars(
            select(Series.modality)
            .join(DatasetMember, DatasetMember.series_id == Series.id)
            .where(DatasetMember.dataset_id == dataset_version.dataset_id)
        )
    )


def latest_evaluation(
    session: Session, model_version_id: int, dataset_version_id: int, split: str
) -> Evaluation | None:
    return session.scalars(
        select(Evaluation)
        .where(
            Evaluation.model_version_id == model_version_id,
            Evaluation.dataset_version_id == dataset_version_id,
            Evaluation.split == split,
        )
        .order_by(Evaluation.id.desc())
    ).first()


def compare(session: Session, a_id: int, b_id: int, *, split: str = "test") -> dict[str, Any]:
    """Two model versions on the newest evaluations they have on the same dataset version and
    ``split``: per class and metric, both values and the difference ``b - a``.

    Refuses when they share none, saying which evaluation to run.
    """
    a, b = get_version(session, a_id), get_version(session, b_id)
    a_sets = {e.dataset_version_id for e in a.evaluations if e.split == split}
    b_sets = {e.dataset_version_id for e in b.evaluations if e.split == split}
    shared = sorted(a_sets & b_sets)
    if not shared:
        raise NotFound(
            f"model versions {a_id} and {b_id} have no evaluation on the same dataset version "
            f"and split {split!r}; run `radseg evaluate --model-version {a_id} --split {split}` "
            f"and the same for {b_id} (with the same --dataset-version)"
        )
    dataset_version_id = shared[-1]
    ea = latest_evaluation(session, a_id, dataset_version_id, split)
    eb = latest_evaluation(session, b_id, dataset_version_id, split)
    assert ea is not None and eb is not None
    rows = []
    per_a = ea.metrics.get("per_class", {})
    per_b = eb.metrics.get("per_class", {})
    for name in [*per_a, *(n for n in per_b if n not in per_a)]:
        for metric, higher_is_better in COMPARED_METRICS.items():
            va = ((per_a.get(name) or {}).get(metric) or {}).get("mean")
            vb = ((per_b.get(name) or {}).get(metric) or {}).get("mean")
            diff = vb - va if va is not None and vb is not None else None
            better = None
            if diff is not None and diff != 0:
                better = "b" if (diff > 0) == higher_is_better else "a"
            rows.append(
                {"class": name, "metric": metric, "a": va, "b": vb, "diff": diff, "better": better}
            )
    return {
        "a": _side(a_id, ea),
        "b": _side(b_id, eb),
        "dataset_version_id": dataset_version_id,
        "split": split,
        "series": sorted(set(ea.metrics.get("studies", {})) & set(eb.metrics.get("studies", {}))),
        "rows": rows,
    }


def _side(model_version_id: int, evaluation: Evaluation) -> dict[str, Any]:
    return {
        "model_version_id": model_version_id,
        "evaluation_id": evaluation.id,
        "mean_dice": evaluation.metrics.get("mean_dice"),
    }
