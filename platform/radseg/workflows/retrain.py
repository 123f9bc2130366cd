"""Every correction makes the next model better: retrain a model on its reviewed label versions.

``radseg retrain --model NAME``, the Retrain button of a model version's page and
``POST /api/models/<id>/retrain`` call :func:`request_retrain`; the setting
``retrain_after_reviewed`` (N > 0) makes :func:`after_reviewed_label_version` queue the same job
once N new reviewed label versions of the model's predictions have been saved. At most one
retrain of a model is queued or running at a time.

One retrain job (:func:`retrain`):

1. the series whose predictions by this model were reviewed join the model's dataset;
2. a new dataset version is built with the parent's channel recipe and patient split (so the
   held-out test split stays held out): each series takes its reviewed label version over an
   imported one (:func:`radseg.label_versions.training_label_set`), and every COCO image
   record says which label version it came from;
3. the model's current version (its newest promoted one) is fine-tuned on it for
   ``retrain_iterations`` (:class:`radseg.contracts.FineTune`), with the options it was trained
   with (batch size, learning rate, overrides): a **candidate** version whose
   parent is the current one, recording what it learned from;
4. parent and candidate are evaluated on the same test split of the new dataset version and on
   the reviewed cases (:func:`radseg.workflows.evaluation.evaluate`);
5. :func:`promotion_decision`: the candidate is **promoted** (it becomes the current version)
   only if, on the test split, no class's mean Dice is more than ``retrain_margin`` below the
   parent's. Otherwise it stays a candidate; the comparison is stored either way and shown on
   the model version's page. The decision is audited (``model.promote`` or
   ``model.keep_candidate``).

A re-run of the job (a retry, an expired lease) takes up the parent and the dataset version its
first run built (:data:`STATE_FILE` in the job's folder), and the fine-tuning resumes from its
checkpoints there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg import audit
from radseg.contracts import ProgressFn, no_progress
from radseg.core import Platform
from radseg.db.models import (
    DatasetMember,
    DatasetVersion,
    Evaluation,
    Job,
    JobState,
    LabelSet,
    Model,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
)
from radseg.errors import Conflict, InputError
from radseg.imaging.channels import ChannelRecipe
from radseg.label_versions import reviewed_clause
from radseg.model_registry import current_version, get_model, get_version
from radseg.roles import OPERATORS, Actor, require_role
from radseg.storage import atomic_write_text
from radseg.workflows.datasets import build_version
from radseg.workflows.evaluation import evaluate
from radseg.workflows.jobs import queue_job
from radseg.workflows.training import (
    FINE_TUNE_OWN_OPTIONS,
    MAX_ITERATIONS,
    check_backend,
    train,
)

#: the job kind
RETRAIN = "retrain"
#: who queues a retrain when the setting ``retrain_after_reviewed`` asks for one
POLICY_ACTOR = Actor("retrain-policy", OPERATORS[0])
#: what a retrain job keeps in its folder for a re-run (parent, dataset version, watermark)
STATE_FILE = "retrain.json"
#: a Dice difference this small is no difference (floating point)
_EPSILON = 1e-9


# --- the promotion rule -------------------------------------------------------------------------


def promotion_decision(
    parent: Mapping[str, float | None], candidate: Mapping[str, float | None], margin: float
) -> dict[str, Any]:
    """Whether a candidate may replace its parent, from each class's mean Dice on the same test
    split (non-inferiority): promote only if no class scored for both is more than ``margin``
    below the parent's. A class without a score for one of them cannot be worse: a version
    has no score for a class that is absent from the labels of every series and that it does
    not predict either (a parent with a false positive there scores 0). Without any class
    scored for both (no test split to compare on, an evaluation missing): no promotion.

    Returns ``{"promote", "margin", "reason", "classes": [{"class", "parent", "candidate",
    "diff", "within_margin"}]}``.
    """
    rows = []
    for name in [*parent, *(n for n in candidate if n not in parent)]:
        before, after = parent.get(name), candidate.get(name)
        diff = after - before if before is not None and after is not None else None
        rows.append(
            {
                "class": name,
                "parent": before,
                "candidate": after,
                "diff": diff,
                "within_margin": diff is None or diff >= -margin - _EPSILON,
            }
        )
    worse = [str(r["class"]) for r in rows if not r["within_margin"]]
    measured = any(r["diff"] is not None for r in rows)
    if not measured:
        reason = "no class was scored for both on the test split, so non-inferiority is not shown"
    elif worse:
        reason = f"{', '.join(worse)}: test Dice more than {margin:g} below the parent's"
    else:
        reason = f"no class's test Dice is more than {margin:g} below the parent's"
    return {
        "promote": measured and not worse,
        "margin": margin,
        "reason": reason,
        "classes": rows,
    }


def class_dice(evaluation: Evaluation | None) -> dict[str, float | None]:
    """Each class's mean Dice over the series of an evaluation (``{}`` without one)."""
    if evaluation is None:
        return {}
    per_class = (evaluation.metrics or {}).get("per_class") or {}
    return {name: ((m or {}).get("dice") or {}).get("mean") for name, m in per_class.items()}


