"""Inference at scale: ``radseg predict --all-series`` queues a job per series, and any number of
``radseg worker`` processes share them, each prediction made exactly once.

The model is the test plugin's ``threshold`` backend (microseconds per series), so that hundreds
of real prediction jobs — the workflow reading each series' volume, writing its mask file and
its Prediction row — run in seconds; the workers run ``predict`` inline (``--inline-kinds``),
as a site does for a model that fast, because a child process per job would measure process
start-up, not the queue.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Job, JobEvent, JobState, Prediction, Series
from radseg.imaging.volumes import read_volume
from radseg.settings import Settings
from tests.integration.jobs_support import start_worker, wait_for
from tests.jobs_plugin import add_threshold_series, with_jobs_plugin
from tests.support import SQLITE_ONLY


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with the test plugin loaded (model backend ``threshold``)."""
    return with_jobs_plugin(settings)


def _succeeded(platform: Platform) -> int:
    with platform.sessions() as session:
        query = select(func.count()).select_from(Job).where(Job.state == JobState.SUCCEEDED)
        return int(session.scalar(query) or 0)


def _predict_all_series(platform: Platform, version_id: int) -> Result:
    """`radseg predict --model-version ID --all-series` on ``platform``."""
    return CliRunner().invoke(
        main,
        [
            "--home",
            str(platform.home),
            "predict",
            "--model-version",
            str(version_id),
            "--all-series",
        ],
    )


def test_four_workers_make_every_prediction_of_all_series_exactly_once(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres = platform.engine.dialect.name == "postgresql"
    n_series = 400 if postgres else 200
    version_id, expected = add_threshold_series(platform, n_series)
    logs = [tmp_path / f"worker-{i}.log" for i in range(4)]
    workers = [
        start_worker(platform, "--inline-kinds", "predict", "--concurrency", "0", log=log)
        for log in logs
    ]
    try:
        # all four are up and idle before the jobs arrive, so that they really race
        wait_for(lambda: all("started" in log.read_text() for log in logs), timeout=120)
        monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
        result = _predict_all_series(platform, version_id)
        assert result.exit_code == 0, result.output
        assert f"queued {n_series} prediction jobs" in result.output
        wait_for(lambda: _succeeded(platform) == n_series, timeout=300, interval=0.2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=30)
    with platform.sessions() as session:
        made = Counter(
            session.scalars(
                select(Series.series_instance_uid).join(
                    Prediction, Prediction.series_id == Series.id
                )
            )
        )
        jobs = list(session.scalars(select(Job).where(Job.kind == "predict")))
        claims = Counter(
            session.scalars(select(JobEvent.job_id).where(JobEvent.to_state == "running"))
        )
        workers_used = session.scalar(
            select(func.count(func.distinct(JobEvent.actor))).where(JobEvent.to_state == "running")
        )
        masks = {
            p.series.series_instance_uid: platform.resolve(p.mask_path)
            for p in session.scalars(select(Prediction))
        }
    assert set(made) == set(expected)  # every series predicted...
    assert max(made.values()) == 1  # ...once: no job ran twice
    assert len(jobs) == n_series and {j.state for j in jobs} == {JobState.SUCCEEDED}
    assert all(j.attempts == 1 for j in jobs) and set(claims.values()) == {1}
    assert len({j.result["prediction_id"] for j in jobs}) == n_series
    assert workers_used >= 2  # the work was shared
    for uid, mask in masks.items():
        labels, _ = read_volume(mask)
        np.testing.assert_array_equal(labels, expected[uid])


@SQLITE_ONLY
def test_predict_all_series_refuses_when_nothing_is_ingested(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_id, _ = add_threshold_series(platform, 0)
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    result = _predict_all_series(platform, version_id)
    assert result.exit_code != 0
    assert "there is no series to predict; ingest some first" in result.output
    with platform.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
