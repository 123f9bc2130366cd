"""A running job's time left on the jobs pages, in the JSON API and in ``radseg jobs list``
(radseg.jobs.eta), from its progress and the start of its attempt, on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from flask import Flask

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Job
from radseg.jobs import leases, store
from radseg.jobs.eta import remaining_text
from radseg.web import create_app
from tests.web_support import get_json, log_in_as

#: when the job's attempt started, and the test's "now": ten minutes later
STARTED = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
NOW = STARTED + timedelta(minutes=10)


def _running(platform: Platform, progress: float) -> int:
    """A train job claimed by a worker (its first run), started at STARTED, at ``progress``."""
    with platform.sessions.begin() as session:
        job_id = store.submit(session, "train", {}, created_by="researcher", priority=9).id
    claimed = leases.claim(platform.engine, "w")
    assert claimed is not None and claimed.id == job_id
    with platform.sessions.begin() as session:
        session.get(Job, job_id).started_at = STARTED
        assert leases.set_progress(session, job_id, "w", progress, "iter 250/1000")
    return job_id


@pytest.fixture
def clocked_app(web_platform: Platform, seeded: dict[str, int]) -> Flask:
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False, "RADSEG_CLOCK": lambda: NOW}
    return create_app(web_platform, config)


def test_remaining_text_reads_like_an_estimate() -> None:
    assert remaining_text(0) == "less than a minute left"
    assert remaining_text(29) == "less than a minute left"
    assert remaining_text(90) == "about 2 min left"
    assert remaining_text(1800) == "about 30 min left"
    assert remaining_text(5400) == "about 1 h 30 min left"


@pytest.mark.parametrize("role", ["researcher", "clinician"])
def test_a_running_job_shows_its_time_left_on_the_pages_and_in_the_api(
    clocked_app: Flask, web_platform: Platform, role: str
) -> None:
    job_id = _running(web_platform, 0.25)  # a quarter in ten minutes: thirty to go
    client = clocked_app.test_client()
    log_in_as(client, web_platform, role)

    view = get_json(client, f"/api/jobs/{job_id}")
    assert (view["eta_seconds"], view["eta"]) == (1800, "about 30 min left")
    listed = {j["id"]: j for j in get_json(client, "/api/jobs")["jobs"]}
    assert listed[job_id]["eta"] == "about 30 min left"
    assert "about 30 min left" in client.get("/jobs").get_data(as_text=True)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '<dd id="job-eta">about 30 min left</dd>' in page


def test_no_estimate_without_progress_or_once_finished(
    clocked_app: Flask, web_platform: Platform
) -> None:
    job_id = _running(web_platform, 0.0)
    client = clocked_app.test_client()
    log_in_as(client, web_platform, "researcher")
    assert get_json(client, f"/api/jobs/{job_id}")["eta_seconds"] is None
    with web_platform.sessions.begin() as session:
        leases.complete(session, job_id, "w", {})
    view = get_json(client, f"/api/jobs/{job_id}")
    assert (view["state"], view["eta_seconds"], view["eta"]) == ("succeeded", None, None)
    assert '<dd id="job-eta">–</dd>' in client.get(f"/jobs/{job_id}").get_data(as_text=True)


def test_a_job_run_again_shows_no_estimate_rather_than_a_wrong_one(
    clocked_app: Flask, web_platform: Platform
) -> None:
    # A training job resumed from its checkpoint reports 50 % a minute into its second run:
    # this attempt's rate says one minute to go; the job has ten. No estimate is shown.
    job_id = _running(web_platform, 0.1)
    with web_platform.sessions.begin() as session:
        assert leases.requeue(session, job_id, "w", "worker shutting down") is not None
    assert leases.claim(web_platform.engine, "w2") is not None
    with web_platform.sessions.begin() as session:
        session.get(Job, job_id).started_at = NOW - timedelta(minutes=1)
        assert leases.set_progress(session, job_id, "w2", 0.5, "iter 500/1000")
    client = clocked_app.test_client()
    log_in_as(client, web_platform, "admin")
    view = get_json(client, f"/api/jobs/{job_id}")
    assert (view["state"], view["eta_seconds"], view["eta"]) == ("running", None, None)


def test_jobs_list_on_the_command_line_shows_the_time_left(
    web_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = _running(web_platform, 0.25)
    with web_platform.sessions.begin() as session:
        queued = store.submit(session, "predict", {}).id
    monkeypatch.setenv("RADSEG_DATABASE_URL", web_platform.settings.database_url_resolved)
    monkeypatch.setattr(store, "utcnow", lambda: NOW)  # the clock eta_seconds reads
    result = CliRunner().invoke(main, ["--home", str(web_platform.home), "jobs", "list"])
    assert result.exit_code == 0, result.output
    lines = {int(line.split()[0]): line for line in result.output.splitlines()}
    assert lines[running].endswith("iter 250/1000  (about 30 min left)")
    assert "left" not in lines[queued]
