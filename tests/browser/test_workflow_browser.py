"""Each role's work in a real browser (Debian's chromium through Playwright).

The app runs in a thread (CSRF on) over a fresh RADSEG_HOME; a real ``radseg worker --burst``
process runs the ingest job. Where the point is what the user sees, the assertions read the
screenshot's pixels: the overlay's colour must appear where the mask (or the brush) is, and
disappear when the class is hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from radseg.contracts import Geometry
from radseg.db.models import Job, JobState, LabelSet, Review, ReviewStatus, Role, User
from radseg.imaging.synthetic import write_synthetic_ct
from radseg.imaging.volumes import read_volume
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, ingested_prediction, migrated_platform
from tests.web_support import NODULE, log_in_at, served, stage_pixel, wait_for_overlay

pytestmark = pytest.mark.browser

PASSWORD = "browser password"
SHAPE = (6, 48, 48)  # (z, y, x)
MASK_SLICE = 4
MASK_ROWS = slice(8, 20)
MASK_COLS = slice(26, 40)
RED = (255, 0, 0)
GREY = round(160 / 400 * 255)  # 0 HU through the default 40/400 window


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    home.mkdir()
    settings = load_settings({"home": home}, environ={})
    platform = migrated_platform(settings, autoload=False)
    mask = np.zeros(SHAPE, np.uint8)
    mask[MASK_SLICE, MASK_ROWS, MASK_COLS] = 1
    geometry = Geometry((48, 48, 6), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    digest = generate_password_hash(PASSWORD, method="scrypt")
    with platform.sessions.begin() as session:
        for role in Role:
            session.add(User(username=f"the-{role.value}", password_hash=digest, role=role))
        prediction = add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=mask,
            geometry=geometry,
            classes=NODULE,
            description="Chest CT",
        )
        ids = {"prediction": prediction.id, "series": prediction.series_id}
    with served(platform) as url:
        yield {
            "url": url,
            "platform": platform,
            "home": home,
            **ids,
        }


@pytest.fixture
def export_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The installed plugins and a real ingested CT whose labels are a prediction."""
    home = tmp_path / "home"
    home.mkdir()
    settings = load_settings({"home": home}, environ={})
    platform = migrated_platform(settings)
    prediction_id = ingested_prediction(platform, tmp_path)
    digest = generate_password_hash(PASSWORD, method="scrypt")
    with platform.sessions.begin() as session:
        session.add(User(username="the-clinician", password_hash=digest, role=Role.CLINICIAN))
    with served(platform) as url:
        yield {
            "url": url,
            "home": home,
            "prediction": prediction_id,
        }


