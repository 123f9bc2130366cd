"""Real ``radseg worker`` processes, on SQLite and PostgreSQL: exactly once under concurrency;
``kill -9`` of a worker, cancel of a running job, graceful drain on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radseg.core import Platform
from radseg.db.models import Job, JobEvent, JobState
from radseg.jobs import store
from radseg.jobs.logs import read_job_log
from radseg.settings import Settings
from tests import jobs_plugin
from tests.integration.jobs_support import (
    events,
    job,
    pid_alive,
    start_worker,
    submit,
    wait_for,
)
from tests.jobs_plugin import with_jobs_plugin


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with the test plugin loaded (job kind ``noop``)."""
    return with_jobs_plugin(settings)


def _stop(*workers: subprocess.Popen[bytes]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)


def _count(platform: Platform, state: JobState) -> int:
    with platform.sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(Job).where(Job.state == state)) or 0
        )


def _log_pid(platform: Platform, job_id: int, pattern: str) -> int | None:
    text, _ = read_job_log(platform.settings, job_id, 0)
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def test_eight_workers_run_every_job_exactly_once(platform: Platform, tmp_path: Path) -> None:
    postgres = platform.engine.dialect.name == "postgresql"
    n_jobs = 2000 if postgres else 200
    ledger = tmp_path / "ran.txt"
    payload: dict[str, object] = {"append_to": str(ledger)}
    if not postgres:
        # 200 instant no-ops are four claim batches, which one SQLite worker can finish before
        # the others' next poll; 5 ms each makes a batch outlast the 50 ms poll interval, so
        # the test proves the sharing it asserts instead of depending on the scheduler
        payload["sleep"] = 0.005
    logs = [tmp_path / f"worker-{i}.log" for i in range(8)]
    workers = [
        start_worker(platform, "--inline-kinds", "noop", "--concurrency", "0", log=log)
        for log in logs
    ]
    try:
        # all eight are up and idle before the jobs arrive, so that they really race
        wait_for(lambda: all("started" in log.read_text() for log in logs), timeout=120)
        with platform.sessions.begin() as session:
            jobs = store.submit_many(session, "noop", [payload] * n_jobs, created_by="bench")
            ids = {j.id for j in jobs}
        wait_for(lambda: _count(platform, JobState.SUCCEEDED) == n_jobs, timeout=240, interval=0.2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        _stop(*workers)
    ran = Counter(int(line) for line in ledger.read_text().split())
    assert set(ran) == ids
    assert max(ran.values()) == 1  # nothing ran twice...
    assert sum(ran.values()) == n_jobs  # ...and nothing was lost
    with platform.sessions() as session:
        succeeded = session.scalar(
            select(func.count()).select_from(Job).where(Job.state == JobState.SUCCEEDED)
        )
        claims = session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.to_state == "running")
        )
        workers_used = session.scalar(
            select(func.count(func.distinct(JobEvent.actor))).where(JobEvent.to_state == "running")
        )
    assert succeeded == n_jobs and claims == n_jobs
    assert workers_used >= 2  # the work was actually shared (claims are batches of 50)


def test_a_killed_worker_s_job_is_requeued_and_resumes_from_its_checkpoint(
    platform: Platform, tmp_path: Path
) -> None:
    ledger = tmp_path / "ran.txt"
    job_id = submit(
        platform, payload={"sleep": 4, "steps": 8, "checkpoint": True, "append_to": str(ledger)}
    )
    first = start_worker(platform, "--inline-kinds", "", lease_seconds=2)
    second = None
    try:
        wait_for(lambda: job(platform, job_id).progress >= 0.25, timeout=60, interval=0.02)
        child = _log_pid(platform, job_id, r"process (\d+)")
        assert child is not None and pid_alive(child)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # the job's process dies with its worker: no orphan keeps working on a requeued job
        wait_for(lambda: not pid_alive(child), timeout=5)
        second = start_worker(platform, "--inline-kinds", "", lease_seconds=2)
        done = wait_for(
            lambda: (j := job(platform, job_id)).state.is_final and j, timeout=90, interval=0.2
        )
    finally:
        _stop(first, *([second] if second else []))
    assert done.state == JobState.SUCCEEDED and done.attempts == 2
    assert done.result is not None and done.result["resumed_at_step"] >= 2  # not from zero
    transitions = [(src, dst) for src, dst, _, _ in events(platform, job_id)]
    assert transitions == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "queued"),  # the lease expired
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    assert "expired" in events(platform, job_id)[2][3]
    assert ledger.read_text().split() == [str(job_id)]


def test_cancel_stops_the_job_process_group_within_seconds_and_removes_outputs(
    platform: Platform,
) -> None:
    # the job would run an hour: its processes gone means the cancel stopped them
    job_id = submit(platform, payload={"sleep": 3600, "checkpoint": True, "helper": True})
    worker = start_worker(platform, "--inline-kinds", "")
    try:
        wait_for(lambda: job(platform, job_id).progress > 0, timeout=60)
        child = _log_pid(platform, job_id, r"process (\d+), ")
        helper = _log_pid(platform, job_id, r"helper process (\d+)")
        assert child and helper and pid_alive(child) and pid_alive(helper)
        workdir = jobs_plugin.workdir(platform, job_id)
        assert workdir.is_dir()  # partial output: the checkpoint
        with platform.sessions.begin() as session:
            store.cancel(session, job_id, "alice")
        # the timeout only guards against a hang; no wall-clock bound is asserted
        wait_for(lambda: not pid_alive(child) and not pid_alive(helper), timeout=30)
        wait_for(lambda: job(platform, job_id).state == JobState.CANCELLED, timeout=10)
        assert not workdir.exists()
        assert worker.poll() is None  # the worker lives on
        after = submit(platform, payload={})
        wait_for(lambda: job(platform, after).state == JobState.SUCCEEDED, timeout=60)
    finally:
        _stop(worker)
    assert events(platform, job_id)[-1][1:] == (
        "cancelled",
        worker_actor(platform, job_id),
        "cancel requested by alice",
    )


def worker_actor(platform: Platform, job_id: int) -> str:
    return next(actor for _, dst, actor, _ in events(platform, job_id) if dst == "running")


def test_sigterm_drains_finishing_short_jobs_and_requeueing_long_ones(platform: Platform) -> None:
    short = submit(platform, payload={"sleep": 3})
    long = submit(platform, payload={"sleep": 120})
    worker = start_worker(platform, "--inline-kinds", "", "--concurrency", "2", "--grace", "4")
    try:
        wait_for(
            lambda: job(platform, short).progress > 0 and job(platform, long).progress > 0,
            timeout=60,
        )
        long_pid = _log_pid(platform, long, r"process (\d+), ")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        _stop(worker)
    assert job(platform, short).state == JobState.SUCCEEDED
    requeued = job(platform, long)
    assert requeued.state == JobState.QUEUED and requeued.attempts == 0  # no attempt used up
    assert "shut down; requeued" in events(platform, long)[-1][3]
    assert long_pid is not None and not pid_alive(long_pid)
    assert os.path.exists(platform.settings.path("logs", f"job-{long}.log"))
