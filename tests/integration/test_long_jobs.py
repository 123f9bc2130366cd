"""A long ingest job on a real ``radseg worker`` while a test polls the job's progress and the
web app, on SQLite (the embedded default, one writer at a time) and PostgreSQL.

The ingest reads its series through ``gated-dicom-folder`` (tests/jobs_plugin.py), which holds
each series until the test opens its gate: the job is caught half-way, every time, without
depending on how fast the machine is.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radseg import users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import JobState, Role, Series, Study
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.jobs import store
from radseg.settings import Settings
from radseg.web import create_app
from tests.integration.jobs_support import job, start_worker, wait_for
from tests.jobs_plugin import gate, with_jobs_plugin
from tests.web_support import log_in_as

SERIES = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with the test plugin loaded (``gated-dicom-folder``, ``noop``)."""
    return with_jobs_plugin(settings)


def _stored(platform: Platform) -> list[int]:
    """Ids of the studies whose series are committed (what any other reader sees)."""
    with platform.sessions() as session:
        return list(session.scalars(select(Study.id).join(Series).order_by(Study.id)))


def test_a_long_ingest_job_keeps_its_progress_and_the_web_responsive(
    platform: Platform, tmp_path: Path
) -> None:
    upload = tmp_path / "upload"
    for k in range(SERIES):
        write_synthetic_ct(
            upload / f"p{k}", seed=80 + k, shape=(4, 16, 16), patient_id=f"MRN-80{k}"
        )
    later = utcnow() + timedelta(days=1)
    with platform.sessions.begin() as session:
        users.create_user(session, "ada", "correct horse battery", Role.ADMIN)
        # queued jobs that no worker takes yet: the web cancels one per step (a web write)
        parked = [store.submit(session, "noop", {}, run_after=later).id for _ in range(SERIES)]
        ingest_id = store.submit(
            session,
            "ingest",
            {"path": str(upload), "source": "gated-dicom-folder", "dataset": "long"},
            created_by="ada",
        ).id
    client = create_app(platform, {"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()
    log_in_as(client, platform, "ada")
    worker = start_worker(platform, "--kinds", "ingest", log=tmp_path / "worker.log")
    try:
        for k in range(SERIES):
            waiting = f"waiting at series {k} of {SERIES}"
            # the job's own progress reports reach the database while the job is half-way
            wait_for(
                lambda waiting=waiting: job(platform, ingest_id).message == waiting,
                timeout=120 if k == 0 else 30,
            )
            assert job(platform, ingest_id).progress == pytest.approx(k / SERIES)
            # the series before this one are committed: the job does not sit on them
            stored = _stored(platform)
            assert len(stored) == k
            # every page answers: reads, a read that writes an audit event, a write
            assert client.get("/jobs").status_code == 200
            assert client.get(f"/jobs/{ingest_id}").status_code == 200
            assert client.get("/studies").status_code == 200
            if stored:
                assert client.get(f"/studies/{stored[-1]}").status_code == 200
            assert client.post(f"/jobs/{parked[k]}/cancel").status_code == 303
            assert job(platform, parked[k]).state == JobState.CANCELLED
            gate(upload, k).parent.mkdir(exist_ok=True)
            gate(upload, k).touch()
        done = wait_for(
            lambda: (j := job(platform, ingest_id)).state.is_final and j, timeout=60, interval=0.1
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert done.state == JobState.SUCCEEDED, done.message
    assert done.result is not None and len(done.result["added"]) == SERIES
    with platform.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Series)) == SERIES
