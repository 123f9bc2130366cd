"""Jobs that span machines (radseg.jobs.gangs): real ``radseg worker`` processes, each told it
is a machine of its own (``--machine``), on SQLite and PostgreSQL, with the test plugin's
``noop`` job: the gang forms all or nothing and runs every rank with the rendezvous rank 0
published; an incomplete gang gives its slot back after the timeout; a lost machine fails the
attempt for the whole group and the retry resumes; cancel stops every rank. The detectron2
training across two machines through the queue is ``test_gang_training.py``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import JobGangMember, JobState
from radseg.jobs import store
from radseg.jobs.logs import read_job_log
from radseg.settings import Settings
from tests.integration.jobs_support import events, job, pid_alive, start_worker, submit, wait_for
from tests.jobs_plugin import with_jobs_plugin

#: what every worker of these tests is told besides its machine name
GANG_ENV = {"RADSEG_GANG_ADDRESS": "127.0.0.1"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return with_jobs_plugin(settings)


def _machine(platform: Platform, name: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    return start_worker(platform, "--machine", name, log=log, env={**GANG_ENV, **env})


def _stop(*workers: subprocess.Popen[bytes]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)


def _members(platform: Platform, job_id: int) -> list[tuple[int, str]]:
    with platform.sessions() as session:
        rows = session.execute(
            select(JobGangMember.rank, JobGangMember.host)
            .where(JobGangMember.job_id == job_id)
            .order_by(JobGangMember.rank)
        )
        return [(r.rank, r.host) for r in rows]


def _rank_pids(platform: Platform, job_id: int) -> dict[int, int]:
    """The process of each rank, from the worker lines of the job's log (latest attempt)."""
    text, _ = read_job_log(platform.settings, job_id, 0)
    found = re.findall(r"process (\d+), .*NODE_RANK=(\d+)", text)
    return {int(rank): int(pid) for pid, rank in found}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_machines_run_one_job_each_with_its_rank(platform: Platform, tmp_path: Path) -> None:
    seen = tmp_path / "ranks.jsonl"
    job_id = submit(
        platform, payload={"record_env": str(seen), "ranks": 2, "sleep": 0.2}, machines=2
    )
    workers = [_machine(platform, f"m{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    rank_1_done = re.compile(
        r"rank 1 of 2 on \S+ (finished its part|stopped: the attempt ended \(succeeded\))"
    )
    try:
        wait_for(lambda: job(platform, job_id).state.is_final, timeout=90)
        wait_for(lambda: rank_1_done.search(read_job_log(platform.settings, job_id, 0)[0]))
    finally:
        _stop(*workers)
    done = job(platform, job_id)
    assert done.state == JobState.SUCCEEDED, (done.message, events(platform, job_id))
    assert done.attempts == 1
    # each rank ran once, with its rank and the rendezvous rank 0 published in the job row
    runs = sorted(
        (json.loads(line) for line in seen.read_text().splitlines()), key=lambda r: r["NODE_RANK"]
    )
    assert [(r["NODE_RANK"], r["machine_rank"]) for r in runs] == [("0", 0), ("1", 1)]
    assert done.rendezvous is not None and done.rendezvous["attempt"] == 1
    assert {(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in runs} == {
        ("127.0.0.1", str(done.rendezvous["port"]))
    }
    assert platform.settings.gang_port_range.start <= done.rendezvous["port"]
    # one attempt by a gang of two machines, recorded as one move to running
    started = [e for e in events(platform, job_id) if e[1] == "running"]
    assert len(started) == 1
    assert "gang of 2 complete" in started[0][3]
    assert " on m1" in started[0][3] and " on m2" in started[0][3]
    assert _members(platform, job_id) == []


def test_an_incomplete_gang_gives_its_slot_back_after_the_timeout(
    platform: Platform, tmp_path: Path
) -> None:
    gang = submit(platform, payload={"sleep": 0}, machines=2)
    other = submit(platform, payload={"sleep": 0})  # queued after the gang job
    worker = _machine(platform, "m1", tmp_path / "w.log", RADSEG_GANG_TIMEOUT_SECONDS="1")
    try:
        wait_for(lambda: _members(platform, gang) == [(0, "m1")], timeout=60)
        gave_back = wait_for(
            lambda: [e for e in events(platform, gang) if "gave its slot back" in e[3]],
            timeout=60,
        )
        # the worker, free again, runs the job behind the gang instead of waiting on it
        wait_for(lambda: job(platform, other).state == JobState.SUCCEEDED, timeout=60)
    finally:
        _stop(worker)
    assert gave_back[0][:2] == ("queued", "queued")
    assert "1 of 2 machines" in gave_back[0][3]
    still = job(platform, gang)
    assert still.state == JobState.QUEUED and still.attempts == 0


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_machine_fails_the_attempt_for_the_gang_and_the_retry_resumes(
    platform: Platform, tmp_path: Path
) -> None:
    """On PostgreSQL, whose reaper skips locked rows; SQLite's: test_gang_training.py."""
    seen = tmp_path / "ranks.jsonl"
    payload = {"sleep": 600, "steps": 6000, "checkpoint": True, "record_env": str(seen)}
    job_id = submit(platform, payload=payload, machines=2, max_attempts=3)
    one, two = (_machine(platform, f"m{i}", tmp_path / f"w{i}.log") for i in (1, 2))
    three = None
    try:
        pids = wait_for(
            lambda: len(_rank_pids(platform, job_id)) == 2 and _rank_pids(platform, job_id),
            timeout=90,
        )
        # a checkpoint to resume from
        wait_for(lambda: job(platform, job_id).progress > 0, timeout=60)
        rank_of_two = dict((h, r) for r, h in _members(platform, job_id))["m2"]
        with platform.sessions() as session:
            worker_of_two = session.scalar(
                select(JobGangMember.worker_id).where(
                    JobGangMember.job_id == job_id, JobGangMember.host == "m2"
                )
            )
        two.send_signal(signal.SIGKILL)  # machine m2 dies with its rank's process
        two.wait(timeout=30)
        wait_for(lambda: not pid_alive(pids[rank_of_two]), timeout=30)
        # the attempt fails for the whole gang: the rank on m1 is stopped too
        back = wait_for(
            lambda: [e for e in events(platform, job_id) if e[:2] == ("running", "queued")],
            timeout=60,
        )
        wait_for(lambda: not pid_alive(pids[1 - rank_of_two]), timeout=30)
        three = _machine(platform, "m3", tmp_path / "w3.log")  # a new machine takes m2's place
        wait_for(
            lambda: (
                job(platform, job_id).attempts == 2
                and job(platform, job_id).state == JobState.RUNNING
            ),
            timeout=90,
        )

        # both ranks of the new attempt (processes the first attempt did not have) start from
        # the checkpoint the first one left; a rank of the first attempt may have started from
        # it too, when the other rank had written it before that rank's process started
        def new_attempt() -> list[dict[str, Any]]:
            runs = [json.loads(line) for line in seen.read_text().splitlines()]
            fresh = [r for r in runs if r["pid"] not in pids.values()]
            return fresh if len({r["machine_rank"] for r in fresh}) == 2 else []

        resumed = wait_for(new_attempt, timeout=60)
        store_cancel(platform, job_id)
        wait_for(lambda: job(platform, job_id).state.is_final, timeout=60)
    finally:
        _stop(*(w for w in (one, two, three) if w is not None))
    # why: the lease of m2's worker expired (its member lease, or the job's if it was rank 0)
    assert f"{worker_of_two}" in back[0][3] and "expired" in back[0][3]
    assert sorted(r["machine_rank"] for r in resumed) == [0, 1]
    assert all(r["start"] > 0 for r in resumed)  # resumed, not started again from step 0
    started = [e[3] for e in events(platform, job_id) if e[1] == "running"]
    assert " on m3" in started[-1] and " on m1" in started[-1]


def store_cancel(platform: Platform, job_id: int) -> None:
    with platform.sessions.begin() as session:
        store.cancel(session, job_id, "tester")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cancel_stops_every_rank(platform: Platform, tmp_path: Path) -> None:
    """On SQLite (a cancel is one flag on the job row, read the same way on both)."""
    job_id = submit(platform, payload={"sleep": 600, "helper": True}, machines=2)
    workers = [_machine(platform, f"m{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        pids = wait_for(
            lambda: len(_rank_pids(platform, job_id)) == 2 and _rank_pids(platform, job_id),
            timeout=90,
        )
        assert all(pid_alive(pid) for pid in pids.values())
        store_cancel(platform, job_id)
        wait_for(lambda: job(platform, job_id).state == JobState.CANCELLED, timeout=60)
        for pid in pids.values():
            wait_for(lambda pid=pid: not pid_alive(pid), timeout=30)
        assert _members(platform, job_id) == []
        # both workers are free again: an ordinary job runs
        other = submit(platform, payload={"sleep": 0})
        wait_for(lambda: job(platform, other).state == JobState.SUCCEEDED, timeout=60)
    finally:
        _stop(*workers)
    log_text, _ = read_job_log(platform.settings, job_id, 0)
    # the rank that is not rank 0 says why it stopped (the request, or the job cancelled by
    # rank 0's worker, whichever its heartbeat saw first)
    assert re.search(
        r"rank 1 of 2 on \S+ stopped: (cancel requested|the attempt ended \(cancelled\))",
        log_text,
    )
