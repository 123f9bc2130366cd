"""What runs inside a job's child process.

The worker starts one child per job (``spawn``, so the child has no state from the parent but
the settings it is given). The settings travel as the :class:`~radseg.settings.Settings` object,
pickled through the private pipe on which ``spawn`` hands the child its arguments: secrets
(``SecretStr`` PACS passwords and tokens) arrive with their real values, and never pass through
a command line, the environment, the job row or a log. The child builds its own platform, runs
the handler for the job's kind, streams progress into the job row, and sends exactly one message
back through the pipe: ``("ok", result)`` or ``("error", message, retryable)``. If it dies
without a message (OOM kill, segfault, ``terminate``), the worker decides from the exit code.

The child leads its own process group (``setsid``), so that cancelling the job kills everything
it started (detectron2's ``launch`` processes, data-loader workers) with one ``killpg``; and it
dies with its worker (``PR_SET_PDEATHSIG`` plus a watchdog), so that a worker killed with
``kill -9`` leaves no orphan running a job that the queue will give to another worker.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError

from radseg.errors import RadsegError

if TYPE_CHECKING:
    from radseg.settings import Settings

log = logging.getLogger(__name__)

#: how often progress is written to the database at most (seconds)
PROGRESS_INTERVAL = 0.5


def _setup_logging(handler: logging.Handler) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), handler],
        force=True,
    )


def _die_with_parent(parent_pid: int) -> None:
    """Kill this job's whole process group as soon as the worker that started it is gone."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us with the worker
    except OSError:  # not Linux: the watchdog alone
        pass

    def watchdog() -> None:
        # PDEATHSIG kills this process only; the watchdog also takes its helpers down.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watchdog, name="radseg-watchdog", daemon=True).start()


def child_main(
    settings: Settings,
    job_id: int,
    worker_id: str,
    conn: Connection,
    cuda_visible_devices: str | None,
    parent_pid: int | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    """Entry point of the child process (must stay importable and picklable for ``spawn``).

    ``environment``: variables to set first; a gang job's rank gets ``NODE_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` (:mod:`radseg.jobs.gangs`), and its payload gains
    ``num_machines`` and ``machine_rank``.
    """
    os.setsid()
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    if cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    os.environ.update(environment or {})
    # This process was spawned; helpers it starts itself (torch DataLoader workers) should be
    # forked, as they would be from any Linux process, so that they inherit what plugins set up
    # at run time (detectron2's compat patches) instead of re-importing modules without it.
    multiprocessing.set_start_method("fork", force=True)
    from radseg.core import create_platform
    from radseg.db.models import Job
    from radseg.jobs import leases
    from radseg.jobs.handlers import handler_for
    from radseg.jobs.logs import job_log_handler

    _setup_logging(job_log_handler(settings, job_id))
    platform = create_platform(settings)
    try:
        with platform.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise RadsegError(f"job {job_id} vanished before it started")
            kind, payload = job.kind, dict(job.payload)
            if job.machines > 1:
                payload["num_machines"] = job.machines
                payload["machine_rank"] = int((environment or {}).get("NODE_RANK", 0))
        last = 0.0

        def progress(fraction: float, message: str) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_INTERVAL and fraction < 1.0:
                return
            last = now
            try:
                with platform.sessions.begin() as session:
                    leases.set_progress(session, job_id, worker_id, fraction, message)
            except OperationalError as exc:  # the database is away: skip this report
                log.warning("job %s: progress not recorded: %s", job_id, exc)

        handler: Callable[..., dict[str, Any]] = handler_for(kind, platform)
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
