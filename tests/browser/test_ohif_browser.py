"""OHIF itself, in chromium: the prebuilt viewer shows radseg's SEG with its segments by name.

The prebuilt ``@ohif/app`` viewer (``make ohif`` unpacks its npm tarball's ``dist/`` into
tools/ohif/dist; configured by tools/ohif/app-config.js, no build) is served by a small loopback
server that also relays ``/dicom-web`` to the test Orthanc (same origin, so no CORS). The CT
series and radseg's SEG and RTSTRUCT of an ingested study's prediction go into Orthanc with
``radseg export --to-pacs`` (the SEG ``--with-images``). Chromium (Debian's, through
Playwright) follows the "Open in OHIF" link of radseg's study page (``ohif_url`` set to this
OHIF: ``/viewer?StudyInstanceUIDs=<the study>``), loads the SEG, and the test asserts that
the study browser shows the CT, SEG and RTSTRUCT series, that OHIF's segmentation panel lists
every class by name, and that no error is shown or logged.

OHIF renders with WebGL. Headless chromium (Debian's 156) gives it a WebGL context on
SwiftShader, its software renderer: OHIF logs "software rasterizer detected (ANGLE ...
SwiftShader driver)". Chromium 156 falls back to SwiftShader by itself, even under the other
browser tests' ``--disable-gpu``; this test asks for it by name (``--use-angle=swiftshader
--enable-unsafe-swiftshader``), so it does not rest on that fallback, and checks that OHIF
rendered on WebGL ("CornerstoneRender: using GPU rendering"), not its CPU path.
The screenshot is kept in ``$RADSEG_TEST_ARTEFACTS`` (default ``test-artefacts/``) as
``ohif-seg.png``.
"""

from __future__ import annotations

import html
import mimetypes
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from radseg.cli import main
from radseg.core import Platform, create_platform
from radseg.db.models import Prediction, Role, User
from radseg.settings import Settings
from radseg.web import create_app
from tests.browser.conftest import CHROMIUM
from tests.orthanc import OrthancServer
from tests.support import SQLITE_ONLY, ingested_prediction, require
from tests.web_support import log_in_as

REPO = Path(__file__).resolve().parents[2]
OHIF = REPO / "tools" / "ohif"
ARTEFACTS = Path(os.environ.get("RADSEG_TEST_ARTEFACTS", REPO / "test-artefacts"))
#: software WebGL for OHIF's viewports in headless chromium
WEBGL_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--no-first-run",
    "--disable-background-networking",
]
#: what OHIF shows when something fails (its error boundary, a failed load notification)
ERROR_TEXTS = ("Something went wrong", "Error", "Failed to load", "failed")


@pytest.fixture
def ohif_site(orthanc: OrthancServer) -> Iterator[str]:
    """OHIF's dist/ with radseg's app-config.js, and /dicom-web relayed to ``orthanc``."""
    dist = OHIF / "dist"
    require((dist / "index.html").exists(), "the OHIF viewer is not unpacked; run `make ohif`")
    config = (OHIF / "app-config.js").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.startswith("/dicom-web/"):
                accept = {"Accept": self.headers["Accept"]} if self.headers["Accept"] else {}
                answer = requests.get(orthanc.url + self.path, headers=accept, timeout=60)
                status, body = answer.status_code, answer.content
                kind = answer.headers.get("Content-Type", "application/octet-stream")
            else:
                name = self.path.split("?", 1)[0].lstrip("/")
                file = (dist / name).resolve()
                status = 200
                if name == "app-config.js":
                    body, kind = config, "application/javascript"
                elif name and file.is_relative_to(dist) and file.is_file():
                    body = file.read_bytes()
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    if file.suffix == ".wasm":
                        kind = "application/wasm"
                else:  # the single-page app's own routes (/viewer?...)
                    body, kind = (dist / "index.html").read_bytes(), "text/html"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="ohif-site", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def send_with_the_cli(platform: Platform, prediction_id: int, orthanc: OrthancServer) -> None:
    """``radseg export --to-pacs`` the prediction as a SEG (with its CT) and as an RTSTRUCT."""
    (platform.settings.home / "radseg.toml").write_text(
        f'[pacs.orthanc]\nurl = "{orthanc.dicomweb_url}"\nretries = 0\n'
    )
    env = {"RADSEG_DATABASE_URL": platform.settings.database_url_resolved, "RADSEG_CONFIG": ""}
    for fmt, extra in (("dicom-seg", ["--with-images"]), ("rtstruct", [])):
        result = CliRunner().invoke(
            main,
            [
                "--home",
                str(platform.settings.home),
                "export",
                "--prediction",
                str(prediction_id),
                "--format",
                fmt,
                "--to-pacs",
                "orthanc",
                *extra,
            ],
            env=env,
        )
        assert result.exit_code == 0, result.output