def run_worker_burst(home: Path) -> None:
    """A real ``radseg worker --burst`` process drains the queue."""
    env = {**os.environ, "RADSEG_HOME": str(home)}
    worker = subprocess.run(
        [str(Path(sys.executable).with_name("radseg")), "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    return context.new_page()


def log_in(page: Any, base: str, role: Role, path: str = "/studies") -> None:
    log_in_at(page, base + path, f"the-{role.value}", PASSWORD)


def is_close(actual: np.ndarray, expected: tuple[float, ...], tol: float = 10) -> bool:
    return bool(np.abs(actual - np.array(expected)).max() <= tol)


def test_each_role_sees_its_own_pages(browser: Any, server: dict[str, Any]) -> None:
    base = server["url"]
    expected = {
        Role.ADMIN: {
            "Studies",
            "Review",
            "Readings",
            "Worklist",
            "Research",
            "Models",
            "Jobs",
            "Plugins",
            "Users",
            "Audit",
        },
        Role.RESEARCHER: {"Studies", "Review", "Worklist", "Research", "Models", "Jobs"},
        Role.CLINICIAN: {"Studies", "Review", "Readings", "Models", "Jobs"},
    }
    for role, links in expected.items():
        page = new_page(browser)
        log_in(page, base, role)
        nav = {t.strip() for t in page.locator(".topbar nav a").all_inner_texts()} - {"Account"}
        assert nav == links, role
        response = page.goto(f"{base}/admin/users")
        assert response.status == (200 if role == Role.ADMIN else 403), role
        page.context.close()


def test_a_researcher_uploads_a_study_and_watches_the_ingest_job_finish(
    browser: Any, server: dict[str, Any], tmp_path: Path
) -> None:
    write_synthetic_ct(tmp_path / "study", shape=(3, 16, 16), seed=3)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((tmp_path / "study" / "dicom").iterdir()):
            zf.write(path, f"study/{path.name}")
    base = server["url"]
    page = new_page(browser)
    log_in(page, base, Role.RESEARCHER, "/upload")
    page.set_input_files("#files", str(archive))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url("**/jobs/*")
    assert page.text_content("#job-state") == "queued"

    # a real worker process drains the queue (the ingest runs with the installed plugins)
    env = {**os.environ, "RADSEG_HOME": str(server["home"])}
    worker = subprocess.run(
        [str(Path(sys.executable).with_name("radseg")), "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    page.wait_for_function("() => document.getElementById('job-state').textContent === 'succeeded'")
    assert page.eval_on_selector("#job-progress", "el => el.value") == 1
    assert '"added"' in page.text_content("#report-body")
    with server["platform"].sessions() as session:
        (job,) = session.scalars(select(Job).where(Job.kind == "ingest")).all()
        assert job.state == JobState.SUCCEEDED and len(job.result["added"]) == 1
    page.context.close()


def test_a_clinician_reviews_a_prediction_and_corrects_it_with_the_brush(
    browser: Any, server: dict[str, Any]
) -> None:
    base, platform = server["url"], server["platform"]
    page = new_page(browser)
    log_in(page, base, Role.CLINICIAN, "/review")
    page.click(f"tr[data-prediction='{server['prediction']}'] a.button")
    page.wait_for_url("**/view?prediction=*")
    mid = SHAPE[0] // 2
    wait_for_overlay(page, f"/overlay/{mid}.png")
    centre = ((MASK_ROWS.start + MASK_ROWS.stop) / 2, (MASK_COLS.start + MASK_COLS.stop) / 2)
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), (GREY,) * 3)  # no mask on this slice

    # scroll with the wheel to the masked slice: the red appears where the mask is
    page.locator("#stage").hover()
    for _ in range(MASK_SLICE - mid):
        page.mouse.wheel(0, 120)
    wait_for_overlay(page, f"/overlay/{MASK_SLICE}.png")
    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), RED)
    assert is_close(stage_pixel(page, 2, 2, shape=SHAPE), (GREY,) * 3)

    # change the window: the slice gets darker, the overlay stays
    page.click("button.preset:has-text('Bone')")
    page.wait_for_function("() => document.getElementById('slice-img').src.includes('ww=')")
    wait_for_overlay(page, f"/overlay/{MASK_SLICE}.png")
    page.wait_for_function("() => document.getElementById('slice-img').complete")
    assert stage_pixel(page, 2, 2, shape=SHAPE)[0] < GREY - 20
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), RED)

    # hide the class: the red disappears; show it again
    page.uncheck(".class-toggle[data-class-id='1']")
    wait_for_overlay(page, "hide=1")
    assert stage_pixel(page, *centre, shape=SHAPE)[0] < 200
    page.check(".class-toggle[data-class-id='1']")
    page.wait_for_function("() => !document.getElementById('overlay-img').src.includes('hide')")
    wait_for_overlay(page, f"/overlay/{MASK_SLICE}.png")
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), RED)

    # pin a comment to a point and accept
    box = page.locator("#stage").bounding_box()
    page.check("input[name=tool][value=pin]")
    page.mouse.click(box["x"] + box["width"] * 0.85, box["y"] + box["height"] * 0.85)
    assert "Pinned to slice" in page.text_content("#pin-label")
    page.fill("#review-comment", "clean margin")
    page.click("button.decision-accepted")
    page.wait_for_selector("#reviews li[data-review]")
    assert "clean margin" in page.text_content("#reviews")
    with platform.sessions() as session:
        (review,) = session.scalars(select(Review)).all()
        assert review.status == ReviewStatus.ACCEPTED and review.slice_index == MASK_SLICE
        assert abs(review.point_x - 0.85 * SHAPE[2]) < 1.5
        assert abs(review.point_y - 0.85 * SHAPE[1]) < 1.5

    # brush a stroke where there was no mask, see it, save it as a new label version
    wait_for_overlay(page, f"/overlay/{MASK_SLICE}.png")
    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    row, col0, col1 = 34, 8, 24
    assert is_close(stage_pixel(page, row, 16, shape=SHAPE), (GREY,) * 3)
    page.check("input[name=tool][value=brush]")
    box = page.locator("#stage").bounding_box()  # the page was reloaded after the decision
    page.wait_for_function(
        f"() => document.getElementById('edit-canvas').dataset.z === '{MASK_SLICE}'"
    )
    to_px = lambda r, c: (  # noqa: E731
        box["x"] + (c + 0.5) / SHAPE[2] * box["width"],
        box["y"] + (r + 0.5) / SHAPE[1] * box["height"],
    )
    page.mouse.move(*to_px(row, col0))
    page.mouse.down()
    for c in range(col0, col1 + 1, 2):
        page.mouse.move(*to_px(row, c))
    page.mouse.up()
    assert page.text_content("#stroke-count") == "1"
    # the preview on the canvas
    assert is_close(stage_pixel(page, row, 16, shape=SHAPE), RED, tol=40)
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), RED)  # the prediction is still there
    page.click("#save-correction")
    page.wait_for_url("**show=labels*")
    wait_for_overlay(page, "/label-sets/")
    page.wait_for_function(
        f"() => document.getElementById('slice-label').textContent.startsWith('{MASK_SLICE + 1} ')"
    )
    wait_for_overlay(page, f"/overlay/{MASK_SLICE}.png")
    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    assert is_close(stage_pixel(page, row, 16, shape=SHAPE), RED)  # now rendered by the server
    assert is_close(stage_pixel(page, *centre, shape=SHAPE), RED)
    assert is_close(stage_pixel(page, 2, 2, shape=SHAPE), (GREY,) * 3)
    with platform.sessions() as session:
        (label_set,) = session.scalars(select(LabelSet)).all()
        assert label_set.author == "the-clinician"
        assert label_set.prediction_id == server["prediction"]
        labels, _ = read_volume(platform.resolve(label_set.path))
    assert labels[MASK_SLICE, row, col0:col1].all()
    assert labels[MASK_SLICE, MASK_ROWS, MASK_COLS].all()
    assert labels[MASK_SLICE].sum() > (MASK_ROWS.stop - MASK_ROWS.start) * 14
    page.context.close()


def test_a_clinician_exports_a_prediction_as_dicom_seg_and_downloads_it(
    browser: Any, export_server: dict[str, Any]
) -> None:
    base, prediction_id = export_server["url"], export_server["prediction"]
    page = new_page(browser)
    log_in(page, base, Role.CLINICIAN, f"/predictions/{prediction_id}")
    page.select_option("#export-format", "dicom-seg")
    assert page.is_visible("#export-seg-type")
    page.click("#export-submit")
    page.wait_for_selector("#export-jobs [data-role=state]")
    assert "is queued" in page.text_content(".flash")

    run_worker_burst(export_server["home"])
    # the page follows the job and reloads when it ends
    row = page.wait_for_selector("tr[data-export][data-status=verified]", timeout=30_000)
    checks = row.inner_text()
    assert "✓ dciodvfy" in checks and "✗" not in checks
    with page.expect_download() as info:
        row.query_selector("a.download").click()
    download = info.value
    assert download.suggested_filename.endswith(".dcm")
    assert pydicom.dcmread(download.path()).Modality == "SEG"
    page.context.close()
