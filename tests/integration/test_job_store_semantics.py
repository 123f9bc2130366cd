"""Queue semantics on SQLite and the real PostgreSQL: fairness, dependencies, retries, cancel,
resubmit, batches, GPUs, events, progress and logs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import Job, JobEvent, JobState
from radseg.errors import JobError
from radseg.jobs import leases, store
from radseg.jobs.logs import append_job_log, job_log_path, read_job_log
from radseg.jobs.worker import Worker
from radseg.settings import Settings
from tests.jobs_plugin import with_jobs_plugin


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with the test plugin loaded (job kind ``noop``)."""
    return with_jobs_plugin(settings)


def _submit(platform: Platform, kind: str = "noop", payload: dict | None = None, **kw) -> int:
    with platform.sessions.begin() as session:
        return store.submit(session, kind, payload or {}, **kw).id


def _job(platform: Platform, job_id: int) -> Job:
    with platform.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _events(platform: Platform, job_id: int) -> list[JobEvent]:
    with platform.sessions() as session:
        events = list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )
        session.expunge_all()
        return events


def _finish(platform: Platform, job_id: int, worker: str) -> None:
    with platform.sessions.begin() as session:
        leases.complete(session, job_id, worker, {})


# -- fairness ----------------------------------------------------------------------------------


