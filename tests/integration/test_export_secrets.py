"""PACS credentials reach the job that exports, and nothing else.

An export is queued through the JSON API, run by a real worker in a child process (as
``radseg worker`` does) and sent to a real Orthanc that requires a password, or, for a bearer
token, to a loopback proxy in front of Orthanc that checks the token (``tests/orthanc.py``:
Orthanc itself only checks basic authentication). Afterwards the secret must not be anywhere a
user or an operator can read: the job's payload, result, message and events, any other row,
any file under ``RADSEG_HOME`` (job logs included), and what the worker and the job printed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Export, JobState, Role
from radseg.jobs.worker import Worker
from radseg.settings import Settings
from radseg.users import create_token, create_user
from radseg.web import create_app
from tests.integration.jobs_support import job
from tests.orthanc import OrthancServer, bearer_proxy, orthanc_available, orthanc_server
from tests.support import (
    SQLITE_ONLY,
    database_text,
    ingested_prediction,
    migrated_platform,
    require,
)

USER = "radseg"
#: fresh per run, so that finding one anywhere can only mean it leaked
PASSWORD = f"pw-{secrets.token_hex(12)}"
WRONG_PASSWORD = f"wrong-{secrets.token_hex(12)}"
TOKEN = f"tk-{secrets.token_hex(16)}"
WRONG_TOKEN = f"nope-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def guarded_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real Orthanc that answers only to ``USER``/``PASSWORD`` (HTTP basic)."""
    problem = orthanc_available()
    require(problem is None, problem or "")
    with orthanc_server(tmp_path_factory.mktemp("orthanc-auth"), auth=(USER, PASSWORD)) as pacs:
        yield pacs


def _platform_with_pacs(settings: Settings, pacs: dict[str, dict[str, Any]]) -> Platform:
    return migrated_platform(Settings.model_validate({**settings.model_dump(), "pacs": pacs}))


def _queue_exports_via_api(platform: Platform, prediction_id: int, *to_pacs: str) -> list[int]:
    """``POST /api/predictions/<id>/exports`` with an API token, once per destination."""
    with platform.sessions.begin() as session:
        user = create_user(session, "rita", "a-long-password", Role.RESEARCHER)
        _, api_token = create_token(session, user, "script")
    client = create_app(platform, {"TESTING": True}).test_client()
    job_ids = []
    for name in to_pacs:
        response = client.post(
            f"/api/predictions/{prediction_id}/exports",
            json={"format": "dicom-seg", "to_pacs": name, "with_images": True},
            headers={"Authorization": f"Bearer {api_token}"},
        )
        assert response.status_code == 202, response.get_data(as_text=True)
        job_ids.append(int(response.get_json()["id"]))
    return job_ids


def _run_worker(platform: Platform) -> None:
    """``radseg worker --burst``: every job in its own spawned child process."""
    Worker(platform, burst=True, listen=False).run()


def _assert_nowhere(
    platform: Platform,
    secret_values: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = database_text(platform)
    assert "\njob: " in database and "\njob_event: " in database  # the dump holds the jobs
    files = [p for p in Path(platform.settings.home).rglob("*") if p.is_file()]
    assert any(p.name.startswith("job-") and p.suffix == ".log" for p in files)
    printed = capfd.readouterr()  # the child's stderr log handler writes here too
    places = {
        "the database": database,
        "the worker's log records": caplog.text,
        "stdout": printed.out,
        "stderr": printed.err,
        "repr(settings)": repr(platform.settings),
        **{str(p): p.read_bytes().decode("latin-1") for p in files},
    }
    for secret in secret_values:
        leaks = [where for where, text in places.items() if secret in text]
        assert not leaks, f"a credential leaked into {leaks}"


def test_an_export_job_sends_the_real_password_and_leaks_it_nowhere(
    settings: Settings,
    guarded_orthanc: OrthancServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    guarded_orthanc.clear()
    url = guarded_orthanc.dicomweb_url
    platform = _platform_with_pacs(
        settings,
        {
            "research": {"url": url, "username": USER, "password": PASSWORD, "retries": 0},
            "wrong": {"url": url, "username": USER, "password": WRONG_PASSWORD, "retries": 0},
        },
    )
    try:
        prediction_id = ingested_prediction(platform, tmp_path)
        good, bad = _queue_exports_via_api(platform, prediction_id, "research", "wrong")
        assert "password" not in str(job(platform, good).payload)
        _run_worker(platform)

        sent = job(platform, good)
        assert sent.state == JobState.SUCCEEDED, sent.message
        with platform.sessions() as session:
            export = session.get(Export, int(sent.result["export_id"]))  # type: ignore[index]
            assert export is not None and export.status == "sent", export and export.message
            study_uid = export.remote["instances"][0]["study"]  # type: ignore[index]
        series = guarded_orthanc.get(f"/dicom-web/studies/{study_uid}/series")
        assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "SEG"]

        refused = job(platform, bad)
        assert refused.state == JobState.FAILED and refused.attempts == 1
        assert "PACS 'wrong'" in refused.message and "HTTP 401" in refused.message
        assert "check the credentials in [pacs.wrong]" in refused.message  # where to fix it

        _assert_nowhere(platform, [PASSWORD, WRONG_PASSWORD], capfd, caplog)
    finally:
        platform.close()


@SQLITE_ONLY
def test_an_export_job_sends_the_real_bearer_token_and_leaks_it_nowhere(
    settings: Settings,
    guarded_orthanc: OrthancServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    guarded_orthanc.clear()
    with bearer_proxy(guarded_orthanc, TOKEN) as proxy:
        url = proxy.dicomweb_url
        platform = _platform_with_pacs(
            settings,
            {
                "research": {"url": url, "token": TOKEN, "retries": 0},
                "wrong": {"url": url, "token": WRONG_TOKEN, "retries": 0},
            },
        )
        try:
            prediction_id = ingested_prediction(platform, tmp_path)
            good, bad = _queue_exports_via_api(platform, prediction_id, "research", "wrong")
            _run_worker(platform)

            sent = job(platform, good)
            assert sent.state == JobState.SUCCEEDED, sent.message
            with platform.sessions() as session:
                export = session.scalars(select(Export).where(Export.destination == "research"))
                assert export.one().status == "sent"
            # store (images, then the SEG), search, read back: all through the token check
            assert proxy.accepted >= 3 and set(proxy.schemes) == {"Bearer"}
            refused = job(platform, bad)
            assert refused.state == JobState.FAILED
            assert "HTTP 401" in refused.message and "[pacs.wrong]" in refused.message
            assert proxy.refused >= 1

            _assert_nowhere(platform, [TOKEN, WRONG_TOKEN], capfd, caplog)
        finally:
            platform.close()
