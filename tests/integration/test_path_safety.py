"""Hostile UIDs never write or delete outside RADSEG_HOME; raw uploads never outlive their job.

The UIDs are the ones of issue 11: a DICOM-root prefix (which the de-identifier used to keep
unchanged) followed by ``..`` components. The home is ``tmp_path/home``, so what the old code
did — delete RADSEG_HOME, write next to it — stays inside the test's folder, where it is seen.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import Job, JobState, Role, Series, User
from radseg.errors import InputError
from radseg.imaging.deid import Deidentifier, is_valid_uid
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg.web import create_app
from radseg.workflows import ingest as ingest_module
from radseg.workflows.ingest import ingest
from radseg.workflows.upload_folders import reap_uploads, upload_path
from tests.integration.jobs_support import job, start_worker, submit
from tests.support import database_text
from tests.web_support import log_in_as

VICTIM_SERIES = "1.2.840.10008.9/../../../victim"
OUTSIDE_STUDY = "1.2.840.10008.7/../../../outside"
SHAPE = (4, 16, 16)
#: the demo's patients (`radseg demo-data`): name, ID, birth date
DEMO = [
    ("Demo^Patient1", "DEMO0001", "19600214"),
    ("Demo^Patient2", "DEMO0002", "19551130"),
    ("Demo^Patient3", "DEMO0003", "19420718"),
]


def _study(
    directory: Path,
    seed: int,
    *,
    patient: tuple[str, str, str] = DEMO[0],
    study_uid: str | None = None,
    series_uid: str | None = None,
    burned_in: bool = False,
) -> SyntheticStudy:
    name, patient_id, birth = patient
    study = write_synthetic_ct(
        directory,
        seed=seed,
        shape=SHAPE,
        patient_name=name,
        patient_id=patient_id,
        patient_birth_date=birth,
    )
    for path in study.files:
        ds = pydicom.dcmread(path)
        if study_uid:
            ds.StudyInstanceUID = study_uid
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        if burned_in:
            ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    return study


def _outside(box: Path, home: Path) -> set[str]:
    """Every path under ``box`` but in the home and the SQLite database next to it."""
    return {
        str(p.relative_to(box))
        for p in box.rglob("*")
        if home not in (p, *p.parents) and not p.name.startswith("radseg.db")
    }


def _sentinels(home: Path) -> list[Path]:
    made = [home / "sentinel.txt", home / "studies" / "sentinel.txt", home / "volumes" / "s.txt"]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("must survive")
    return made


def _stored_uids(platform: Platform) -> list[tuple[str, str]]:
    with platform.sessions() as session:
        return [
            (series.study.study_instance_uid, series.series_instance_uid)
            for series in session.scalars(sa.select(Series).order_by(Series.id))
        ]


def test_cli_ingest_of_hostile_uids_writes_and_deletes_nothing_outside_home(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    _study(inputs / "victim", 11, series_uid=VICTIM_SERIES)
    _study(inputs / "outside", 12, patient=DEMO[1], study_uid=OUTSIDE_STUDY)
    sentinels = _sentinels(platform.home)
    before = _outside(tmp_path, platform.home)
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)

    result = CliRunner().invoke(main, ["--home", str(platform.home), "ingest", str(inputs)])

    assert result.exit_code == 0, result.output
    assert "2 series added" in result.output
    assert _outside(tmp_path, platform.home) == before
    assert all(path.read_text() == "must survive" for path in sentinels)
    stored = _stored_uids(platform)
    assert len(stored) == 2
    for study_uid, series_uid in stored:
        assert is_valid_uid(study_uid) and study_uid.startswith("2.25.")
        assert is_valid_uid(series_uid) and series_uid.startswith("2.25.")
        assert len(list(platform.path("studies", study_uid, series_uid).glob("*.dcm"))) == 4
        assert platform.path("volumes", f"{series_uid}.nii").is_file()


class _KeepsUids(Deidentifier):
    """What the old de-identifier did with these UIDs (or a plugin that skips UIDs): keep them."""

    def uid(self, uid: str) -> str:
        return str(uid)


def test_an_invalid_uid_from_a_plugin_is_refused_and_a_failed_ingest_removes_only_its_own(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a series already stored, under a study folder the failing ingest must leave alone
    good = _study(tmp_path / "in" / "good", 13, patient=DEMO[2])
    ingest(platform, good.dicom_dir, labels=good.label_path)
    home_files = sorted(p for p in platform.home.rglob("*") if p.is_file())
    sentinels = _sentinels(platform.home)
    hostile = tmp_path / "in" / "hostile"
    _study(hostile / "victim", 14, series_uid=VICTIM_SERIES)
    _study(hostile / "outside", 15, patient=DEMO[1], study_uid=OUTSIDE_STUDY)
    before = _outside(tmp_path, platform.home)
    real = ingest_module.deidentifier
    monkeypatch.setattr(
        ingest_module,
        "deidentifier",
        lambda platform, **kw: _KeepsUids(real(platform, **kw).key),
    )

    with pytest.raises(InputError) as refused:
        ingest(platform, hostile)

    assert "not a valid UID" in str(refused.value)
    assert "victim" not in str(refused.value) and "outside" not in str(refused.value)
    assert _outside(tmp_path, platform.home) == before
    assert all(path.read_text() == "must survive" for path in sentinels)
    assert sorted(p for p in platform.home.rglob("*") if p.is_file()) == sorted(
        [*home_files, *sentinels]
    )
    assert len(_stored_uids(platform)) == 1


# --- web uploads run by a real worker -----------------------------------------------------


@pytest.fixture
def web(pg_platform: Platform) -> Iterator[tuple[Flask, FlaskClient]]:
    with pg_platform.sessions.begin() as session:
        session.add(User(username="researcher", password_hash="-", role=Role.RESEARCHER))
    app = create_app(pg_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    log_in_as(client, pg_platform, "researcher")
    yield app, client


def _upload(client: FlaskClient, *studies: SyntheticStudy) -> int:
    files = [
        (io.BytesIO(path.read_bytes()), f"{k}-{path.name}")
        for k, study in enumerate(studies)
        for path in study.files
    ]
    response = client.post("/upload", data={"files": files}, headers={"Accept": "application/json"})
    assert response.status_code == 202, response.get_data(as_text=True)
    return int(response.json["job_id"])


def _run_worker(platform: Platform, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(platform, "--burst", log=log)
    try:
        assert worker.wait(timeout=240) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()


def _uploads(platform: Platform) -> list[str]:
    root = platform.path("uploads")
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_web_upload_of_hostile_uids_run_by_a_worker_stays_inside_home(
    pg_platform: Platform, web: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    _, client = web
    victim = _study(tmp_path / "in" / "victim", 21, series_uid=VICTIM_SERIES)
    outside = _study(tmp_path / "in" / "outside", 22, patient=DEMO[1], study_uid=OUTSIDE_STUDY)
    sentinels = _sentinels(pg_platform.home)
    job_id = _upload(client, victim, outside)
    assert len(_uploads(pg_platform)) == 1
    before = _outside(tmp_path, pg_platform.home)

    _run_worker(pg_platform, tmp_path)

    done = job(pg_platform, job_id)
    assert done.state == JobState.SUCCEEDED, done.message
    assert done.result is not None and len(done.result["added"]) == 2
    assert _outside(tmp_path, pg_platform.home) - {"worker.log"} == before
    assert all(path.read_text() == "must survive" for path in sentinels)
    assert all(is_valid_uid(s) and is_valid_uid(r) for s, r in _stored_uids(pg_platform))
    assert _uploads(pg_platform) == []  # removed when the job ended


def test_a_dataset_name_that_would_name_a_folder_outside_is_refused_at_the_web_edge(
    pg_platform: Platform, web: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    _, client = web
    study = _study(tmp_path / "in" / "s", 41)
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in study.files]
    upload = client.post(
        "/upload",
        data={"files": files, "dataset": "../../outside"},
        headers={"Accept": "application/json"},
    )
    assert upload.status_code == 400
    assert "not a valid dataset name" in upload.json["detail"]
    assert _uploads(pg_platform) == []  # refused before anything was written
    build = client.post(
        "/datasets/build",
        data={"name": "..", "study": "1"},
        headers={"Accept": "application/json"},
    )
    assert build.status_code == 400 and "not a valid dataset name" in build.json["detail"]
    with pg_platform.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def _phi(studies: list[SyntheticStudy]) -> list[str]:
    secrets = ["Elm Street", "Elsewhere"]  # the synthetic studies' address and institution
    for study in studies:
        secrets += [
            study.patient_name,
            *study.patient_name.split("^"),
            study.patient_id,
            study.patient_birth_date,
            study.study_instance_uid,
            study.series_instance_uid,
            *study.sop_instance_uids,
        ]
    return [s for s in secrets if s != "Demo"]  # "Demo" alone names the demo plugin too


def test_no_phi_stays_in_home_after_upload_jobs_succeed_fail_or_are_cancelled(
    pg_platform: Platform, web: tuple[Flask, FlaskClient], tmp_path: Path
) -> None:
    _, client = web
    studies = [
        _study(tmp_path / "in" / "ok", 31, patient=DEMO[0]),
        _study(tmp_path / "in" / "refused", 32, patient=DEMO[1], burned_in=True),
        _study(tmp_path / "in" / "cancelled", 33, patient=DEMO[2]),
    ]
    succeeds, fails, cancelled = (_upload(client, study) for study in studies)
    assert len(_uploads(pg_platform)) == 3
    response = client.post(f"/jobs/{cancelled}/cancel")
    assert response.status_code == 303
    assert job(pg_platform, cancelled).state == JobState.CANCELLED
    assert len(_uploads(pg_platform)) == 2  # a cancelled upload goes at once

    _run_worker(pg_platform, tmp_path)

    assert job(pg_platform, succeeds).state == JobState.SUCCEEDED
    failed = job(pg_platform, fails)
    assert failed.state == JobState.FAILED and "could not be used" in failed.message
    assert _uploads(pg_platform) == []
    texts = {"database rows": database_text(pg_platform)}
    for path in pg_platform.home.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(pg_platform.home))] = path.read_bytes().decode("latin-1")
    assert any(name.endswith(".dcm") for name in texts), "de-identified originals are kept"
    leaks = [
        (where, secret)
        for secret in _phi(studies)
        for where, text in texts.items()
        if secret.lower() in where.lower() or secret.lower() in text.lower()
    ]
    assert leaks == []


# --- the reaper ---------------------------------------------------------------------------


def _upload_folder(platform: Platform, name: str, age: float = 0.0) -> Path:
    folder = platform.path("uploads", name)
    (folder / "zip-0").mkdir(parents=True)
    (folder / "zip-0" / "00001.dcm").write_bytes(b"DICM")
    then = time.time() - age
    for path in (folder / "zip-0" / "00001.dcm", folder / "zip-0", folder):
        os.utime(path, (then, then))
    return folder


def test_the_reaper_removes_uploads_no_live_job_needs(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = 3600.0
    for name in ("queued", "running", "failed", "cancelled"):
        _upload_folder(platform, name, age=2 * hour)
        job_id = submit(platform, "ingest", {"path": "-", "upload": name})
        with platform.sessions.begin() as session:
            row = session.get(Job, job_id)
            assert row is not None
            row.state = JobState(name) if name != "queued" else JobState.QUEUED
    _upload_folder(platform, "orphan-old", age=2 * hour)  # its web request died
    _upload_folder(platform, "orphan-new", age=60)  # its job is being queued
    _upload_folder(platform, ".0123abcd.tmp", age=2 * hour)  # a half-written upload
    user_folder = platform.home.parent / "my-dicoms"  # a CLI ingest's input is never an upload
    user_folder.mkdir()
    submit(platform, "ingest", {"path": str(user_folder)}, max_attempts=1)

    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    result = CliRunner().invoke(
        main, ["--home", str(platform.home), "uploads", "reap", "--grace", str(hour)]
    )

    assert result.exit_code == 0, result.output
    assert "4 uploads removed" in result.output
    assert _uploads(platform) == ["orphan-new", "queued", "running"]
    assert user_folder.is_dir()
    assert reap_uploads(platform, grace_seconds=0) == ["orphan-new"]

    # a resubmitted job of a removed upload says what happened
    with pytest.raises(InputError, match="upload the files again"):
        upload_path(platform, {"path": "-", "upload": "failed"})
    with pytest.raises(InputError, match="path separator"):
        upload_path(platform, {"path": "-", "upload": "../studies"})


def test_the_reaper_keeps_an_upload_whose_job_is_queued_while_it_looks(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web writes an upload, then queues its job; the reaper may look in between. On
    PostgreSQL each statement sees new commits, so the job appears after the reaper listed the
    live jobs: it must not count as an ended one (its upload is new: within the grace period)."""
    from radseg.workflows import upload_folders as uploads_module

    _upload_folder(platform, "busy", age=60)
    submit(platform, "ingest", {"upload": "busy"})  # a live job, so the listing calls upload_name
    fresh = _upload_folder(platform, "fresh", age=1)
    real = uploads_module.upload_name
    queued: list[int] = []

    def listing(payload: dict) -> str | None:
        if not queued:  # the web commits the fresh upload's job while the reaper reads
            queued.append(submit(platform, "ingest", {"upload": "fresh"}))
        return real(payload)

    monkeypatch.setattr(uploads_module, "upload_name", listing)
    assert reap_uploads(platform, grace_seconds=3600) == []
    assert queued and fresh.is_dir()


def test_a_dataset_named_before_the_name_rule_still_takes_series_and_builds(
    platform: Platform, tmp_path: Path
) -> None:
    from radseg.db.models import Dataset, DatasetVersion
    from radseg.workflows.datasets import build_version

    with platform.sessions.begin() as session:
        session.add(Dataset(name="CT (2023)"))  # accepted before names were checked
    study = _study(tmp_path / "in", 41)
    ingest(platform, study.dicom_dir, labels=study.label_path, dataset="CT (2023)")
    version: DatasetVersion = build_version(platform, "CT (2023)")
    folder = platform.resolve(version.path)
    assert folder.is_dir() and folder.parent.parent == platform.path("datasets")
    with pytest.raises(InputError, match="not a valid dataset name"):
        ingest(platform, study.dicom_dir, dataset="new (2024)")  # a new name follows the rule
