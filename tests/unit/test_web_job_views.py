"""What each role sees of a job through the JSON API, the jobs pages and the logs, and that no
absolute server path reaches any of them (radseg.web.jobs, radseg.web.redact)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from radseg.core import Platform
from radseg.db.models import Job, JobEvent, JobGangMember, JobState
from radseg.jobs import store
from radseg.jobs.logs import job_log_path
from radseg.web import create_app
from radseg.web.redact import PathRedactor
from tests.web_support import get_json, log_in_as

#: a file outside RADSEG_HOME that a job names (a label volume on a share, a library file)
OUTSIDE = "/srv/share/incoming/labels.nii.gz"


@pytest.fixture
def jobs(web_platform: Platform, seeded: dict[str, int]) -> dict[str, int]:
    """An ingest of the researcher's, an export of the clinician's, a predict job of another
    researcher's: each names files inside and outside RADSEG_HOME."""
    home = str(web_platform.home.resolve())
    upload = f"{home}/uploads/u-1"
    with web_platform.sessions.begin() as session:
        ingest = Job(
            kind="ingest",
            state=JobState.FAILED,
            created_by="researcher",
            payload={"path": upload, "labels": OUTSIDE, "created_by": "researcher"},
            result={"report": f"{upload}/report.json"},
            message=f"could not read {upload}/b.dcm: truncated",
        )
        export = Job(
            kind="export",
            state=JobState.QUEUED,
            created_by="clinician",
            payload={"prediction_id": seeded["prediction"], "created_by": "clinician"},
        )
        predict = Job(
            kind="predict",
            state=JobState.RUNNING,
            created_by="ana",
            payload={"model_version_id": 1, "created_by": "ana"},
            message=f"File {OUTSIDE!r}, line 3",
        )
        session.add_all([ingest, export, predict])
        session.flush()
        session.add(JobEvent(job_id=ingest.id, to_state="failed", actor="worker-1", message=upload))
        ids = {"ingest": ingest.id, "export": export.id, "predict": predict.id}
    log = job_log_path(web_platform.settings, ids["ingest"])
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f'reading {upload}/a.dcm\nTraceback: File "{OUTSIDE}"\n')
    return ids


def _as(app: Flask, platform: Platform, role: str) -> FlaskClient:
    client = app.test_client()
    log_in_as(client, platform, role)
    return client


def _no_server_path(text: str, platform: Platform) -> None:
    for path in (str(platform.home.resolve()), str(platform.home.absolute()), "/srv/share"):
        assert path not in text


def _by_id(client: FlaskClient) -> dict[int, dict[str, Any]]:
    return {job["id"]: job for job in get_json(client, "/api/jobs")["jobs"]}


def test_clinicians_see_the_state_of_their_jobs_and_the_model_work_without_payloads(
    app: Flask, web_platform: Platform, jobs: dict[str, int]
) -> None:
    client = _as(app, web_platform, "clinician")
    listed = _by_id(client)
    assert jobs["ingest"] not in listed  # someone else's data work
    assert {jobs["export"], jobs["predict"]} <= set(listed)
    for job in listed.values():
        assert set(job) == {
            "id",
            "kind",
            "state",
            "progress",
            "eta_seconds",
            "eta",
            "message",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        }
    assert listed[jobs["predict"]]["message"] == "File '…/labels.nii.gz', line 3"
    assert client.get(f"/api/jobs/{jobs['ingest']}").status_code == 404
    assert client.get(f"/jobs/{jobs['ingest']}").status_code == 404
    assert client.get(f"/api/jobs/{jobs['export']}/log").status_code == 403

    page = client.get(f"/jobs/{jobs['predict']}").get_data(as_text=True)
    assert "Payload" not in page and "ana" not in page and 'id="job-log"' not in page
    assert "data-log-url" not in page
    listing = client.get("/jobs").get_data(as_text=True)
    assert "<th>By</th>" not in listing and "ana" not in listing
    _no_server_path(page + listing + json.dumps(listed), web_platform)


def test_researchers_see_every_job_and_the_payload_and_log_of_their_own(
    app: Flask, web_platform: Platform, jobs: dict[str, int]
) -> None:
    client = _as(app, web_platform, "researcher")
    listed = _by_id(client)
    own, other = listed[jobs["ingest"]], listed[jobs["predict"]]
    assert own["payload"] == {
        "path": "uploads/u-1",
        "labels": "…/labels.nii.gz",
        "created_by": "researcher",
    }
    assert own["result"] == {"report": "uploads/u-1/report.json"}
    assert own["message"] == "could not read uploads/u-1/b.dcm: truncated"
    assert "payload" not in other and "result" not in other and other["created_by"] == "ana"

    log = get_json(client, f"/api/jobs/{jobs['ingest']}/log")["text"]
    assert log == 'reading uploads/u-1/a.dcm\nTraceback: File "…/labels.nii.gz"\n'
    refused = client.get(f"/api/jobs/{jobs['predict']}/log")
    assert refused.status_code == 403 and "owner and admins" in refused.json["detail"]

    page = client.get(f"/jobs/{jobs['ingest']}").get_data(as_text=True)
    assert "uploads/u-1" in page and "worker-1" in page and 'id="job-log"' in page
    other_page = client.get(f"/jobs/{jobs['predict']}").get_data(as_text=True)
    assert "Payload" not in other_page and "data-log-url" not in other_page
    _no_server_path(page + other_page + json.dumps(listed) + log, web_platform)


