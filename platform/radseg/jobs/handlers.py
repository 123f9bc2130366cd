"""Job kinds and the functions that run them inside the worker's child process.

A handler is ``handler(platform, payload, *, progress, job_id) -> dict`` (the JSON result).
The built-in kinds are here; plugins add theirs with ``radseg_register_job_kinds``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from radseg.contracts import ProgressFn
from radseg.core import Platform
from radseg.errors import JobError

Handler = Callable[..., dict[str, Any]]


def _ingest(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.ingest import ingest
    from radseg.workflows.upload_folders import upload_path

    report = ingest(  # commits series by series (a job step each)
        platform,
        upload_path(platform, payload),  # a web upload's folder, checked; else the CLI's
        labels=Path(payload["labels"]) if payload.get("labels") else None,
        class_map=Path(payload["class_map"]) if payload.get("class_map") else None,
        dataset=payload.get("dataset"),
        source=payload.get("source", "dicom-folder"),
        progress=progress,
        allow_burned_in=payload.get("allow_burned_in"),
    )
    return report.to_dict()


def _build_dataset(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.imaging.channels import ChannelRecipe
    from radseg.workflows.datasets import build_version

    recipe = ChannelRecipe.from_dict(payload["recipe"]) if payload.get("recipe") else None
    version = build_version(  # its own unit of work: the row is committed when it returns
        platform,
        payload["dataset"],
        recipe=recipe,
        seed=int(payload.get("seed", 0)),
        polygons=bool(payload.get("polygons", False)),
        progress=progress,
    )
    return {
        "dataset_version_id": version.id,
        "version": version.version,
        "content_hash": version.content_hash,
    }


def _train(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.training import train, train_machine_rank

    config = dict(payload.get("config", {}))
    if payload.get("num_gpus"):  # the worker gave the job this many devices; use them all
        config.setdefault("num_gpus", int(payload["num_gpus"]))
    if int(payload.get("num_machines", 1)) > 1:  # one rank of a gang (radseg.jobs.gangs)
        config["num_machines"] = int(payload["num_machines"])
        rank = int(payload.get("machine_rank", 0))
        if rank > 0:
            return train_machine_rank(
                platform,
                dataset=payload["dataset"],
                backend=payload["backend"],
                config=config,
                job_id=job_id,
                machine_rank=rank,
                dataset_version_id=payload.get("dataset_version_id"),
                progress=progress,
            )
    model_version = train(
        platform,
        dataset=payload["dataset"],
        backend=payload["backend"],
        config=config,
        job_id=job_id,
        created_by=payload.get("created_by", ""),
        dataset_version_id=payload.get("dataset_version_id"),  # a gang's, pinned when queued
        progress=progress,
    )
    return {"model_version_id": model_version.id, "metrics": model_version.metrics}


def _predict(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.prediction import predict

    prediction = predict(
        platform,
        model_version_id=int(payload["model_version_id"]),
        series_instance_uid=payload["series_instance_uid"],
        progress=progress,
    )
    return {
        "prediction_id": prediction.id,
        "metrics": prediction.metrics,
        "priority": prediction.priority,
        "priority_reason": prediction.priority_reason,
    }


def _evaluate(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.evaluation import evaluate

    evaluation = evaluate(
        platform,
        model_version_id=int(payload["model_version_id"]),
        split=payload.get("split", "test"),
        dataset_version_id=payload.get("dataset_version_id"),
        created_by=payload.get("created_by", ""),
        progress=progress,
    )
    return {
        "evaluation_id": evaluation.id,
        "mean_dice": evaluation.metrics.get("mean_dice"),
        "report_path": evaluation.report_path,
    }


def _retrain(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    """Payload: ``model`` (its name), optional ``iterations``. Builds, fine-tunes, evaluates and
    promotes or keeps a candidate (radseg.workflows.retrain), each step its own unit of work."""
    from radseg.workflows.retrain import retrain

    version = retrain(
        platform,
        model=str(payload["model"]),
        job_id=job_id,
        iterations=payload.get("iterations"),
        created_by=payload.get("created_by", ""),
        progress=progress,
    )
    comparison = version.comparison or {}
    return {
        "model_version_id": version.id,
        "status": version.status.value,
        "parent_id": version.parent_id,
        "reason": comparison.get("reason"),
        "mean_dice": comparison.get("mean_dice"),
    }


def _export(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    """Payload: ``prediction_id``, ``format``, optional ``out``, ``to_pacs``, ``options``,
    ``with_images``, ``corrected``. A failed check fails the job with the reasons (an input
    error: not retried); the export row records every check either way."""
    from radseg.workflows.exporting import export

    outcome = export(
        platform,
        prediction_id=int(payload["prediction_id"]),
        fmt=str(payload["format"]),
        out=Path(payload["out"]) if payload.get("out") else None,
        to_pacs=payload.get("to_pacs") or None,
        options=payload.get("options") or {},
        with_images=bool(payload.get("with_images")),
        corrected=bool(payload.get("corrected")),
        actor=payload.get("created_by", "worker"),
        progress=progress,
    )
    return {
        "export_id": outcome.export_id,
        "status": outcome.status,
        "path": str(outcome.path) if outcome.path else None,
        "out": str(outcome.out) if outcome.out else None,
        "checks": [c.to_dict() for c in outcome.checks],
    }


def _agreement(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    """Payload: ``case_id`` (a reading case with two or more submitted readings)."""
    from radseg.workflows.adjudication import compute_agreement

    case = compute_agreement(
        platform,
        int(payload["case_id"]),
        actor=payload.get("created_by", "worker"),
        progress=progress,
    )
    report = case.agreement or {}
    return {
        "case_id": case.id,
        "readings": report.get("readings", []),
        "mean_pairwise_dice": {
            c: v["mean_pairwise_dice"] for c, v in report.get("per_class", {}).items()
        },
    }


def job_workdir(platform: Platform, kind: str, job_id: int) -> Path:
    """Where a job keeps what a re-run resumes from; removed when the job is cancelled.

    Training (and a retrain's fine-tuning) keeps its checkpoints under ``models/job-<id>`` (the
    resumable output folder);
    any other kind gets ``jobs/job-<id>``.
    """
    if kind in ("train", "retrain"):
        return platform.path("models", f"job-{job_id}")
    return platform.path("jobs", f"job-{job_id}")


HANDLERS: dict[str, Handler] = {
    "ingest": _ingest,
    "build-dataset": _build_dataset,
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
    "export": _export,
    "agreement": _agreement,
    "retrain": _retrain,
}


def handler_for(kind: str, platform: Platform | None = None) -> Handler:
    """The function that runs jobs of ``kind``: a built-in one, or one that a plugin of
    ``platform`` registers (``radseg_register_job_kinds``)."""
    if kind in HANDLERS:
        return HANDLERS[kind]
    if platform is not None and kind in platform.plugins.job_kinds:
        return platform.plugins.job_kind(kind).run
    known = sorted(HANDLERS) + (platform.plugins.job_kinds.names() if platform else [])
    raise JobError(
        f"unknown job kind {kind!r}; known kinds: {', '.join(known)} (a plugin's kind is "
        "known only where the plugin is installed and enabled)"
    )
