"""Train a model version from a dataset version with a model plugin."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from radseg.contracts import ProgressFn, TrainRequest, no_progress
from radseg.core import Platform
from radseg.db.models import Model, ModelVersion
from radseg.errors import InputError
from radseg.model_registry import code_version, config_hash
from radseg.workflows.datasets import classes_from_rows, get_dataset, latest_version


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
) -> ModelVersion:
    """Train ``backend`` on the latest version of ``dataset``; commits the new ModelVersion.

    The output folder is keyed by the job, so a job that is re-run (retry, expired lease)
    finds its checkpoints and resumes instead of starting from zero.
    """
    backend_cls = platform.plugins.models.get(backend)
    architecture = config.get("architecture") or backend_cls.architectures[0]
    if architecture not in backend_cls.architectures:
        raise InputError(
            f"backend {backend!r} has no architecture {architecture!r}; "
            f"choose one of: {', '.join(backend_cls.architectures)}"
        )
    with platform.sessions() as session:
        version = latest_version(session, get_dataset(session, dataset))
        dataset_version_id = version.id
        classes = classes_from_rows(version.classes)
        dataset_path = platform.resolve(version.path)
    output_dir = platform.path("models", f"job-{job_id}")
    request = TrainRequest(
        dataset_dir=dataset_path,
        output_dir=output_dir,
        classes=classes,
        config={**config, "architecture": architecture},
        resume=True,
        device=platform.settings.device,
    )
    result = platform.plugins.model_backend(backend).train(request, progress)
    stored_config = {
        **result.config,
        "backend": backend,
        "architecture": architecture,
        "classes": [asdict(c) for c in classes],
        "iterations": result.iterations,
    }
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
        )
        session.add(model_version)
        session.flush()
    score = (result.metrics.get("val") or {}).get("mean_dice")
    summary = f", val mean Dice {score:.3f}" if isinstance(score, float) else ""
    progress(1.0, f"model version {model_version.id} saved{summary}")
    return model_version
