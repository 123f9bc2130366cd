"""Train a model version from a dataset version with a model plugin."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from radseg import audit
from radseg.contracts import FineTune, ProgressFn, TrainRequest, no_progress
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetVersion, Job, Model, ModelVersion, ModelVersionStatus
from radseg.errors import InputError, NotFound
from radseg.jobs import store
from radseg.jobs.store import MAX_MACHINES
from radseg.model_registry import code_version, config_hash
from radseg.roles import OPERATORS, Actor, require_role
from radseg.workflows.datasets import classes_from_rows, get_dataset, latest_version
from radseg.workflows.doubt import reference_of_dataset
from radseg.workflows.jobs import queue_job

#: training options a retrain sets itself rather than take from its parent's training
FINE_TUNE_OWN_OPTIONS = frozenset({"iterations", "weights", "num_gpus"})


def train(
    platform: Platform,
    *,
    dataset: str,
    backend: str,
    config: dict[str, Any],
    job_id: int,
    created_by: str = "",
    model_name: str | None = None,
    progress: ProgressFn = no_progress,
    dataset_version_id: int | None = None,
    parent: ModelVersion | None = None,
    learned_from: dict[str, Any] | None = None,
) -> ModelVersion:
    """Train ``backend`` on the latest version of ``dataset``; commits the new ModelVersion.

    The output folder is keyed by the job, so a job that is re-run (retry, expired lease)
    finds its checkpoints and resumes instead of starting from zero.

    A retrain (:mod:`radseg.workflows.retrain`) names the ``dataset_version_id`` to train on and
    the ``parent`` version to fine-tune from: the new version is then a candidate with that
    parent and ``learned_from``; otherwise it is promoted at once.
    """
    request, dataset_version_id = _train_request(
        platform, dataset, backend, config, job_id, dataset_version_id, parent
    )
    architecture = str(request.config["architecture"])
    classes, dataset_path = request.classes, request.dataset_dir
    result = platform.plugins.model_backend(backend).train(request, progress)
    stored_config = {
        **result.config,
        "backend": backend,
        "architecture": architecture,
        "classes": [asdict(c) for c in classes],
        "iterations": result.iterations,
        # the options it was trained with, which a retrain fine-tunes with again
        "options": {k: v for k, v in config.items() if k not in FINE_TUNE_OWN_OPTIONS},
    }
    # what review priority compares predictions with (radseg.workflows.doubt), made once here
    reference = reference_of_dataset(dataset_path, classes)
    with platform.sessions.begin() as session:
        name = model_name or f"{dataset}-{architecture}"
        model = session.scalars(select(Model).where(Model.name == name)).first()
        if model is None:
            model = Model(name=name, backend=backend)
            session.add(model)
            session.flush()
        config_json = json.loads(json.dumps(stored_config, default=str))
        metrics = json.loads(json.dumps(result.metrics, default=str))
        history = metrics.pop("history", None)
        model_version = ModelVersion(
            model_id=model.id,
            dataset_version_id=dataset_version_id,
            config=config_json,
            metrics=metrics,
            history={"validations": history, "best": metrics.get("best")} if history else None,
            config_hash=config_hash(config_json),
            code_version=code_version(),
            weights_path=platform.relative(result.weights),
            created_by=created_by,
            status=ModelVersionStatus.PROMOTED if parent is None else ModelVersionStatus.CANDIDATE,
            parent_id=parent.id if parent is not None else None,
            learned_from=learned_from,
            reference_stats=reference,
        )
        session.add(model_version)
        session.flush()
    score = (result.metrics.get("val") or {}).get("mean_dice")
    summary = f", val mean Dice {score:.3f}" if isinstance(score, float) else ""
    progress(1.0, f"model version {model_version.id} saved{summary}")
    return model_version


def train_machine_rank(
    platform: Platform,
    *,
    dataset: str,
    backend: str,
    config: dict[str, Any],
    job_id: int,
    machine_rank: int,
    dataset_version_id: int | None = None,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Run machine ``machine_rank`` (> 0) of a training that spans ``config["num_machines"]``
    machines (a gang job, :mod:`radseg.jobs.gangs`): the same request as :func:`train`'s, so
    that every rank trains the same model in the shared output folder; rank 0 records the
    model version, this rank only its part."""
    request, _ = _train_request(
        platform, dataset, backend, config, job_id, dataset_version_id, None
    )
    result = platform.plugins.model_backend(backend).train(request, progress)
    return {"machine_rank": machine_rank, "iterations": result.iterations}