# --- the job ------------------------------------------------------------------------------------


def retrain(
    platform: Platform,
    *,
    model: str,
    job_id: int,
    iterations: int | None = None,
    created_by: str = "",
    progress: ProgressFn = no_progress,
) -> ModelVersion:
    """Run one retrain of ``model`` (the module docstring's steps); returns the new version,
    promoted or a candidate, with its comparison. Each step commits its own unit of work."""
    iterations = iterations or platform.settings.retrain_iterations
    # what a re-run of this job (a retry, an expired lease) takes up again: the same parent and
    # dataset version, so the fine-tuning resumes from its checkpoints in the same folder
    state_file = platform.path("models", f"job-{job_id}", STATE_FILE)
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    with platform.sessions.begin() as session:
        found = get_model(session, model)
        parent = get_version(session, state["parent_id"]) if state else _current(session, found)
        parent_id, backend = parent.id, found.backend
        source = parent.dataset_version
        dataset, recipe, keep_split = source.dataset.name, source.recipe, source.split
        added = state.get("series_added", 0) + _join_reviewed_series(
            session, found, source.dataset_id
        )
        # label sets above this are new to the next retrain (taken before the build reads them)
        watermark = state.get("watermark") or int(
            session.scalar(select(func.max(LabelSet.id))) or 0
        )
        built = session.get(DatasetVersion, state["dataset_version_id"]) if state else None
    if built is not None:
        dataset_version = built
    else:
        progress(0.0, f"building a new version of dataset {dataset}")
        dataset_version = build_version(
            platform,
            dataset,
            recipe=ChannelRecipe.from_dict(recipe) if recipe else None,
            keep_split=keep_split,
            progress=_scaled(progress, 0.0, 0.15),
        )
        atomic_write_text(
            state_file,
            json.dumps(
                {
                    "parent_id": parent_id,
                    "dataset_version_id": dataset_version.id,
                    "watermark": watermark,
                    "series_added": added,
                }
            ),
        )
    manifest = json.loads(
        (platform.resolve(dataset_version.path) / "manifest.json").read_text(encoding="utf-8")
    )
    reviewed = {
        uid: v for uid, v in (manifest.get("label_versions") or {}).items() if v.get("reviewed")
    }
    learned_from = {
        "dataset_version_id": dataset_version.id,
        "dataset_version": dataset_version.version,
        "reviewed_label_sets": sorted(v["label_set_id"] for v in reviewed.values()),
        "reviewed_series": sorted(reviewed),
        "series_added": added,
        "label_set_watermark": watermark,
        "iterations": iterations,
        "job_id": job_id,
    }
    with platform.sessions() as session:
        parent = get_version(session, parent_id)  # its columns stay readable after the session
    progress(0.15, f"fine-tuning model version {parent_id} for {iterations} iterations")
    # the parent's own training options (batch size, learning rate, overrides, ...), if stored
    inherited = {
        k: v
        for k, v in ((parent.config or {}).get("options") or {}).items()
        if k not in FINE_TUNE_OWN_OPTIONS
    }
    candidate = train(
        platform,
        dataset=dataset,
        backend=backend,
        config={**inherited, "iterations": iterations},
        job_id=job_id,
        created_by=created_by,
        model_name=model,
        progress=_scaled(progress, 0.15, 0.55),
        dataset_version_id=dataset_version.id,
        parent=parent,
        learned_from=learned_from,
    )
    comparison = _compare(
        platform, parent_id, candidate.id, dataset_version.id, sorted(reviewed), created_by,
        progress,
    )  # fmt: skip
    return _decide(platform, candidate.id, comparison, created_by, progress)


