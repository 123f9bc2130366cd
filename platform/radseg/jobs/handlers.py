"""Job kinds and the functions that run them inside the worker's child process.

A handler is ``handler(platform, payload, *, progress, job_id) -> dict`` (the JSON result).
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

    with platform.sessions.begin() as session:
        report = ingest(
            platform,
            session,
            Path(payload["path"]),
            labels=Path(payload["labels"]) if payload.get("labels") else None,
            dataset=payload.get("dataset"),
            source=payload.get("source", "dicom-folder"),
            progress=progress,
        )
    return report.to_dict()


def _build_dataset(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.datasets import build_version

    with platform.sessions.begin() as session:
        version = build_version(platform, session, payload["dataset"], progress=progress)
        return {
            "dataset_version_id": version.id,
            "version": version.version,
            "content_hash": version.content_hash,
        }


def _train(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.training import train

    model_version = train(
        platform,
        dataset=payload["dataset"],
        backend=payload["backend"],
        config=payload.get("config", {}),
        job_id=job_id,
        created_by=payload.get("created_by", ""),
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
    return {"prediction_id": prediction.id, "metrics": prediction.metrics}


def _export(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.exporting import export

    path = export(
        platform,
        prediction_id=int(payload["prediction_id"]),
        fmt=payload["format"],
        out=Path(payload["out"]),
        actor=payload.get("created_by", "worker"),
    )
    return {"path": str(path)}


def _noop(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    """Does nothing (optionally for ``sleep`` seconds): health checks and queue benchmarks."""
    import time

    seconds = float(payload.get("sleep", 0))
    steps = max(int(seconds * 10), 1)
    for i in range(steps):
        time.sleep(seconds / steps)
        progress((i + 1) / steps, "sleeping")
    return {"job_id": job_id, "slept": seconds}


HANDLERS: dict[str, Handler] = {
    "noop": _noop,
    "ingest": _ingest,
    "build-dataset": _build_dataset,
    "train": _train,
    "predict": _predict,
    "export": _export,
}


def handler_for(kind: str) -> Handler:
    try:
        return HANDLERS[kind]
    except KeyError:
        raise JobError(
            f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(HANDLERS))}"
        ) from None
