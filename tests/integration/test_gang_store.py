"""The job store's side of gang jobs (radseg.jobs.gangs), on SQLite and PostgreSQL: joining is
all or nothing, one worker per machine, under the job row's lock; a lost member fails the
attempt for the group; ordinary claims never take a gang job."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import JobGangMember, JobState
from radseg.jobs import gangs, leases, store
from tests.integration.jobs_support import events, job, submit


def _members(platform: Platform, job_id: int) -> list[tuple[int, str, str]]:
    with platform.sessions() as session:
        rows = session.execute(
            select(JobGangMember.rank, JobGangMember.worker_id, JobGangMember.host)
            .where(JobGangMember.job_id == job_id)
            .order_by(JobGangMember.rank)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_gang_forms_one_machine_per_rank_and_starts_when_complete(platform: Platform) -> None:
    job_id = submit(platform, "train", {"num_gpus": 1}, machines=2)
    assert leases.claim(platform.engine, "w-ordinary") is None  # never claimed as one job
    first = gangs.join(platform.engine, "w1", "m1")
    assert first is not None and first.rank == 0 and first.job.id == job_id
    assert job(platform, job_id).state == JobState.QUEUED  # forming: still queued
    assert gangs.join(platform.engine, "w1b", "m1") is None  # a second worker on m1
    second = gangs.join(platform.engine, "w2", "m2")
    assert second is not None and second.rank == 1
    running = job(platform, job_id)
    assert running.state == JobState.RUNNING and running.attempts == 1
    assert running.lease_owner == "w1"  # rank 0's worker holds the job's lease
    assert gangs.join(platform.engine, "w3", "m3") is None  # no rank left
    assert _members(platform, job_id) == [(0, "w1", "m1"), (1, "w2", "m2")]
    with platform.sessions.begin() as session:
        assert gangs.beat(session, job_id, "w2", 60).state == "starting"
        assert gangs.publish(session, job_id, "w2", "10.0.0.2", 29501) is False  # not rank 0
        assert gangs.publish(session, job_id, "w1", "10.0.0.1", 29500) is True
    with platform.sessions.begin() as session:
        ready = gangs.beat(session, job_id, "w2", 60)
    assert ready.state == "ready" and ready.rendezvous == {
        "addr": "10.0.0.1",
        "port": 29500,
        "attempt": 1,
    }
    assert gangs.gang_env(1, ready.rendezvous) == {
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }


def test_racing_workers_make_exactly_one_gang(platform: Platform) -> None:
    job_id = submit(platform, "noop", {}, machines=3)
    start = threading.Barrier(6)
    seats: list[gangs.Seat | None] = []

    def racer(i: int) -> None:
        start.wait()
        seats.append(gangs.join(platform.engine, f"w{i}", f"m{i}"))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    joined = [s for s in seats if s is not None]
    assert sorted(s.rank for s in joined) == [0, 1, 2]
    assert len(_members(platform, job_id)) == 3
    done = job(platform, job_id)
    assert done.state == JobState.RUNNING and done.attempts == 1


def test_an_ordinary_job_behind_a_forming_gang_is_claimed(platform: Platform) -> None:
    gang = submit(platform, "noop", {}, machines=2)
    other = submit(platform, "noop", {})
    assert gangs.join(platform.engine, "w1", "m1") is not None
    claimed = leases.claim(platform.engine, "w2")
    assert claimed is not None and claimed.id == other
    with platform.sessions.begin() as session:
        assert gangs.leave(session, gang, "w1", "gave its slot back") is True
    assert _members(platform, gang) == []
    assert job(platform, gang).state == JobState.QUEUED
    assert events(platform, gang)[-1][1:] == ("queued", "w1", "gave its slot back")


def test_a_gang_waits_for_its_turn_in_claim_order(platform: Platform) -> None:
    urgent = submit(platform, "noop", {}, priority=5)
    gang = submit(platform, "noop", {}, machines=2)
    assert gangs.join(platform.engine, "w1", "m1") is None  # the urgent job first
    assert gangs.join(platform.engine, "w1", "m1", kinds=["other"]) is None
    claimed = leases.claim(platform.engine, "w1")
    assert claimed is not None and claimed.id == urgent
    seat = gangs.join(platform.engine, "w2", "m2")
    assert seat is not None and seat.job.id == gang
    behind = submit(platform, "noop", {})
    assert gangs.join(platform.engine, "w3", "m3") is not None  # ahead of the later job
    assert job(platform, behind).state == JobState.QUEUED


def test_a_member_whose_lease_expired_fails_the_attempt_for_the_group(
    platform: Platform,
) -> None:
    job_id = submit(platform, "noop", {}, machines=2, max_attempts=3)
    assert gangs.join(platform.engine, "w1", "m1") is not None
    assert gangs.join(platform.engine, "w2", "m2") is not None
    with platform.sessions.begin() as session:  # w2's machine stops renewing
        session.execute(
            update(JobGangMember)
            .where(JobGangMember.worker_id == "w2")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with platform.sessions.begin() as session:
        assert gangs.reap_members(session, "reaper") == [job_id]
    again = job(platform, job_id)
    assert again.state == JobState.QUEUED and again.attempts == 1
    assert "rank 1 (w2) expired" in again.message
    assert _members(platform, job_id) == []  # every slot freed
    with platform.sessions.begin() as session:  # w1 sees it at its next heartbeat
        assert gangs.beat(session, job_id, "w1", 60).state == "gone"


def test_a_failed_rank_fails_the_attempt_and_cancel_reaches_every_rank(
    platform: Platform,
) -> None:
    job_id = submit(platform, "noop", {}, machines=2, max_attempts=1)
    assert gangs.join(platform.engine, "w1", "m1") is not None
    assert gangs.join(platform.engine, "w2", "m2") is not None
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "tester")
    for worker in ("w1", "w2"):
        with platform.sessions.begin() as session:
            assert gangs.beat(session, job_id, worker, 60).state == "cancel"
    with platform.sessions.begin() as session:
        failed = gangs.fail_attempt(session, job_id, "w2", "rank 1 crashed")
    assert failed is not None and failed.state == JobState.CANCELLED  # a cancel was asked
    assert _members(platform, job_id) == []
    with platform.sessions.begin() as session:
        assert gangs.fail_attempt(session, job_id, "w1", "too late") is None


def test_a_drained_member_sends_the_gang_back_without_using_an_attempt(
    platform: Platform,
) -> None:
    job_id = submit(platform, "noop", {}, machines=2)
    assert gangs.join(platform.engine, "w1", "m1") is not None
    assert gangs.join(platform.engine, "w2", "m2") is not None
    with platform.sessions.begin() as session:
        assert gangs.stop_attempt(session, job_id, "w2", "worker w2 shut down")
    again = job(platform, job_id)
    assert again.state == JobState.QUEUED and again.attempts == 0
    assert _members(platform, job_id) == []


def test_a_forming_gang_cancelled_frees_its_members(platform: Platform) -> None:
    job_id = submit(platform, "noop", {}, machines=2)
    assert gangs.join(platform.engine, "w1", "m1") is not None
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "tester")
    assert job(platform, job_id).state == JobState.CANCELLED
    assert _members(platform, job_id) == []
    with platform.sessions.begin() as session:
        status = gangs.beat(session, job_id, "w1", 60)
    assert status.state == "gone" and status.job_state == JobState.CANCELLED
