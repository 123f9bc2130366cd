"""The plugin the job tests load: test scaffolding that the product does not ship.

* job kind ``noop``: sleeps in steps reporting progress, appends its id to a file, keeps a
  checkpoint, starts a helper process, fails on request — what the queue and worker tests
  observe;
* dataset source ``gated-dicom-folder``: the DICOM folder source, but it yields each series only
  once the test opens its gate (a file), so a test can look at the database and the web while
  an ingest job is half-way;
* model backend ``threshold``: labels every voxel whose first channel reaches the config's
  ``threshold`` as class 1, in microseconds, so that hundreds of real prediction jobs (the
  workflow's reads, mask files and rows) can run in a test of the queue.

It is loaded the supported way for a plugin that is not a distribution: the ``plugin_modules``
setting (``RADSEG_PLUGIN_MODULES=tests.jobs_plugin`` for ``radseg worker`` processes; the
:func:`with_jobs_plugin` settings for a platform made in the test), which every process reads,
job processes included.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from radseg.contracts import (
    PredictRequest,
    ProgressFn,
    ReadRequest,
    SeriesVolume,
    TrainRequest,
    TrainResult,
)
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.settings import Settings
from radseg.storage import atomic_write_text

MODULE = __name__
log = logging.getLogger(__name__)


def with_jobs_plugin(settings: Settings) -> Settings:
    """``settings`` with this module in ``plugin_modules``."""
    return settings.model_copy(update={"plugin_modules": (*settings.plugin_modules, MODULE)})


def workdir(platform: Any, job_id: int) -> Path:
    """Where a ``noop`` job keeps its checkpoint: the worker's work folder of the job."""
    from radseg.jobs.handlers import job_workdir

    return job_workdir(platform, "noop", job_id)