def _current(session: Session, model: Model) -> ModelVersion:
    current = current_version(session, model)
    if current is None:
        raise InputError(
            f"model {model.name!r} has no promoted version to retrain from; train one with "
            "`radseg train` first"
        )
    return current


def _reviewed_of_model(model: Model) -> Any:
    """The reviewed label sets made from predictions of ``model``'s versions (a SELECT)."""
    return (
        select(LabelSet)
        .join(Prediction, Prediction.id == LabelSet.prediction_id)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(ModelVersion.model_id == model.id, reviewed_clause())
    )


def _join_reviewed_series(session: Session, model: Model, dataset_id: int) -> int:
    """Make every series with a reviewed label version of ``model``'s predictions a member of
    the dataset; returns how many joined."""
    series_ids = set(
        session.scalars(_reviewed_of_model(model).with_only_columns(LabelSet.series_id))
    )
    members = set(
        session.scalars(
            select(DatasetMember.series_id).where(DatasetMember.dataset_id == dataset_id)
        )
    )
    new = sorted(series_ids - members)
    session.add_all(DatasetMember(dataset_id=dataset_id, series_id=s) for s in new)
    return len(new)


def _compare(
    platform: Platform,
    parent_id: int,
    candidate_id: int,
    dataset_version_id: int,
    reviewed_series: list[str],
    created_by: str,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Both versions on the test split of the new dataset version, and on the reviewed cases;
    the promotion decision on the test split."""
    evaluations: dict[str, dict[str, Evaluation | None]] = {"test": {}, "reviewed": {}}
    notes = []
    steps = [
        (where, role, version_id)
        for where in ("test", "reviewed")
        for role, version_id in (("parent", parent_id), ("candidate", candidate_id))
    ]
    for n, (where, role, version_id) in enumerate(steps):
        start = 0.7 + 0.25 * n / len(steps)
        progress(start, f"evaluating the {role} (version {version_id}) on the {where} cases")
        if where == "reviewed" and not reviewed_series:
            evaluations[where][role] = None
            continue
        try:
            evaluations[where][role] = evaluate(
                platform,
                model_version_id=version_id,
                split="test",
                dataset_version_id=dataset_version_id,
                created_by=created_by,
                progress=_scaled(progress, start, 0.25 / len(steps)),
                cases=reviewed_series if where == "reviewed" else None,
            )
        except InputError as exc:  # e.g. a test split without labelled series
            evaluations[where][role] = None
            notes.append(str(exc))
    decision = promotion_decision(
        class_dice(evaluations["test"]["parent"]),
        class_dice(evaluations["test"]["candidate"]),
        platform.settings.retrain_margin,
    )
    reviewed_rows = promotion_decision(
        class_dice(evaluations["reviewed"]["parent"]),
        class_dice(evaluations["reviewed"]["candidate"]),
        platform.settings.retrain_margin,
    )["classes"]
    return {
        **decision,
        "parent_id": parent_id,
        "dataset_version_id": dataset_version_id,
        "evaluations": {
            where: {role: e.id if e is not None else None for role, e in found.items()}
            for where, found in evaluations.items()
        },
        "mean_dice": {
            where: {
                role: (e.metrics or {}).get("mean_dice") if e is not None else None
                for role, e in found.items()
            }
            for where, found in evaluations.items()
        },
        "reviewed": {"series": len(reviewed_series), "classes": reviewed_rows},
        "notes": notes,
    }


def _decide(
    platform: Platform,
    candidate_id: int,
    comparison: dict[str, Any],
    created_by: str,
    progress: ProgressFn,
) -> ModelVersion:
    promote = bool(comparison["promote"])
    with platform.sessions.begin() as session:
        candidate = get_version(session, candidate_id)
        candidate.comparison = comparison
        candidate.status = ModelVersionStatus.PROMOTED if promote else ModelVersionStatus.CANDIDATE
        audit.record(
            session,
            created_by or POLICY_ACTOR.username,
            "model.promote" if promote else "model.keep_candidate",
            f"model_version:{candidate.id}",
            model=candidate.model.name,
            parent=comparison["parent_id"],
            reason=comparison["reason"],
            mean_dice=comparison["mean_dice"],
        )
    verdict = "promoted" if promote else "kept as a candidate"
    progress(1.0, f"model version {candidate_id} {verdict}: {comparison['reason']}")
    return candidate


def _scaled(progress: ProgressFn, start: float, share: float) -> ProgressFn:
    def report(fraction: float, message: str) -> None:
        progress(start + share * min(max(fraction, 0.0), 1.0), message)

    return report


# --- use cases ----------------------------------------------------------------------------------


def pending_retrain(session: Session, model: Model) -> Job | None:
    """The retrain job of ``model`` that is queued or running, if there is one."""
    jobs = session.scalars(
        select(Job)
        .where(Job.kind == RETRAIN, Job.state.in_((JobState.QUEUED, JobState.RUNNING)))
        .order_by(Job.id)
    )
    return next((j for j in jobs if (j.payload or {}).get("model") == model.name), None)


def _queue(
    session: Session,
    platform: Platform,
    actor: Actor,
    model: Model,
    iterations: int | None,
    **detail: Any,
) -> Job:
    payload: dict[str, Any] = {"model": model.name}
    if iterations is not None:
        payload["iterations"] = iterations
    return queue_job(
        session, platform, actor, RETRAIN, payload, target=f"model:{model.id}", **detail
    )


def request_retrain(
    platform: Platform,
    actor: Actor,
    *,
    model: str | int,
    iterations: int | None = None,
    via: str | None = None,
) -> Job:
    """Queue a retrain of ``model`` (its name, or its id); audited.

    :param iterations: fine-tuning iterations (default: the setting ``retrain_iterations``).
    :raises PermissionDenied: ``actor`` is not a researcher or admin.
    :raises NotFound: there is no such model.
    :raises InputError: iterations out of range, a model without a promoted version or whose
        backend is not enabled.
    :raises Conflict: a retrain of the model is already queued or running.
    """
    require_role(actor, OPERATORS, "retrain models")
    if iterations is not None and (
        isinstance(iterations, bool) or not 0 < iterations <= MAX_ITERATIONS
    ):
        raise InputError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS}")
    with platform.sessions.begin() as session:
        found = _model(session, model)
        _current(session, found)
        check_backend(platform, found.backend)
        # the model's row is locked (PostgreSQL) so two requests cannot both see no retrain
        session.get(Model, found.id, with_for_update=True)
        pending = pending_retrain(session, found)
        if pending is not None:
            raise Conflict(
                f"retrain job {pending.id} of model {found.name!r} is already "
                f"{pending.state.value}; wait for it or cancel it"
            )
        return _queue(session, platform, actor, found, iterations, **({"via": via} if via else {}))


def _model(session: Session, model: str | int) -> Model:
    if isinstance(model, int) and not isinstance(model, bool):
        found = session.get(Model, model)
        if found is not None:
            return found
        return get_model(session, f"#{model}")  # NotFound, listing the models
    return get_model(session, str(model))


def after_reviewed_label_version(
    platform: Platform, session: Session, label_set: LabelSet
) -> Job | None:
    """The retrain policy, called where a reviewed label version is saved, in that unit of
    work: with the setting ``retrain_after_reviewed`` N > 0, queue a retrain of the model whose
    prediction ``label_set`` was made from once N reviewed label versions of that model's
    predictions are new (saved after its newest version's retrain built its dataset; all of
    them while it has not been retrained) and none is queued or running. Returns the job queued,
    if any; audited as the policy's (``job.submit.retrain``, ``via: policy``).
    """
    threshold = platform.settings.retrain_after_reviewed
    if threshold <= 0 or label_set.prediction_id is None:
        return None
    prediction = session.get(Prediction, label_set.prediction_id)
    if prediction is None:
        return None
    model = prediction.model_version.model
    if current_version(session, model) is None:
        return None
    watermark = max(
        (
            int((v.learned_from or {}).get("label_set_watermark") or 0)
            for v in session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id))
        ),
        default=0,
    )
    new = session.scalar(
        _reviewed_of_model(model)
        .where(LabelSet.id > watermark)
        .with_only_columns(func.count(LabelSet.id))
    )
    if (new or 0) < threshold:
        return None
    session.get(Model, model.id, with_for_update=True)
    if pending_retrain(session, model) is not None:
        return None
    return _queue(
        session, platform, POLICY_ACTOR, model, None, via="policy", reviewed_label_versions=new
    )
