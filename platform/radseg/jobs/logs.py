"""Per-job logs: ``$RADSEG_HOME/logs/job-<id>.log``, written by the job's process and its worker.

Readers poll with an offset (the CLI's ``radseg jobs tail --follow``, the web UI's JSON endpoint),
so a log can be streamed while the job runs without holding anything open.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from radseg.db.base import utcnow
from radseg.settings import Settings

log = logging.getLogger(__name__)

#: at most this many bytes per read, so one poll of a huge log stays small
MAX_CHUNK = 256 * 1024


def job_log_path(settings: Settings, job_id: int) -> Path:
    return settings.path("logs", f"job-{job_id}.log")


def read_job_log(settings: Settings, job_id: int, offset: int = 0) -> tuple[str, int]:
    """The log text from byte ``offset`` on (at most :data:`MAX_CHUNK` bytes) and the next offset.

    Returns ``("", offset)`` while the log does not exist yet. Reads stop at the last complete
    line, so a line being written is returned whole by the next call, never split.
    """
    path = job_log_path(settings, job_id)
    try:
        with path.open("rb") as handle:
            handle.seek(max(offset, 0))
            data = handle.read(MAX_CHUNK)
    except FileNotFoundError:
        return "", offset
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) < MAX_CHUNK:
        return "", offset
    chunk = data[:cut] if cut else data
    return chunk.decode("utf-8", errors="replace"), offset + len(chunk)


def append_job_log(settings: Settings, job_id: int, line: str) -> None:
    """One line from the worker (started, devices, outcome): a single ``O_APPEND`` write."""
    path = job_log_path(settings, job_id)
    stamp = utcnow().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{stamp} WORKER {line}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk must not take the worker down with it
        log.warning("could not write to %s: %s", path, exc)


def job_log_handler(settings: Settings, job_id: int) -> logging.Handler:
    """A handler that appends the job's process's log records to its log file."""
    path = job_log_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