def ohif_link_on_the_study_page(platform: Platform, study_id: int, ohif_site: str) -> str:
    """The "Open in OHIF" link radseg's study page shows with ``ohif_url`` set to ``ohif_site``."""
    settings = Settings.model_validate({**platform.settings.model_dump(), "ohif_url": ohif_site})
    site = create_platform(settings, autoload=False)
    try:
        with site.sessions.begin() as session:
            session.add(User(username="ohif-reader", password_hash="-", role=Role.CLINICIAN))
        client = create_app(site, {"TESTING": True}).test_client()
        log_in_as(client, site, "ohif-reader")
        page = client.get(f"/studies/{study_id}")
        assert page.status_code == 200
        links = re.findall(r'id="open-in-ohif" href="([^"]+)"', page.get_data(as_text=True))
    finally:
        site.close()
    assert len(links) == 1, links
    return html.unescape(links[0])


@SQLITE_ONLY
def test_ohif_lists_radsegs_segments_by_name(
    platform: Platform, tmp_path: Path, orthanc: OrthancServer, ohif_site: str
) -> None:
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    orthanc.clear()
    prediction_id = ingested_prediction(platform, tmp_path)
    send_with_the_cli(platform, prediction_id, orthanc)
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        study_uid = prediction.series.study.study_instance_uid
        study_id = prediction.series.study.id
        classes = sorted(prediction.model_version.config["classes"], key=lambda c: c["id"])
    names = [c["name"] for c in classes if c["id"]]
    modalities = sorted(
        s["00080060"]["Value"][0] for s in orthanc.get(f"/dicom-web/studies/{study_uid}/series")
    )
    assert modalities == ["CT", "RTSTRUCT", "SEG"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # OHIF reports a SEG it cannot place on the console, e.g. "ReferencedSeriesSequence
            # is missing for the SEG" (and then lists no segment)
            console: list[tuple[str, str]] = []
            page.on("console", lambda message: console.append((message.type, message.text)))
            # OHIF's first-visit tour (shepherd.js) would cover the page: mark it as seen
            page.add_init_script(
                "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"
            )
            page.goto(ohif_link_on_the_study_page(platform, study_id, ohif_site))
            seg_thumbnail = page.get_by_text("radseg prediction").first
            seg_thumbnail.wait_for(timeout=90_000)
            # the segmentation panel (collapsed at first), then the SEG into the viewport
            page.locator('[data-cy="panelSegmentation-btn"]').click()
            seg_thumbnail.dblclick()
            # OHIF previews a SEG and asks before it adds it to the viewport: load it
            question = page.get_by_text("Do you want to open this Segmentation?")
            question.wait_for(timeout=90_000)
            page.get_by_role("button", name="Yes").click()
            question.wait_for(state="hidden", timeout=30_000)
            page.get_by_text(names[-1], exact=True).first.wait_for(timeout=90_000)
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "ohif-seg.png"))
            body = page.inner_text("body")
        finally:
            browser.close()
    lines = [line.strip() for line in body.splitlines()]
    # the study browser shows the CT, the SEG and the RTSTRUCT radseg sent
    browser_part = lines[: lines.index("Segmentations")]
    assert {"CT", "SEG", "RTSTRUCT"} <= set(browser_part), browser_part
    listed = lines[lines.index("Segmentations") :]
    for name in names:
        assert name in listed, f"OHIF's segmentation panel does not list {name!r}: {listed}"
    assert not [t for t in ERROR_TEXTS if t in body], body
    errors += [text for kind, text in console if kind == "error"]
    assert errors == [], errors
    assert any("CornerstoneRender: using GPU rendering" in text for _, text in console), console
