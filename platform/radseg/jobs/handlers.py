"""Job kinds and the functions that run them inside the worker's child process.

A handler is ``handler(platform, payload, *, progress, job_id) -> dict`` (the JSON result).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radseg.contracts import ProgressFn
from radseg.core import Platform
from radseg.errors import JobError

Handler = Callable[..., dict[str, Any]]

log = logging.getLogger(__name__)


def _ingest(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    from radseg.workflows.ingest import ingest

    report = ingest(  # commits series by series (a job step each)
        platform,
        Path(payload["path"]),
        labels=Path(payload["labels"]) if payload.get("labels") else None,
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
    with platform.sessions.begin() as session:
        version = build_version(
            platform,
            session,
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
    from radseg.workflows.training import train

    config = dict(payload.get("config", {}))
    if payload.get("num_gpus"):  # the worker gave the job this many devices; use them all
        config.setdefault("num_gpus", int(payload["num_gpus"]))
    model_version = train(
        platform,
        dataset=payload["dataset"],
        backend=payload["backend"],
        config=config,
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


def _noop(
    platform: Platform, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
) -> dict[str, Any]:
    """Does nothing, in a way that health checks, drills and queue benchmarks can observe.

    Payload (all optional): ``sleep`` seconds, in ``steps`` steps, reporting progress;
    ``append_to``: a file that gets the job id as one line (``O_APPEND``: one ``write``, so
    concurrent jobs never interleave), the side effect that proves a job ran and how often;
    ``checkpoint``: keep the number of steps done in the job's work folder and resume from it,
    as a training job resumes from its checkpoint; ``raise``: ``"input"`` raises an input
    error (not retried), ``"error"`` any other exception (retried); ``helper``: start a helper
    process first (as a data loader would), to drill that a cancel stops all a job started.
    """
    import json
    import os
    import time

    from radseg.errors import InputError
    from radseg.storage import atomic_write_text

    if payload.get("helper"):
        import subprocess
        import sys

        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        log.info("job %s: helper process %s started", job_id, helper.pid)
    seconds = float(payload.get("sleep", 0))
    steps = max(int(payload.get("steps", seconds * 10)), 1)
    start = 0
    state_file = job_workdir(platform, "noop", job_id) / "checkpoint.json"
    if payload.get("checkpoint") and state_file.exists():
        start = int(json.loads(state_file.read_text())["steps_done"])
        progress(start / steps, f"resuming at step {start}/{steps}")
    for i in range(start, steps):
        time.sleep(seconds / steps)
        if payload.get("checkpoint"):
            state_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state_file, json.dumps({"steps_done": i + 1}))
        progress((i + 1) / steps, f"step {i + 1}/{steps}")
    if payload.get("raise") == "input":
        raise InputError("noop asked to fail with an input error")
    if payload.get("raise") == "error":
        raise RuntimeError("noop asked to fail")
    if payload.get("append_to"):
        fd = os.open(str(payload["append_to"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{job_id}\n".encode())
        finally:
            os.close(fd)
    return {
        "job_id": job_id,
        "slept": seconds,
        "resumed_at_step": start,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def job_workdir(platform: Platform, kind: str, job_id: int) -> Path:
    """Where a job keeps what a re-run resumes from; removed when the job is cancelled.

    Training keeps its checkpoints under ``models/job-<id>`` (the resumable output folder);
    any other kind gets ``jobs/job-<id>``.
    """
    if kind == "train":
        return platform.path("models", f"job-{job_id}")
    return platform.path("jobs", f"job-{job_id}")


HANDLERS: dict[str, Handler] = {
    "noop": _noop,
    "ingest": _ingest,
    "build-dataset": _build_dataset,
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
    "export": _export,
}


def handler_for(kind: str) -> Handler:
    try:
        return HANDLERS[kind]
    except KeyError:
        raise JobError(
            f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(HANDLERS))}"
        ) from None
