"""The researcher's pages: uploads (zip-slip and zip-bomb refused) feeding a real ingest job,
dataset/training/prediction forms queueing jobs, and a job's page: cancel, retry, log, curves."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from radseg.core import Platform, create_platform
from radseg.db.models import Dataset, Job, JobState, Series
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.jobs.handlers import handler_for
from radseg.jobs.logs import append_job_log
from radseg.web import create_app
from radseg_plugins.datasets import dicom_folder
from tests.support import SQLITE_ONLY
from tests.web_support import audit_events, get_json, log_in_as


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _jobs(platform: Platform, kind: str) -> list[Job]:
    with platform.sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))
        session.expunge_all()
        return jobs


@SQLITE_ONLY
def test_an_uploaded_zip_becomes_an_ingest_job_whose_report_the_job_page_shows(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], tmp_path: Path
) -> None:
    study = write_synthetic_ct(tmp_path / "study", shape=(3, 16, 16), seed=7)
    members = {
        f"study/{p.name}": p.read_bytes() for p in sorted((tmp_path / "study" / "dicom").iterdir())
    }
    log_in_as(client, web_platform, "researcher")
    response = client.post(
        "/upload",
        data={"files": (io.BytesIO(_zip(members)), "study.zip"), "dataset": "uploaded"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    (job,) = _jobs(web_platform, "ingest")
    assert response.json == {"job_id": job.id, "url": f"/jobs/{job.id}"}
    assert "path" not in job.payload  # no server path: the upload is named
    folder = web_platform.path("uploads", job.payload["upload"])
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted(
        Path(m).name for m in members
    )
    assert job.payload["dataset"] == "uploaded" and job.created_by == "researcher"
    (event,) = audit_events(web_platform, "upload")
    assert event.detail["files"] == len(members)

    # what the worker does with it: the ingest job's handler, with the worker's plugins
    worker = create_platform(
        web_platform.settings, autoload=False, plugins=[("dicom-folder", dicom_folder)]
    )
    try:
        result = handler_for("ingest")(
            worker, job.payload, progress=lambda f, m: None, job_id=job.id
        )
    finally:
        worker.close()
    with web_platform.sessions.begin() as session:
        stored = session.get(Job, job.id)
        assert stored is not None
        stored.state, stored.result = JobState.SUCCEEDED, result
        (series,) = session.scalars(select(Series).where(Series.id != seeded["series"])).all()
        assert series.geometry["size"] == [16, 16, 3]
        assert study.patient_id not in series.study.patient_key  # de-identified
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "&#34;added&#34;" in page or '"added"' in page
    assert get_json(client, f"/api/jobs/{job.id}")["result"]["slices"] == 3


@SQLITE_ONLY
def test_unsafe_zips_are_refused_with_a_clear_message_and_nothing_is_kept(
    client: FlaskClient, web_platform: Platform
) -> None:
    log_in_as(client, web_platform, "researcher")
    cases = {
        "slip.zip": (_zip({"../../etc/evil.dcm": b"x"}), "zip-slip"),
        "abs.zip": (_zip({"/tmp/evil.dcm": b"x"}), "zip-slip"),
        "bomb.zip": (_zip({"zeros.dcm": bytes(20 << 20)}), "zip bomb"),
        "broken.zip": (b"PK\x03\x04 not really", "not a readable zip"),
    }
    for name, (data, message) in cases.items():
        response = client.post(
            "/upload",
            data={"files": (io.BytesIO(data), name)},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 400, name
        assert message in response.json["detail"], (name, response.json)
    uploads = web_platform.path("uploads")
    assert not uploads.exists() or list(uploads.iterdir()) == []
    assert _jobs(web_platform, "ingest") == []
    assert len(audit_events(web_platform, "upload.refused")) == len(cases)
    nothing = client.post("/upload", data={}, headers={"Accept": "application/json"})
    assert nothing.status_code == 400 and "choose a .zip" in nothing.json["detail"]


@SQLITE_ONLY
def test_uploads_over_the_size_limit_are_refused(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(
        web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False, "MAX_CONTENT_LENGTH": 1000}
    )
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    response = client.post("/upload", data={"files": (io.BytesIO(bytes(5000)), "big.dcm")})
    assert response.status_code == 413


@SQLITE_ONLY
def test_dataset_training_and_prediction_forms_queue_jobs(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "researcher")
    assert client.get("/datasets").status_code == 200
    built = client.post(
        "/datasets/build",
        data={
            "name": "chest",
            "channels": "lung,400/40",
            "seed": "3",
            "study": str(seeded["study"]),
        },
    )
    assert built.status_code == 303
    (job,) = _jobs(web_platform, "build-dataset")
    assert job.payload["dataset"] == "chest" and job.payload["seed"] == 3
    assert [c["width"] for c in job.payload["recipe"]["channels"]] == [1500.0, 400.0]
    with web_platform.sessions() as session:
        (dataset,) = session.scalars(select(Dataset).where(Dataset.name == "chest")).all()
        assert [m.series_id for m in dataset.members] == [seeded["series"]]

    refused = client.post(
        "/datasets/build", data={"name": "x", "channels": "purple"}, follow_redirects=True
    )
    assert "unknown window preset &#39;purple&#39;" in refused.get_data(as_text=True)
    no_version = client.post(
        "/train", data={"dataset": "chest", "backend": "nope"}, follow_redirects=True
    )
    assert "unknown backend" in no_version.get_data(as_text=True)
    assert [j.payload for j in _jobs(web_platform, "train")] == [{}]  # only the seeded one

    predicted = client.post("/predict", data={"model_version": "1", "study": str(seeded["study"])})
    assert predicted.status_code == 303
    (job,) = _jobs(web_platform, "predict")
    assert job.payload["model_version_id"] == 1
    assert job.payload["series_instance_uid"].startswith("2.25.")

    evaluated = client.post("/evaluate", data={"model_version": "1", "split": "val"})
    assert evaluated.status_code == 303
    (job,) = _jobs(web_platform, "evaluate")
    assert (job.payload["model_version_id"], job.payload["split"]) == (1, "val")
    bad_split = client.post("/evaluate", data={"model_version": "1", "split": "all"})
    assert bad_split.status_code == 303 and len(_jobs(web_platform, "evaluate")) == 1


@SQLITE_ONLY
def test_the_job_page_cancels_retries_tails_the_log_and_draws_curves(
    app: Flask, client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "researcher")
    with web_platform.sessions.begin() as session:
        job = Job(
            kind="train", state=JobState.QUEUED, payload={"dataset": "d"}, created_by="researcher"
        )
        session.add(job)
        session.flush()
        job_id = job.id
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and b'id="chart-loss"' in page.data
    assert b"no loss logged" in page.data  # nothing written yet: the chart says so

    append_job_log(web_platform.settings, job_id, "started on cpu")
    first = get_json(client, f"/api/jobs/{job_id}/log")
    assert first["text"].endswith("WORKER started on cpu\n")
    append_job_log(web_platform.settings, job_id, "iteration 2")
    more = get_json(client, f"/api/jobs/{job_id}/log?offset={first['next_offset']}")
    assert more["text"].endswith("WORKER iteration 2\n") and "started" not in more["text"]

    folder = web_platform.path("models", f"job-{job_id}")
    folder.mkdir(parents=True)
    rows = [{"iteration": i, "total_loss": 1.0 / (i + 1), "lr": 0.01} for i in range(9, 40, 10)]
    (folder / "metrics.json").write_text(
        "\n".join(json.dumps(r) for r in rows) + '\n{"iteration": 4'
    )
    validations = [
        {"iteration": i, "mean_dice": 0.1 * i / 10, "dice": {"liver": 0.2, "lung": 0.3}}
        for i in (20, 40)
    ]
    (folder / "history.json").write_text(json.dumps({"validations": validations}))
    curves = get_json(client, f"/api/jobs/{job_id}/curves")["curves"]
    assert curves["loss"]["raw"] == [[float(r["iteration"]), r["total_loss"]] for r in rows]
    assert curves["dice"]["mean"] == [[20.0, 0.2], [40.0, 0.4]]
    assert curves["dice"]["classes"] == {
        "liver": [[20.0, 0.2], [40.0, 0.2]],
        "lung": [[20.0, 0.3], [40.0, 0.3]],
    }
    # what the page's script fetches again while the job runs: the charts with the new points
    charts = client.get(f"/jobs/{job_id}/charts").get_data(as_text=True)
    assert "Iteration (optimizer steps)" in charts and "Validation Dice (0 to 1)" in charts
    legend = charts.split('id="chart-dice"')[1].split("</figure>")[0].split("<figcaption>")[1]
    for name in ("mean Dice", "liver", "lung"):
        assert f"</svg>{name}</label>" in legend
    # polled again with nothing new: 304, nothing drawn; a new validation: the new charts
    first = client.get(f"/jobs/{job_id}/charts")
    etag = first.headers["ETag"]
    assert client.get(f"/jobs/{job_id}/charts", headers={"If-None-Match": etag}).status_code == 304
    validations.append({"iteration": 60, "mean_dice": 0.5, "dice": {"liver": 0.6}})
    (folder / "history.json").write_text(json.dumps({"validations": validations}))
    again = client.get(f"/jobs/{job_id}/charts", headers={"If-None-Match": etag})
    assert again.status_code == 200 and "mean Dice: 60, 0.5" in again.get_data(as_text=True)

    assert client.post(f"/jobs/{job_id}/retry").status_code == 409  # not finished yet
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 303
    assert get_json(client, f"/api/jobs/{job_id}")["state"] == "cancelled"
    again = client.post(f"/jobs/{job_id}/retry")
    assert again.status_code == 303
    retried = _jobs(web_platform, "train")[-1]
    assert again.headers["Location"] == f"/jobs/{retried.id}"
    assert retried.state == JobState.QUEUED and retried.payload == {"dataset": "d"}
    assert [e.action for e in audit_events(web_platform, "job.retry")] == ["job.retry"]
