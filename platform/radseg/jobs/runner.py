"""What runs inside a job's child process.

The worker starts one child per job (``spawn``, so the child has no state from the parent but
the settings it is given). The child builds its own platform, runs the handler for the job's
kind, streams progress into the job row, and sends exactly one message back through the pipe:
``("ok", result)`` or ``("error", message, retryable)``. If it dies without a message (OOM kill,
segfault, ``terminate``), the worker decides from the exit code.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from radseg.errors import RadsegError

log = logging.getLogger(__name__)

#: how often progress is written to the database at most (seconds)
PROGRESS_INTERVAL = 0.5


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def child_main(
    settings_data: dict[str, Any],
    job_id: int,
    worker_id: str,
    conn: Connection,
    cuda_visible_devices: str | None,
) -> None:
    """Entry point of the child process (must stay importable and picklable for ``spawn``)."""
    if cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    # This process was spawned; helpers it starts itself (torch DataLoader workers) should be
    # forked, as they would be from any Linux process, so that they inherit what plugins set up
    # at run time (detectron2's compat patches) instead of re-importing modules without it.
    multiprocessing.set_start_method("fork", force=True)
    from radseg.core import create_platform
    from radseg.db.models import Job
    from radseg.jobs import store
    from radseg.jobs.handlers import handler_for
    from radseg.settings import Settings

    settings = Settings(**settings_data)
    _setup_logging(str(settings.path("logs", f"job-{job_id}.log")))
    platform = create_platform(settings)
    try:
        with platform.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise RadsegError(f"job {job_id} vanished before it started")
            kind, payload = job.kind, dict(job.payload)
        last = 0.0

        def progress(fraction: float, message: str) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_INTERVAL and fraction < 1.0:
                return
            last = now
            with platform.sessions.begin() as session:
                store.set_progress(session, job_id, worker_id, fraction, message)

        handler: Callable[..., dict[str, Any]] = handler_for(kind)
        log.info("job %s (%s) started by %s", job_id, kind, worker_id)
        result = handler(platform, payload, progress=progress, job_id=job_id)
        conn.send(("ok", result))
    except RadsegError as exc:
        log.error("job %s failed: %s", job_id, exc)
        conn.send(("error", str(exc), False))
    except Exception as exc:
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        conn.send(("error", f"{type(exc).__name__}: {exc}", True))
    finally:
        conn.close()
        platform.close()