class NoopJob:
    """Does nothing, observably.

    Payload (all optional): ``sleep`` seconds, in ``steps`` steps, reporting progress;
    ``append_to``: a file that gets the job id as one line (``O_APPEND``: one ``write``, so
    concurrent jobs never interleave); ``checkpoint``: keep the number of steps done in the job's
    work folder and resume from it, as a training job resumes from its checkpoint; ``raise``:
    ``"input"`` raises an input error (not retried), ``"error"`` any other exception (retried);
    ``helper``: start a helper process first (as a data loader would); ``record_env``: a file
    that gets one JSON line per run with the machine rank and rendezvous it ran with (a gang
    job's ranks, :mod:`radseg.jobs.gangs`) and the step it started at; ``ranks``: with
    ``record_env``, wait (at most 60 s) until that many runs have recorded theirs, as a gang's
    ranks wait for each other at their rendezvous (a real gang job's rank 0 cannot finish
    before the others have joined: without it, rank 0 could end the attempt before rank 1's
    process had started).
    """

    name: ClassVar[str] = "noop"

    def run(
        self, platform: Any, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
    ) -> dict[str, Any]:
        if payload.get("helper"):
            helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            log.info("job %s: helper process %s started", job_id, helper.pid)
        seconds = float(payload.get("sleep", 0))
        steps = max(int(payload.get("steps", seconds * 10)), 1)
        start = 0
        state_file = workdir(platform, job_id) / "checkpoint.json"
        if payload.get("checkpoint") and state_file.exists():
            start = int(json.loads(state_file.read_text())["steps_done"])
            progress(start / steps, f"resuming at step {start}/{steps}")
        if payload.get("record_env"):
            seen = {k: os.environ.get(k) for k in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
            seen["machine_rank"] = payload.get("machine_rank")
            seen["pid"] = os.getpid()
            seen["start"] = start
            line = json.dumps(seen) + "\n"
            fd = os.open(str(payload["record_env"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            _wait_for_lines(Path(payload["record_env"]), int(payload.get("ranks", 0)))
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


def _wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    """Until ``path`` has ``count`` lines (the ranks' barrier of ``record_env``)."""
    deadline = time.monotonic() + timeout
    while len(path.read_text().splitlines()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} ranks did not all record their runs in {timeout:.0f} s")
        time.sleep(0.05)


def gate(path: Path, k: int) -> Path:
    """The file that lets ``gated-dicom-folder`` yield series ``k`` (0-based) of ``path``
    (beside the folder, so that the reader never sees it)."""
    path = Path(path)
    return path.parent / f"{path.name}.gates" / str(k)


class GatedDicomFolder:
    """``dicom-folder``, yielding series ``k`` once ``gate(path, k)`` exists.

    While it waits it reports ``waiting at series k of n`` again and again (the job process
    drops reports closer than half a second apart), so that a test can wait for exactly that.
    """

    name: ClassVar[str] = "gated-dicom-folder"

    def read(self, request: ReadRequest, progress: ProgressFn) -> Iterator[SeriesVolume]:
        from radseg_plugins.datasets.dicom_folder import DicomFolderSource

        volumes = sorted(DicomFolderSource().read(request, progress), key=lambda v: v.patient_key)
        for k, volume in enumerate(volumes):
            while not gate(request.path, k).exists():
                progress(k / len(volumes), f"waiting at series {k} of {len(volumes)}")
                time.sleep(0.05)
            yield volume


@hookimpl
def radseg_register_job_kinds() -> list[type]:
    return [NoopJob]


@hookimpl
def radseg_register_datasets() -> list[type]:
    return [GatedDicomFolder]


class ThresholdModel:
    """A model with nothing to learn: class 1 where the first channel is ``>= threshold``."""

    name: ClassVar[str] = "threshold"
    architectures: ClassVar[tuple[str, ...]] = ("threshold",)

    def train(self, request: TrainRequest, progress: ProgressFn) -> TrainResult:
        raise InputError("the threshold model is not trained; make its version directly")

    def predict(self, request: PredictRequest, progress: ProgressFn) -> np.ndarray:
        threshold = int(request.config.get("threshold", 128))
        return (request.images[..., 0] >= threshold).astype(np.uint8)


#: the recipe's one channel maps HU 0 to 102 and HU 200 to 230: threshold 128 separates them
THRESHOLD_RECIPE = {"channels": ["soft_tissue"]}
THRESHOLD_SHAPE = (2, 4, 4)


def add_threshold_series(
    platform: Any, count: int, seed: int = 0
) -> tuple[int, dict[str, np.ndarray]]:
    """``count`` tiny CT series, each its own study, and a threshold model version; returns the
    version's id and the mask each series must get."""
    from radseg.contracts import Geometry
    from radseg.db.models import Dataset, DatasetVersion, Model, ModelVersion, Series, Study
    from radseg.imaging.volumes import write_volume

    rng = np.random.default_rng(seed)
    geometry = Geometry(
        size=(THRESHOLD_SHAPE[2], THRESHOLD_SHAPE[1], THRESHOLD_SHAPE[0]),
        spacing=(1.0, 1.0, 2.0),
        origin=(0.0, 0.0, 0.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )
    expected: dict[str, np.ndarray] = {}
    classes = [{"id": 1, "name": "bright"}]
    with platform.sessions.begin() as session:
        version = ModelVersion(
            model=Model(name="threshold", backend="threshold"),
            dataset_version=DatasetVersion(
                dataset=Dataset(name="scale"),
                version=1,
                content_hash="0" * 64,
                classes=classes,
                recipe=THRESHOLD_RECIPE,
                split={},
                path="datasets/scale/v1",
            ),
            config={"classes": classes, "threshold": 128},
            weights_path="models/threshold/model_final.pth",
        )
        session.add(version)
        for k in range(count):
            hu = np.where(rng.random(THRESHOLD_SHAPE) < 0.5, 200.0, 0.0).astype(np.float32)
            uid = f"2.25.{seed}.{k}"
            volume = platform.path("volumes", f"scale-{k}.nii.gz")
            write_volume(volume, hu, geometry)
            session.add(
                Series(
                    study=Study(study_instance_uid=f"{uid}.0", patient_key=f"p{k}"),
                    series_instance_uid=uid,
                    modality="CT",
                    geometry=geometry.to_dict(),
                    volume_path=platform.relative(volume),
                )
            )
            expected[uid] = (hu == 200.0).astype(np.uint8)
        session.flush()
        return version.id, expected


@hookimpl
def radseg_register_models() -> list[type]:
    return [ThresholdModel]
