"""The job store and the worker, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import Job, JobEvent, JobState
from radseg.jobs import leases, store
from radseg.jobs.logs import read_job_log
from radseg.jobs.worker import Worker
from radseg.settings import Settings
from tests.integration.jobs_support import job as load_job
from tests.integration.jobs_support import submit
from tests.jobs_plugin import with_jobs_plugin


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with the test plugin loaded (job kind ``noop``)."""
    return with_jobs_plugin(settings)


def test_claim_leases_the_most_urgent_job_once(platform: Platform) -> None:
    low = submit(platform, priority=0)
    high = submit(platform, priority=5)
    later = submit(platform, priority=9, run_after=utcnow() + timedelta(hours=1))
    first = leases.claim(platform.engine, "w1")
    second = leases.claim(platform.engine, "w2")
    assert (first.id, second.id) == (high, low)
    assert leases.claim(platform.engine, "w3") is None  # `later` is not runnable yet
    running = load_job(platform, high)
    assert running.state == JobState.RUNNING
    assert running.lease_owner == "w1" and running.attempts == 1
    assert load_job(platform, later).state == JobState.QUEUED


def test_only_the_lease_owner_can_finish_a_job(platform: Platform) -> None:
    job_id = submit(platform)
    leases.claim(platform.engine, "owner")
    with platform.sessions.begin() as session:
        assert leases.heartbeat(session, job_id, "intruder", 60) == "lost"
        assert leases.fail(session, job_id, "intruder", "boom") is None
    with platform.sessions.begin() as session:
        leases.complete(session, job_id, "owner", {"ok": True})
    done = load_job(platform, job_id)
    assert done.state == JobState.SUCCEEDED and done.result == {"ok": True}
    with platform.sessions() as session:
        states = [
            e.to_state
            for e in session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
        ]
    assert states == ["queued", "running", "succeeded"]


def test_retry_policy_requeues_with_backoff_then_fails(platform: Platform) -> None:
    job_id = submit(platform, max_attempts=2)
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session:
        leases.fail(session, job_id, "w", "flaky disk")
    retried = load_job(platform, job_id)
    assert retried.state == JobState.QUEUED
    assert retried.run_after > utcnow() + timedelta(seconds=2)  # backoff, not a hot loop
    with platform.sessions.begin() as session:
        session.get(Job, job_id).run_after = utcnow()
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session:
        leases.fail(session, job_id, "w", "flaky disk again")
    failed = load_job(platform, job_id)
    assert failed.state == JobState.FAILED and failed.attempts == 2
    assert "flaky disk again" in failed.message


def test_expired_lease_is_requeued_by_the_reaper(platform: Platform) -> None:
    job_id = submit(platform)
    leases.claim(platform.engine, "dead-worker", lease_seconds=0.05)
    time.sleep(0.2)
    with platform.sessions.begin() as session:
        assert leases.reap_expired(session) == [job_id]
    job = load_job(platform, job_id)
    assert job.state == JobState.QUEUED and job.lease_owner is None
    assert "dead-worker" in job.message
    again = leases.claim(platform.engine, "alive")
    assert again is not None and again.id == job_id and again.attempts == 2


def test_cancel_of_a_queued_job_is_immediate(platform: Platform) -> None:
    job_id = submit(platform)
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "alice")
    assert load_job(platform, job_id).state == JobState.CANCELLED
    assert leases.claim(platform.engine, "w") is None


def _claim_all(settings_data: dict, worker_id: str, results: mp.Queue) -> None:
    from radseg.core import create_platform

    platform = create_platform(Settings(**settings_data), autoload=False)
    claimed = []
    while (job := leases.claim(platform.engine, worker_id)) is not None:
        with platform.sessions.begin() as session:
            leases.complete(session, job.id, worker_id, {"by": worker_id})
        claimed.append(job.id)
    results.put(claimed)
    platform.close()


def test_concurrent_workers_run_every_job_exactly_once(platform: Platform) -> None:
    n_jobs, n_workers = 120, 4
    with platform.sessions.begin() as session:
        for _ in range(n_jobs):
            store.submit(session, "noop", {})
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    data = platform.settings.model_dump(mode="json")
    procs = [
        ctx.Process(target=_claim_all, args=(data, f"w{i}", results)) for i in range(n_workers)
    ]
    for p in procs:
        p.start()
    claimed = [job_id for _ in procs for job_id in results.get(timeout=120)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == n_jobs
    with platform.sessions() as session:
        running_events = session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.to_state == "running")
        )
        succeeded = session.scalar(
            select(func.count()).select_from(Job).where(Job.state == JobState.SUCCEEDED)
        )
    assert running_events == n_jobs and succeeded == n_jobs


def test_worker_runs_a_job_in_a_child_process(platform: Platform) -> None:
    job_id = submit(platform, "noop", {"sleep": 0.2})
    assert Worker(platform, burst=True).run() == 1
    job = load_job(platform, job_id)
    assert job.state == JobState.SUCCEEDED
    assert job.result == {
        "job_id": job_id,
        "slept": 0.2,
        "resumed_at_step": 0,
        "cuda_visible_devices": None,  # a worker without --gpus leaves the variable alone
    }
    assert job.progress == 1.0


def test_a_job_with_bad_input_fails_once_with_its_reason(platform: Platform) -> None:
    job_id = submit(platform, "train", {"dataset": "nope", "backend": "detectron2"})
    Worker(platform, burst=True).run()
    job = load_job(platform, job_id)
    assert job.state == JobState.FAILED
    assert job.attempts == 1  # input errors are not retried
    assert "dataset 'nope' does not exist" in job.message


def _run_worker_in_thread(platform: Platform) -> tuple[Worker, threading.Thread]:
    worker = Worker(platform)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def _wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def _child_pid(job_id: int) -> int | None:
    for child in mp.active_children():
        if child.name == f"radseg-job-{job_id}":
            return child.pid
    return None


def test_cancel_stops_a_running_job_instead_of_waiting_for_it(platform: Platform) -> None:
    # The job would run for an hour: it can only end as cancelled, in this test's lifetime, if
    # the worker terminates its process (no wall-clock bound is asserted; _wait_for only keeps a
    # broken cancel from hanging the suite).
    job_id = submit(platform, "noop", {"sleep": 3600})
    worker, thread = _run_worker_in_thread(platform)
    try:
        pid = _wait_for(lambda: _child_pid(job_id))
        _wait_for(lambda: load_job(platform, job_id).progress > 0)
        with platform.sessions.begin() as session:
            store.cancel(session, job_id, "alice")
        _wait_for(lambda: load_job(platform, job_id).state == JobState.CANCELLED, timeout=120)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        text, _ = read_job_log(platform.settings, job_id)
        assert f"cancelled; process {pid} and its group stopped" in text
    finally:
        worker.stop()
        thread.join(timeout=10)


def test_a_killed_job_process_fails_the_attempt_and_the_worker_lives_on(platform: Platform) -> None:
    doomed = submit(platform, "noop", {"sleep": 60}, max_attempts=1)
    worker, thread = _run_worker_in_thread(platform)
    try:
        pid = _wait_for(lambda: _child_pid(doomed))
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: load_job(platform, doomed).state == JobState.FAILED, timeout=20)
        assert "SIGKILL" in load_job(platform, doomed).message
        after = submit(platform, "noop", {})
        _wait_for(lambda: load_job(platform, after).state == JobState.SUCCEEDED, timeout=30)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(timeout=10)
