"""Helpers for the worker tests: real ``radseg worker`` processes against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Job, JobEvent
from radseg.jobs import store
from tests.jobs_plugin import MODULE as JOBS_PLUGIN

T = TypeVar("T")
RADSEG = str(Path(sys.executable).with_name("radseg"))
#: the repository root: ``tests.jobs_plugin`` must import in the worker processes too
REPO = Path(__file__).resolve().parents[2]


def submit(platform: Platform, kind: str = "noop", payload: dict | None = None, **kw: Any) -> int:
    with platform.sessions.begin() as session:
        return store.submit(session, kind, payload or {}, **kw).id


def job(platform: Platform, job_id: int) -> Job:
    with platform.sessions() as session:
        found = session.get(Job, job_id)
        assert found is not None
        session.expunge(found)
        return found


def events(platform: Platform, job_id: int) -> list[tuple[str | None, str, str, str]]:
    with platform.sessions() as session:
        return [
            (e.from_state, e.to_state, e.actor, e.message)
            for e in session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
        ]


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout} s")


def start_worker(
    platform: Platform,
    *args: str,
    lease_seconds: float = 3.0,
    database_url: str | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``radseg worker ARGS`` in its own process, on the platform's home and database, with
    ``env`` added to its environment."""
    settings = platform.settings
    env = {
        **os.environ,
        "RADSEG_HOME": str(settings.home),
        "RADSEG_DATABASE_URL": database_url or settings.database_url_resolved,
        "RADSEG_LEASE_SECONDS": str(lease_seconds),
        "RADSEG_HEARTBEAT_SECONDS": str(lease_seconds / 4),
        "RADSEG_POLL_SECONDS": "0.1",
        "RADSEG_DEID_KEY": "k" * 32,
        "RADSEG_SECRET_KEY": "s" * 32,
        # the test plugin (job kind noop, dataset source gated-dicom-folder), as every radseg
        # process loads a plugin module that is not a distribution
        "RADSEG_PLUGIN_MODULES": ",".join(dict.fromkeys((*settings.plugin_modules, JOBS_PLUGIN))),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        ),
        **(env or {}),
    }
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen([RADSEG, "worker", *args], env=env, stdout=out, stderr=out)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
