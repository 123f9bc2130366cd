"""``radseg jobs tail``, ``cancel``, ``resubmit`` and ``worker --burst`` from the command line."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import AuditEvent, JobState
from radseg.jobs import leases
from radseg.jobs.logs import append_job_log
from radseg.main import main
from tests.integration.jobs_support import job, submit


@pytest.fixture
def cli(platform: Platform, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--home", str(platform.home), *args])

    return invoke


def test_tail_follows_a_log_until_the_job_finishes(platform: Platform) -> None:
    """``radseg jobs tail --follow`` in its own process prints a line written after it started.

    The second line is written only once the first has come out of the running command, so it
    can only be printed by following the file; nothing sleeps to get the order right.
    """
    job_id = submit(platform)
    leases.claim(platform.engine, "w")
    append_job_log(platform.settings, job_id, "attempt 1 on w")
    env = {
        **os.environ,
        "RADSEG_DATABASE_URL": platform.settings.database_url_resolved,
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "radseg", "--home", str(platform.home)]
    tail = subprocess.Popen(
        [*command, "jobs", "tail", str(job_id), "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # the timeouts only keep a broken --follow from hanging the suite
        first = lines.get(timeout=120)
        assert first is not None and first.endswith("WORKER attempt 1 on w"), first
        assert tail.poll() is None  # still following: the job has not finished
        append_job_log(platform.settings, job_id, "epoch 2 done")
        with platform.sessions.begin() as session:
            leases.complete(session, job_id, "w", {})
        assert tail.wait(timeout=120) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    reader.join(timeout=10)
    rest = [line for line in iter(lines.get_nowait, None) if " WORKER " in line]
    assert len(rest) == 1 and rest[0].endswith("WORKER epoch 2 done"), rest  # while followed


def test_tail_of_a_missing_job_says_so(cli) -> None:
    result = cli("jobs", "tail", "404")
    assert result.exit_code != 0 and "there is no job 404" in result.output


def test_resubmit_and_a_burst_worker_from_the_cli(cli, platform: Platform) -> None:
    job_id = submit(platform, payload={"raise": "input"})
    result = cli("worker", "--burst")
    assert result.exit_code == 0, result.output
    assert "ran 1 job(s)" in result.output
    assert job(platform, job_id).state == JobState.FAILED
    result = cli("jobs", "resubmit", str(job_id))
    assert result.exit_code == 0, result.output
    new_id = int(result.output.split()[-1])
    assert job(platform, new_id).resubmitted_from == job_id
    refused = cli("jobs", "resubmit", str(new_id + 1))
    assert refused.exit_code != 0 and f"there is no job {new_id + 1}" in refused.output


def test_cancel_from_the_cli_is_the_audited_use_case(cli, platform: Platform) -> None:
    job_id = submit(platform)
    result = cli("jobs", "cancel", str(job_id))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"job {job_id}: cancelled"
    assert job(platform, job_id).state == JobState.CANCELLED
    with platform.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "job.cancel"))
        assert [(e.actor, e.target) for e in events] == [("cli", f"job:{job_id}")]
    again = cli("jobs", "cancel", "404")
    assert again.exit_code == 1 and "there is no job 404" in again.output