def test_one_users_500_jobs_do_not_starve_another_users_one(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        store.submit_many(session, "noop", [{"n": i} for i in range(500)], created_by="alice")
    first = leases.claim(platform.engine, "w")  # alice's first job is already running
    assert first is not None and first.created_by == "alice"
    bob = _submit(platform, created_by="bob")
    second = leases.claim(platform.engine, "w")
    assert second is not None and second.id == bob  # next, not after alice's other 499


def test_two_busy_users_alternate_and_priority_still_comes_first(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        store.submit_many(session, "noop", [{}] * 6, created_by="alice")
        store.submit_many(session, "noop", [{}] * 6, created_by="bob")
    urgent = _submit(platform, priority=5, created_by="alice")
    order = []
    while (job := leases.claim(platform.engine, "w")) is not None:
        order.append((job.id, job.created_by))
    assert order[0] == (urgent, "alice")
    users = [user for _, user in order[1:]]
    assert users == ["alice", "bob"] * 6
    # a user's own jobs still run in the order they were submitted
    alice_ids = [job_id for job_id, user in order[1:] if user == "alice"]
    assert alice_ids == sorted(alice_ids)


# -- dependencies ------------------------------------------------------------------------------


def test_a_job_waits_for_the_jobs_it_depends_on(platform: Platform) -> None:
    train = _submit(platform, created_by="r")
    predict = _submit(platform, depends_on=[train], created_by="r")
    export = _submit(platform, depends_on=[predict], created_by="r")
    claimed = leases.claim(platform.engine, "w")
    assert claimed is not None and claimed.id == train
    assert leases.claim(platform.engine, "w") is None  # predict waits for train
    _finish(platform, train, "w")
    claimed = leases.claim(platform.engine, "w")
    assert claimed is not None and claimed.id == predict
    assert leases.claim(platform.engine, "w") is None
    _finish(platform, predict, "w")
    claimed = leases.claim(platform.engine, "w")
    assert claimed is not None and claimed.id == export
    assert "waits for jobs" in _events(platform, predict)[0].message


def test_a_failed_dependency_fails_its_dependents_with_the_reason(platform: Platform) -> None:
    train = _submit(platform, max_attempts=1)
    predict = _submit(platform, depends_on=[train])
    export = _submit(platform, depends_on=[predict])
    unrelated = _submit(platform)
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session:
        leases.fail(session, train, "w", "CUDA out of memory", retryable=True)
    for dependent, cause in ((predict, train), (export, predict)):
        job = _job(platform, dependent)
        assert job.state == JobState.FAILED
        assert f"dependency job {cause} (noop) failed" in job.message
        last = _events(platform, dependent)[-1]
        assert (last.from_state, last.to_state, last.actor) == ("queued", "failed", "w")
    assert "CUDA out of memory" in _job(platform, predict).message
    assert _job(platform, unrelated).state == JobState.QUEUED
    with pytest.raises(JobError, match="resubmit them first"):
        _submit(platform, depends_on=[train])


def test_cancelling_a_dependency_cancels_its_dependents(platform: Platform) -> None:
    train = _submit(platform)
    predict = _submit(platform, depends_on=[train])
    with platform.sessions.begin() as session:
        store.cancel(session, train, "alice")
    job = _job(platform, predict)
    assert job.state == JobState.CANCELLED
    assert f"dependency job {train} (noop) cancelled: cancelled by alice" in job.message


def test_a_dependency_on_a_missing_job_is_refused(platform: Platform) -> None:
    with pytest.raises(JobError, match=r"do not exist: \[9999\]"):
        _submit(platform, depends_on=[9999])


# -- retries -----------------------------------------------------------------------------------


def test_input_errors_fail_at_once_other_errors_retry_with_backoff(platform: Platform) -> None:
    bad_input = _submit(platform, payload={"raise": "input"}, max_attempts=3)
    flaky = _submit(platform, payload={"raise": "error"}, max_attempts=3)
    Worker(platform, burst=True, inline_kinds=["noop"]).run()
    failed = _job(platform, bad_input)
    assert failed.state == JobState.FAILED and failed.attempts == 1
    assert "not retried (input error)" in _events(platform, bad_input)[-1].message
    retried = _job(platform, flaky)
    assert retried.state == JobState.QUEUED and retried.attempts == 1
    assert retried.run_after > utcnow() + timedelta(seconds=3)  # backoff: not yet runnable
    assert "retry in 5 s after: RuntimeError: noop asked to fail" in (
        _events(platform, flaky)[-1].message
    )


def test_the_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    policy = leases.RetryPolicy(base_seconds=5, factor=4, max_seconds=600)
    assert [policy.delay(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [5, 20, 80, 320, 600]


# -- cancel, resubmit, events ------------------------------------------------------------------


def test_cancel_records_who_and_resubmit_links_a_new_job(platform: Platform) -> None:
    job_id = _submit(platform, payload={"sleep": 1}, priority=3, created_by="alice")
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "bob")
    event = _events(platform, job_id)[-1]
    assert (event.from_state, event.to_state, event.actor) == ("queued", "cancelled", "bob")
    assert "cancelled by bob" in event.message and event.created_at is not None
    with platform.sessions.begin() as session:
        new = store.resubmit(session, job_id, "alice")
        new_id = new.id
    again = _job(platform, new_id)
    assert again.state == JobState.QUEUED and again.resubmitted_from == job_id
    assert again.payload == {"sleep": 1} and again.priority == 3
    assert f"resubmitted from job {job_id}" in _events(platform, new_id)[0].message
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session, pytest.raises(JobError, match="cancel it first"):
        store.resubmit(session, new_id, "alice")


def test_cancel_of_a_running_job_is_a_request_the_worker_sees(platform: Platform) -> None:
    job_id = _submit(platform)
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "alice")
    # the job's process reports progress until the worker stops it: the request stays visible
    with platform.sessions.begin() as session:
        assert not leases.set_progress(session, job_id, "w", 0.5, "step 5/10")
    with platform.sessions.begin() as session:
        assert leases.heartbeat(session, job_id, "w", 60) == "cancel"
        leases.mark_cancelled(session, job_id, "w")
    job = _job(platform, job_id)
    assert job.state == JobState.CANCELLED
    assert _events(platform, job_id)[-1].message == "cancel requested by alice"


# -- batches and GPUs --------------------------------------------------------------------------


def test_batch_claims_are_disjoint_and_in_claim_order(platform: Platform) -> None:
    with platform.sessions.begin() as session:
        ids = [j.id for j in store.submit_many(session, "noop", [{}] * 10)]
    first = leases.claim_batch(platform.engine, "a", limit=4)
    second = leases.claim_batch(platform.engine, "b", limit=4)
    assert [j.id for j in first] == ids[:4] and [j.id for j in second] == ids[4:8]
    with platform.sessions.begin() as session:
        assert leases.complete_batch(session, "a", {j.id: {"n": j.id} for j in first + second}) == [
            j.id for j in first
        ]  # only a's own leases
    assert _job(platform, ids[0]).result == {"n": ids[0]}
    assert _job(platform, ids[4]).state == JobState.RUNNING
    assert [e.to_state for e in _events(platform, ids[0])] == ["queued", "running", "succeeded"]


def test_gpu_jobs_are_claimed_only_where_their_gpus_fit(platform: Platform) -> None:
    cpu = _submit(platform, "noop", {})
    two = _submit(platform, "train", {"dataset": "d", "backend": "b", "config": {"num_gpus": 2}})
    one = _submit(platform, "predict", {"model_version_id": 1, "series_instance_uid": "1"})
    assert (_job(platform, cpu).gpus, _job(platform, two).gpus, _job(platform, one).gpus) == (
        0,
        2,
        1,
    )
    assert [j.id for j in leases.claim_batch(platform.engine, "w", limit=5, gpus=(0, 0))] == [cpu]
    assert [j.id for j in leases.claim_batch(platform.engine, "w", limit=5, gpus=(1, 1))] == [one]
    assert [j.id for j in leases.claim_batch(platform.engine, "w", limit=5, gpus=(1, 2))] == [two]


def test_num_gpus_must_be_a_whole_number(platform: Platform) -> None:
    with pytest.raises(JobError, match="num_gpus must be a whole number"):
        _submit(platform, "train", {"num_gpus": "two"})


# -- progress and logs -------------------------------------------------------------------------


def test_progress_gives_an_eta(platform: Platform) -> None:
    job_id = _submit(platform)
    leases.claim(platform.engine, "w")
    with platform.sessions.begin() as session:
        session.get(Job, job_id).started_at = utcnow() - timedelta(seconds=30)
    with platform.sessions.begin() as session:
        assert leases.set_progress(session, job_id, "w", 0.25, "epoch 1/4")
    job = _job(platform, job_id)
    eta = store.eta_seconds(job)
    assert eta is not None and 85 < eta < 100  # 30 s for a quarter: about 90 s to go
    assert job.message == "epoch 1/4"


def test_job_logs_are_read_from_an_offset_in_whole_lines(platform: Platform) -> None:
    settings = platform.settings
    assert read_job_log(settings, 7, 0) == ("", 0)
    append_job_log(settings, 7, "first")
    text, offset = read_job_log(settings, 7, 0)
    assert text.endswith("WORKER first\n") and offset == len(text.encode())
    with Path(job_log_path(settings, 7)).open("a") as handle:
        handle.write("half a li")
    assert read_job_log(settings, 7, offset) == ("", offset)  # not a whole line yet
    with Path(job_log_path(settings, 7)).open("a") as handle:
        handle.write("ne\n")
    assert read_job_log(settings, 7, offset)[0] == "half a line\n"