def test_admins_see_everything_but_absolute_server_paths(
    app: Flask, web_platform: Platform, jobs: dict[str, int]
) -> None:
    client = _as(app, web_platform, "admin")
    listed = _by_id(client)
    assert all("payload" in job and "result" in job for job in listed.values())
    assert listed[jobs["predict"]]["payload"] == {"model_version_id": 1, "created_by": "ana"}
    log = get_json(client, f"/api/jobs/{jobs['ingest']}/log")["text"]
    pages = "".join(client.get(f"/jobs/{i}").get_data(as_text=True) for i in jobs.values())
    _no_server_path(json.dumps(listed) + log + pages, web_platform)
    # what a write answers is the same view
    cancelled = client.post(f"/api/jobs/{jobs['predict']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["payload"]["created_by"] == "ana"


def test_the_prediction_page_lists_only_export_jobs_the_viewer_may_see(
    app: Flask, web_platform: Platform, seeded: dict[str, int], jobs: dict[str, int]
) -> None:
    url = f"/predictions/{seeded['prediction']}"
    with web_platform.sessions.begin() as session:
        session.add(
            Job(
                kind="export",
                created_by="other-clinician",
                payload={"prediction_id": seeded["prediction"]},
            )
        )
    mine = f"/api/jobs/{jobs['export']}"
    page = _as(app, web_platform, "clinician").get(url).get_data(as_text=True)
    assert page.count('data-job-url="/api/jobs/') == 1 and mine in page
    admin_page = _as(app, web_platform, "admin").get(url).get_data(as_text=True)
    assert admin_page.count("data-job-url") == 2


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/home/radseg/var/uploads/u-1/a.zip", "uploads/u-1/a.zip"),
        ("/home/radseg/var", "."),
        ('File "/usr/lib/python3.11/json/x.py", line 3', 'File "…/x.py", line 3'),
        ("error: /tmp/abc/def.nii.gz: bad", "error: …/def.nii.gz: bad"),
        ("/home/radseg/variant/x", "…/x"),  # a sibling of the home is outside it
        ("http://pacs/dicom-web/studies and a/b/c", "http://pacs/dicom-web/studies and a/b/c"),
        ("3/4 done, /login", "3/4 done, /login"),
    ],
)
def test_server_paths_become_relative_to_the_home_or_lose_their_folders(
    text: str, shown: str
) -> None:
    assert PathRedactor(Path("/home/radseg/var")).text(text) == shown


def test_the_redactor_walks_json_values() -> None:
    paths = PathRedactor(Path("/data/home"))
    assert paths.value({"/data/home/a": ["/etc/x/y", 3, None, {"k": "/data/home/b/c"}]}) == {
        "a": ["…/y", 3, None, {"k": "b/c"}]
    }


def test_a_researcher_cannot_retry_another_persons_job_to_read_its_payload(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    """A retry copies the payload into a job of whoever retries: only the owner or an admin."""
    with web_platform.sessions.begin() as session:
        theirs = store.submit(session, "predict", {"note": "ana-only"}, created_by="ana")
        theirs.state = JobState.FAILED
        theirs_id = theirs.id
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    researcher = app.test_client()
    log_in_as(researcher, web_platform, "researcher")
    refused = researcher.post(f"/api/jobs/{theirs_id}/retry")
    assert refused.status_code == 403 and "only its owner or an admin" in refused.json["detail"]
    assert researcher.post(f"/jobs/{theirs_id}/retry").status_code == 403
    admin = app.test_client()
    log_in_as(admin, web_platform, "admin")
    retried = admin.post(f"/api/jobs/{theirs_id}/retry")
    assert retried.status_code == 201 and retried.json["payload"] == {"note": "ana-only"}


def test_a_gang_job_shows_the_machines_that_joined_it_to_operators(
    app: Flask, web_platform: Platform
) -> None:
    with web_platform.sessions.begin() as session:
        gang = Job(
            kind="train",
            state=JobState.QUEUED,
            machines=2,
            created_by="researcher",
            payload={"dataset": "chest", "created_by": "researcher"},
        )
        session.add(gang)
        session.flush()
        session.add(
            JobGangMember(
                job_id=gang.id,
                rank=0,
                worker_id="w1",
                host="gpu-a",
                lease_expires_at=datetime.now(UTC) + timedelta(minutes=1),
            )
        )
        job_id = gang.id
    researcher = _as(app, web_platform, "researcher")
    assert _by_id(researcher)[job_id]["gang"] == [{"rank": 0, "machine": "gpu-a"}]
    page = researcher.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '<dd id="job-machines">1 of 2 joined: rank 0 on gpu-a</dd>' in page
    clinician = _as(app, web_platform, "clinician")  # not an operator: no machine names
    assert "gang" not in get_json(clinician, f"/api/jobs/{job_id}")
    assert "job-machines" not in clinician.get(f"/jobs/{job_id}").get_data(as_text=True)
