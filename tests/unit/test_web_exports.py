"""Exports in the web app: the prediction page, its export form, the downloads and the API.

The prediction is a real ingested synthetic CT (with its de-identified DICOM originals) whose
labels are registered as a model's output; the queued export jobs are run by a real worker in
burst mode, in this process (inline), so the test's extra exporter is there too.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from radseg.contracts import ExportCheck, ExportRequest
from radseg.core import Platform
from radseg.db.models import Export, Job, JobState, LabelSet, Prediction, Role, User
from radseg.hookspecs import hookimpl
from radseg.jobs.worker import Worker
from radseg.settings import Settings
from radseg.web import create_app
from tests.export_support import FlippingExporter
from tests.support import SQLITE_ONLY, ingested_prediction, migrated_platform
from tests.web_support import audit_events, log_in_as


class FolderExporter:
    """Writes one .npy per slice into a folder: a folder export, like COCO or PNG."""

    name: ClassVar[str] = "slices"
    suffix: ClassVar[str] = ""
    dicom: ClassVar[bool] = False

    def export(self, request: ExportRequest, out: Path) -> Path:
        out.mkdir()
        for z, plane in enumerate(request.labels):
            np.save(out / f"{z:03d}.npy", plane)
        return out

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        count = len(list(written.glob("*.npy")))
        wanted = request.labels.shape[0]
        return [ExportCheck("slices", count == wanted, f"{count} of {wanted} slices")]


class ExportersPlugin:
    @hookimpl
    def radseg_register_exporters(self) -> list[type]:
        return [FlippingExporter, FolderExporter]


@pytest.fixture
def export_platform(settings: Settings, password_hash: str) -> Iterator[Platform]:
    """The built-in plugins, the test exporters, a PACS called ``research``, three users."""
    settings = Settings.model_validate(
        {**settings.model_dump(), "pacs": {"research": {"url": "http://127.0.0.1:9/dicom-web"}}}
    )
    platform = migrated_platform(settings, plugins=[("test-exporters", ExportersPlugin())])
    with platform.sessions.begin() as session:
        session.add_all(User(username=r.value, password_hash=password_hash, role=r) for r in Role)
    yield platform
    platform.close()


@pytest.fixture
def prediction_id(export_platform: Platform, tmp_path: Path) -> int:
    return ingested_prediction(export_platform, tmp_path)


@pytest.fixture
def web(export_platform: Platform) -> FlaskClient:
    client = create_app(export_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()
    log_in_as(client, export_platform, "clinician")
    return client


def export_jobs(platform: Platform) -> list[Job]:
    with platform.sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "export").order_by(Job.id)))
        session.expunge_all()
        return jobs


def run_queued_jobs(platform: Platform) -> None:
    """What ``radseg worker --burst`` does, in this process (so the test exporters exist)."""
    Worker(platform, burst=True, inline_kinds=("export",), listen=False).run()


def exported(job: Job) -> int:
    """The id of the export a succeeded export job stored."""
    assert job.state == JobState.SUCCEEDED and job.result is not None, job.message
    return int(job.result["export_id"])


def page(client: FlaskClient, prediction_id: int) -> str:
    response = client.get(f"/predictions/{prediction_id}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def export_row(text: str, export_id: int) -> str:
    match = re.search(rf'<tr data-export="{export_id}".*?</tr>', text, re.S)
    assert match, f"export {export_id} is not listed"
    return match.group(0)


@SQLITE_ONLY
def test_the_page_shows_the_prediction_and_offers_every_registered_format(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    text = page(web, prediction_id)
    assert "fpn · version" in text and "/models/" in text  # links to the model version page
    assert f"/view?prediction={prediction_id}" in text  # opens in the viewer
    assert "Not exported yet." in text
    for name in export_platform.plugins.exporters.names():
        assert f'<option value="{name}"' in text
    assert 'data-dicom="true">dicom-seg<' in text
    assert '<option value="labelmap">' in text and '<option value="research">' in text
    (event,) = audit_events(export_platform, "prediction.view")
    assert event.actor == "clinician" and event.target == f"prediction:{prediction_id}"


@SQLITE_ONLY
def test_the_form_queues_an_export_job_then_lists_the_verified_export_and_downloads_it(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    response = web.post(
        f"/predictions/{prediction_id}/exports",
        data={"format": "dicom-seg", "seg_type": "labelmap"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/predictions/{prediction_id}"
    (job,) = export_jobs(export_platform)
    assert job.payload == {
        "prediction_id": prediction_id,
        "format": "dicom-seg",
        "options": {"seg_type": "labelmap"},
        "created_by": "clinician",
    }
    assert job.created_by == "clinician"
    queued = page(web, prediction_id)
    assert f"/jobs/{job.id}" in queued and 'id="export-jobs"' in queued

    run_queued_jobs(export_platform)
    (job,) = export_jobs(export_platform)
    assert job.state == JobState.SUCCEEDED, job.message
    export_id = exported(job)
    text = page(web, prediction_id)
    assert 'id="export-jobs"' not in text  # nothing is running any more
    row = export_row(text, export_id)
    assert "state-verified" in row and "labelmap" in row and "clinician" in row
    assert "✓" in row and "dciodvfy" in row and "✗" not in row

    download = web.get(f"/exports/{export_id}/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    ds = pydicom.dcmread(io.BytesIO(download.data))
    assert ds.Modality == "SEG"
    (event,) = audit_events(export_platform, "export.download")
    assert event.actor == "clinician" and event.detail["export_id"] == export_id
    assert [e.actor for e in audit_events(export_platform, "export")] == ["clinician"]


@SQLITE_ONLY
def test_a_folder_export_downloads_as_a_zip(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    response = web.post(f"/predictions/{prediction_id}/exports", data={"format": "slices"})
    assert response.status_code == 303
    run_queued_jobs(export_platform)
    (job,) = export_jobs(export_platform)
    download = web.get(f"/exports/{exported(job)}/download")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.data)).namelist()
    assert len(names) == 8 and all(n.endswith(".npy") for n in names)
    assert len({n.split("/")[0] for n in names}) == 1  # one folder inside


@SQLITE_ONLY
def test_a_failed_check_is_shown_with_its_reason_and_offers_no_download(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    web.post(f"/predictions/{prediction_id}/exports", data={"format": "flipped"})
    run_queued_jobs(export_platform)
    (job,) = export_jobs(export_platform)
    assert job.state == JobState.FAILED and "voxels differ" in job.message
    with export_platform.sessions() as session:
        (export,) = session.scalars(select(Export)).all()
        assert export.status == "failed" and export.path == ""
    row = export_row(page(web, prediction_id), export.id)
    assert "state-failed" in row and "✗" in row and "voxels differ" in row
    assert "Download" not in row
    assert web.get(f"/exports/{export.id}/download").status_code == 404
    assert audit_events(export_platform, "export.download") == []


@SQLITE_ONLY
def test_the_form_refuses_bad_requests_with_the_reason_and_queues_nothing(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    url = f"/predictions/{prediction_id}/exports"
    cases = {
        "unknown export format 'jpeg'": {"format": "jpeg"},
        "nifti exports are not DICOM": {"format": "nifti", "to_pacs": "research"},
        "no PACS called 'elsewhere'": {"format": "dicom-seg", "to_pacs": "elsewhere"},
    }
    for reason, form in cases.items():
        response = web.post(url, data=form, follow_redirects=True)
        assert reason in html.unescape(response.get_data(as_text=True)), reason
    assert export_jobs(export_platform) == []
    assert web.post("/predictions/999/exports", data={"format": "nifti"}).status_code == 404


@SQLITE_ONLY
def test_the_export_form_needs_the_csrf_token(
    export_platform: Platform, prediction_id: int
) -> None:
    client = create_app(export_platform, {"TESTING": True}).test_client()  # CSRF on
    log_in_as(client, export_platform, "clinician")
    url = f"/predictions/{prediction_id}/exports"
    assert client.post(url, data={"format": "nifti"}).status_code == 400
    assert export_jobs(export_platform) == []
    token = re.search(r'name="csrf_token" value="([^"]+)"', page(client, prediction_id))
    assert token
    response = client.post(url, data={"format": "nifti", "csrf_token": token.group(1)})
    assert response.status_code == 303
    assert len(export_jobs(export_platform)) == 1


@SQLITE_ONLY
def test_the_api_lists_exports_and_queues_one(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    url = f"/api/predictions/{prediction_id}/exports"
    assert web.get(url).get_json() == {"exports": []}
    response = web.post(
        url, json={"format": "dicom-seg", "to_pacs": "research", "with_images": True}
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    (job,) = export_jobs(export_platform)
    assert body["id"] == job.id and body["state"] == "queued"
    assert job.payload == {
        "prediction_id": prediction_id,
        "format": "dicom-seg",
        "options": {},
        "to_pacs": "research",
        "with_images": True,
        "created_by": "clinician",
    }

    web.post(url, json={"format": "nifti"})
    with export_platform.sessions.begin() as session:
        session.get(Job, job.id).state = JobState.CANCELLED  # type: ignore[union-attr]
    run_queued_jobs(export_platform)
    (listed,) = web.get(url).get_json()["exports"]
    assert listed["format"] == "nifti" and listed["status"] == "verified"
    assert listed["created_by"] == "clinician"
    assert listed["checks"] and all(c["passed"] is not False for c in listed["checks"])
    assert listed["download_url"] == f"/exports/{listed['id']}/download"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"format": "jpeg"}, "unknown export format 'jpeg'; available formats: "),
        ({"format": "nifti", "to_pacs": "research"}, "nifti exports are not DICOM"),
        ({"format": "dicom-seg", "to_pacs": "elsewhere"}, "no PACS called 'elsewhere'"),
        ({"format": "nifti", "options": ["x"]}, "options: Input should be a valid dictionary"),
        ({"format": "dicom-seg", "options": {"seg_type": "fuzzy"}}, "seg_type must be one of"),
        ({}, "format: Field required"),
    ],
)
@SQLITE_ONLY
def test_the_api_refuses_bad_requests_up_front(
    web: FlaskClient,
    export_platform: Platform,
    prediction_id: int,
    body: dict[str, Any],
    reason: str,
) -> None:
    response = web.post(f"/api/predictions/{prediction_id}/exports", json=body)
    assert response.status_code == 400
    assert reason in response.get_json()["detail"]
    assert export_jobs(export_platform) == []


def test_the_api_answers_404_for_an_unknown_prediction(app: Flask, web_platform: Platform) -> None:
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    assert client.get("/api/predictions/999/exports").status_code == 404
    assert client.post("/api/predictions/999/exports", json={"format": "x"}).status_code == 404


@SQLITE_ONLY
def test_a_nifti_download_carries_its_class_map(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    web.post(f"/predictions/{prediction_id}/exports", data={"format": "nifti"})
    run_queued_jobs(export_platform)
    (job,) = export_jobs(export_platform)
    download = web.get(f"/exports/{exported(job)}/download")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    names = sorted(archive.namelist())
    assert len(names) == 2 and names[0].endswith("nifti.json") and names[1].endswith(".nii.gz")
    class_map = json.loads(archive.read(names[0]))
    assert [c["name"] for c in class_map["classes"]][:1] == ["liver"]


@SQLITE_ONLY
def test_a_reviewer_s_correction_can_be_exported_instead_of_the_prediction(
    web: FlaskClient, export_platform: Platform, prediction_id: int
) -> None:
    url = f"/predictions/{prediction_id}/exports"
    assert 'id="export-corrected"' not in page(web, prediction_id)  # nothing corrected yet
    response = web.post(url, data={"format": "nifti", "corrected": "1"}, follow_redirects=True)
    assert "has no correction to export" in html.unescape(response.get_data(as_text=True))
    assert export_jobs(export_platform) == []
    with export_platform.sessions.begin() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        session.add(
            LabelSet(
                series_id=prediction.series_id,
                source="review",
                version=7,
                author="carol",
                classes=prediction.model_version.config["classes"],
                path=prediction.mask_path,
                prediction_id=prediction_id,
            )
        )
    assert "label version 7" in page(web, prediction_id)
    web.post(url, data={"format": "nifti", "corrected": "1"})
    (job,) = export_jobs(export_platform)
    assert job.payload["corrected"] is True
    run_queued_jobs(export_platform)
    with export_platform.sessions() as session:
        row = session.scalars(select(Export)).one()
        assert row.status == "verified" and row.options["correction"] == "label version 7 by carol"
