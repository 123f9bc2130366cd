"""The slice viewer in a real browser: Debian's chromium driven by Playwright.

The app runs in a thread on a free local port with a fresh RADSEG_HOME holding one synthetic CT
series (8 x 64 x 64, all 0 HU) and a prediction whose class 1 is a square on slices 6 and 7. The
assertions read the screenshot's pixels: the overlay colour must appear where the mask is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from radseg.contracts import Geometry
from radseg.db.models import (
    Job,
    JobState,
    Role,
)
from radseg.settings import load_settings
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import NODULE, add_user, browser_page, served, stage_pixel, submit_login

pytestmark = pytest.mark.browser

PASSWORD = "viewer password"
SHAPE = (8, 64, 64)  # (z, y, x)
MASK_SLICES = (6, 7)
MASK_ROWS = slice(16, 32)
MASK_COLS = slice(36, 52)
RED = (255, 0, 0)
#: 0 HU through the soft-tissue window (40/400) and the lung window (-600/1500)
SOFT_TISSUE_GREY = round(160 / 400 * 255)
LUNG_GREY = round(1350 / 1500 * 255)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    (tmp_path / "home").mkdir()
    settings = load_settings({"home": tmp_path / "home"}, environ={})
    platform = migrated_platform(settings, autoload=False)

    geometry = Geometry((64, 64, 8), (0.7, 0.7, 3.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for z in MASK_SLICES:
        mask[z, MASK_ROWS, MASK_COLS] = 1
    with platform.sessions.begin() as session:
        add_user(session, "dr.who", PASSWORD, Role.CLINICIAN)
        add_series_with_prediction(
            session,
            platform,
            hu=np.zeros(SHAPE, np.float32),
            mask=mask,
            geometry=geometry,
            classes=NODULE,
            description="Chest CT",
        )

    with served(platform) as url:
        yield {"url": url, "platform": platform}


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    with browser_page(browser, 1280, 800) as page:
        yield page


def wait_for_images(page: Any, z: int, query: str = "") -> None:
    """Until the slice and overlay of slice ``z`` (with ``query`` in the URL) are decoded."""
    page.wait_for_function(
        """([z, query]) => {
            const loaded = (img, part) => img && img.src.includes(part) && img.complete
                && img.naturalWidth > 0;
            return loaded(document.getElementById('slice-img'), `/slice/${z}.png${query}`)
                && loaded(document.getElementById('overlay-img'), `/overlay/${z}.png`);
        }""",
        arg=[z, query],
    )


def assert_close(actual: np.ndarray, expected: tuple[float, float, float], tol: float = 8) -> None:
    assert np.abs(actual - np.array(expected)).max() <= tol, (actual.tolist(), expected)


def test_viewer_scrolls_overlays_and_windows(page: Any, server: dict[str, Any]) -> None:
    base = server["url"]
    page.goto(f"{base}/studies/1")
    assert "/login" in page.url  # not logged in yet
    submit_login(page, "dr.who", PASSWORD)
    page.wait_for_url(f"{base}/studies/1")
    page.click("a.button:text-is('View')")
    page.wait_for_url("**/series/1/view")

    start = SHAPE[0] // 2
    wait_for_images(page, start)
    assert page.text_content("#slice-label") == f"{start + 1} / {SHAPE[0]}"
    mask_centre = ((MASK_ROWS.start + MASK_ROWS.stop) / 2, (MASK_COLS.start + MASK_COLS.stop) / 2)
    # no mask here
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), (SOFT_TISSUE_GREY,) * 3)

    page.locator("#stage").focus()
    page.keyboard.press("ArrowUp")
    page.locator("#stage").hover()
    page.mouse.wheel(0, 120)
    z = start + 2
    assert z in MASK_SLICES
    wait_for_images(page, z)
    assert page.text_content("#slice-label") == f"{z + 1} / {SHAPE[0]}"
    assert page.input_value("#slice") == str(z)

    # the overlay's red at 50 % opacity over the grey, only where the mask is
    blended = (
        0.5 * RED[0] + 0.5 * SOFT_TISSUE_GREY,
        0.5 * SOFT_TISSUE_GREY,
        0.5 * SOFT_TISSUE_GREY,
    )
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), blended)
    assert_close(stage_pixel(page, 4, 4, shape=SHAPE), (SOFT_TISSUE_GREY,) * 3)
    assert page.locator(".legend").inner_text().strip() == "1 · nodule"

    page.eval_on_selector(
        "#opacity", "el => { el.value = '100'; el.dispatchEvent(new Event('input')); }"
    )
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), RED)
    page.uncheck(".class-toggle[data-class-id='1']")  # per-class visibility
    wait_for_images(page, z)
    page.wait_for_function("() => document.getElementById('overlay-img').src.includes('hide=1')")
    wait_for_images(page, z)
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), (SOFT_TISSUE_GREY,) * 3)
    page.check(".class-toggle[data-class-id='1']")
    page.wait_for_function("() => !document.getElementById('overlay-img').src.includes('hide')")
    wait_for_images(page, z)
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), RED)
    page.uncheck("#show-overlay")
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), (SOFT_TISSUE_GREY,) * 3)
    page.check("#show-overlay")

    before = page.get_attribute("#slice-img", "src")
    page.click("button.preset:has-text('Lung')")
    wait_for_images(page, z, "?wl=-600&ww=1500")
    assert page.get_attribute("#slice-img", "src") != before
    assert page.input_value("#wl") == "-600" and page.input_value("#ww") == "1500"
    assert_close(stage_pixel(page, 4, 4, shape=SHAPE), (LUNG_GREY,) * 3)
    # the overlay does not depend on the window
    assert_close(stage_pixel(page, *mask_centre, shape=SHAPE), RED)


def test_jobs_page_follows_progress_without_reloading(page: Any, server: dict[str, Any]) -> None:
    base, platform = server["url"], server["platform"]
    with platform.sessions.begin() as session:
        job = Job(kind="train", state=JobState.RUNNING, progress=0.1, message="iteration 10")
        session.add(job)
    page.goto(f"{base}/jobs")
    submit_login(page, "dr.who", PASSWORD)
    page.wait_for_url(f"{base}/jobs")
    row = page.locator(f"tr[data-id='{job.id}']")
    assert "iteration 10" in row.inner_text()
    page.evaluate("window.notReloaded = true")

    with platform.sessions.begin() as session:
        running = session.get(Job, job.id)
        assert running is not None
        running.progress, running.message = 0.75, "iteration 75"
    page.wait_for_function(
        "id => document.querySelector(`tr[data-id='${id}'] .message`).textContent"
        " === 'iteration 75'",
        arg=job.id,
    )
    assert page.locator(f"tr[data-id='{job.id}'] progress").evaluate("el => el.value") == 0.75
    assert "75%" in page.locator(f"tr[data-id='{job.id}']").inner_text()
    assert page.evaluate("window.notReloaded") is True
