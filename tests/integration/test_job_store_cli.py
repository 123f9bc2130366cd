"""``radseg jobs tail``, ``resubmit`` and ``worker --burst`` from the command line."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import JobState
from radseg.jobs import store
from radseg.jobs.logs import append_job_log
from tests.integration.jobs_support import job, submit


@pytest.fixture
def cli(platform: Platform, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--home", str(platform.home), *args])

    return invoke


def test_tail_follows_a_log_until_the_job_finishes(cli, platform: Platform) -> None:
    job_id = submit(platform)
    store.claim(platform.engine, "w")
    append_job_log(platform.settings, job_id, "attempt 1 on w")

    def finish_later() -> None:
        time.sleep(1.0)
        append_job_log(platform.settings, job_id, "epoch 2 done")
        with platform.sessions.begin() as session:
            store.complete(session, job_id, "w", {})

    writer = threading.Thread(target=finish_later)
    writer.start()
    result = cli("jobs", "tail", str(job_id), "--follow")
    writer.join()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("WORKER attempt 1 on w")
    assert lines[1].endswith("WORKER epoch 2 done")  # written while it was being followed


def test_tail_of_a_missing_job_says_so(cli) -> None:
    result = cli("jobs", "tail", "404")
    assert result.exit_code != 0 and "job 404 does not exist" in result.output


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
    assert refused.exit_code != 0 and "does not exist" in refused.output
