"""``ohif_url``: study and prediction pages offer "Open in OHIF" at the study's UIDs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from radseg.core import Platform
from radseg.db.models import Study
from radseg.errors import RadsegError
from radseg.settings import Settings, load_settings
from tests.support import SQLITE_ONLY
from tests.web_support import log_in_as

pytestmark = SQLITE_ONLY  # a setting and two templates: nothing the database could change

OHIF = "https://ohif.example.org/viewer-root"


@pytest.fixture(params=[OHIF + "/", None], ids=["ohif", "no-ohif"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    values = {"home": tmp_path / "home", "database_url": database_url}
    if request.param:
        values["ohif_url"] = request.param
    return load_settings(values, environ={})


def ohif_links(html: str) -> list[str]:

    return re.findall(
        r'<a class="button" id="open-in-ohif" href="([^"]+)"[^>]*>Open in OHIF</a>', html
    )


def test_study_and_prediction_pages_link_the_study_in_ohif(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int], settings: Settings
) -> None:
    log_in_as(client, web_platform, "clinician")
    with web_platform.sessions() as session:
        uid = session.get(Study, seeded["study"]).study_instance_uid
    pages = [f"/studies/{seeded['study']}", f"/predictions/{seeded['prediction']}"]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200
        links = ohif_links(response.get_data(as_text=True))
        if settings.ohif_url is None:
            assert links == [] and "Open in OHIF" not in response.get_data(as_text=True)
            continue
        (link,) = links
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == OHIF + "/viewer"
        assert parse_qs(parts.query) == {"StudyInstanceUIDs": [uid]}


@pytest.mark.parametrize("settings", [None], indirect=True)
def test_the_url_comes_from_the_environment_and_is_encoded(settings: Settings) -> None:
    from_env = load_settings(environ={"RADSEG_OHIF_URL": "http://127.0.0.1:3000"})
    assert from_env.ohif_url == "http://127.0.0.1:3000"
    assert from_env.ohif_viewer_url("1.2.3&x=<y>") == (
        "http://127.0.0.1:3000/viewer?StudyInstanceUIDs=1.2.3%26x%3D%3Cy%3E"
    )
    assert settings.ohif_viewer_url("1.2.3") is None
    assert load_settings({"ohif_url": "  "}, environ={}).ohif_url is None


@pytest.mark.parametrize("settings", [None], indirect=True)
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "http:// or https://"),
        ("ftp://ohif.example.org", "http:// or https://"),
        ("https://", "with a host"),
        ("https://user:secret@ohif.example.org", "credentials"),
        ("https://ohif.example.org/?StudyInstanceUIDs=1", "without ?query"),
        ("https://ohif.example.org/#x", "without ?query"),
    ],
)
def test_a_url_that_is_not_a_viewer_root_is_refused(
    settings: Settings, url: str, reason: str
) -> None:
    with pytest.raises((RadsegError, ValueError)) as refused:
        load_settings({"ohif_url": url}, environ={})
    assert reason in str(refused.value)
    assert "secret" not in str(refused.value)