def _train_request(
    platform: Platform,
    dataset: str,
    backend: str,
    config: dict[str, Any],
    job_id: int,
    dataset_version_id: int | None,
    parent: ModelVersion | None,
) -> tuple[TrainRequest, int]:
    """What the backend trains (resumable: the output folder is the job's) and the dataset
    version it trains on."""
    backend_cls = platform.plugins.models.get(backend)
    architecture = config.get("architecture") or backend_cls.architectures[0]
    if architecture not in backend_cls.architectures:
        raise InputError(
            f"backend {backend!r} has no architecture {architecture!r}; "
            f"choose one of: {', '.join(backend_cls.architectures)}"
        )
    with platform.sessions() as session:
        version = (
            session.get(DatasetVersion, dataset_version_id)
            if dataset_version_id is not None
            else None
        ) or latest_version(session, get_dataset(session, dataset))
        classes = classes_from_rows(version.classes)
        dataset_path = platform.resolve(version.path)
        version_id = version.id
    request = TrainRequest(
        dataset_dir=dataset_path,
        output_dir=platform.path("models", f"job-{job_id}"),
        classes=classes,
        config={**config, "architecture": architecture},
        resume=True,
        device=platform.settings.device,
        fine_tune=(
            FineTune(platform.resolve(parent.weights_path), parent.config)
            if parent is not None
            else None
        ),
    )
    return request, version_id


# --- use cases ----------------------------------------------------------------------------------

#: the most training iterations a request may ask for
MAX_ITERATIONS = 10_000_000
#: the most GPUs (processes) per machine a training request may ask for
MAX_GPUS_PER_MACHINE = 64


def request_training(
    platform: Platform,
    actor: Actor,
    *,
    dataset: str,
    backend: str,
    architecture: str | None = None,
    iterations: int | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    via: str | None = None,
    machines: int = 1,
    gpus_per_machine: int | None = None,
) -> Job:
    """Queue a job that trains ``backend`` on the newest version of ``dataset``; audited.

    Everything the worker would refuse is refused now: an unknown backend or architecture (the
    message lists the valid ones), iterations out of range, a dataset without a built version.

    :param options: backend options (``eval_period``, ``patience``, ...), the base of the config.
    :param overrides: backend config overrides (``MODEL.RESNETS.DEPTH``: 50).
    :param machines: machines that train together (torch.distributed); more than one makes
        a gang job that as many workers on different machines run at once
        (:mod:`radseg.jobs.gangs`).
    :param gpus_per_machine: GPUs each machine trains on (processes, on a CPU); default 1.
    """
    require_role(actor, OPERATORS, "train models")
    check_backend(platform, backend, architecture)
    if isinstance(machines, bool) or not 1 <= machines <= MAX_MACHINES:
        raise InputError(f"machines must be a whole number from 1 to {MAX_MACHINES}")
    if gpus_per_machine is not None and (
        isinstance(gpus_per_machine, bool) or not 1 <= gpus_per_machine <= MAX_GPUS_PER_MACHINE
    ):
        raise InputError(
            f"gpus per machine must be a whole number from 1 to {MAX_GPUS_PER_MACHINE}"
        )
    config: dict[str, Any] = dict(options or {})
    if architecture:
        config["architecture"] = architecture
    if iterations is not None:
        if isinstance(iterations, bool) or not 0 < iterations <= MAX_ITERATIONS:
            raise InputError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS}")
        config["iterations"] = iterations
    if overrides:
        config["overrides"] = dict(overrides)
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        found = session.scalars(select(Dataset).where(Dataset.name == dataset)).first()
        if found is None:
            names = ", ".join(session.scalars(select(Dataset.name).order_by(Dataset.name)))
            raise NotFound(f"there is no dataset {dataset!r} (datasets: {names or 'none'})")
        if not found.versions:
            raise InputError(
                f"dataset {dataset!r} has no built version yet; build it first "
                f"(`radseg datasets build {dataset}` or the Datasets page)"
            )
        payload: dict[str, Any] = {"dataset": dataset, "backend": backend, "config": config}
        if gpus_per_machine is not None:
            payload["num_gpus"] = gpus_per_machine
        if machines == 1:
            return queue_job(
                session, platform, actor, "train", payload, target=f"dataset:{found.id}", **extra
            )
        # every rank must train on one dataset version: the newest now, not each rank's newest
        # when it starts (a version built in between would split them)
        payload["dataset_version_id"] = latest_version(session, found).id
        job = store.submit(
            session,
            "train",
            {**payload, "created_by": actor.username},
            max_attempts=platform.settings.max_attempts,
            created_by=actor.username,
            machines=machines,
        )
        audit.record(
            session,
            actor.username,
            "job.submit.train",
            f"dataset:{found.id}",
            job=job.id,
            machines=machines,
            **extra,
        )
        return job


def check_backend(platform: Platform, backend: str, architecture: str | None = None) -> None:
    """:class:`InputError` unless ``backend`` is an enabled model backend and ``architecture``
    (when given) one of its architectures; the message lists the valid names."""
    if backend not in platform.plugins.models:
        enabled = ", ".join(platform.plugins.models) or "none"
        raise InputError(f"unknown backend {backend!r}; enabled backends: {enabled}")
    architectures = platform.plugins.models.get(backend).architectures
    if architecture and architecture not in architectures:
        raise InputError(
            f"backend {backend!r} has no architecture {architecture!r}; "
            f"choose one of: {', '.join(architectures)}"
        )
